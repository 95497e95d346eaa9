"""Embedding throughput and memory, measured in one run.

Prints:
  1. embed through xarray/dask ÷ bare model forward on the same windows (target ≥ 0.85);
  2. embed_to_zarr on a 2-worker LocalCluster ÷ 1 worker (target ≥ 1.6);
  3. peak memory of embed_to_zarr for a cube 1× vs 8× larger (target ≤ 1.3× growth);
  4. with CUDA: windows/s of the model in bf16 and the share of time the GPU is busy.

Usage: python benchmarks/embed.py [--model csmoe_p16] [--windows 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import torch
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

import xcsmoe  # noqa: F401  (registers ds.csmoe)
from xcsmoe.embedding.batch import embed_to_zarr
from xcsmoe.embedding.runtime import build_model, cached_model, model_spec
from xcsmoe.sensors import S2


def lazy_cube(height: int, width: int, *, chunk: int, seed: int = 0) -> xr.Dataset:
    """Standard-normal S2 cube generated lazily by dask (never whole in memory)."""
    geobox = GeoBox.from_bbox(
        (400_000, 5_000_000, 400_000 + 10 * width, 5_000_000 + 10 * height),
        "EPSG:32632",
        resolution=10,
    )
    state = da.random.RandomState(seed)
    coords = dict(xr_coords(geobox))
    coords["time"] = pd.DatetimeIndex(["2022-07-01"]).values
    data = {
        name: (
            ("time", "y", "x"),
            state.standard_normal((1, height, width), chunks=(1, chunk, chunk)).astype(np.float32),
        )
        for name in S2.bands
    }
    return xr.Dataset(data, coords=coords)


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def xarray_vs_bare(model: str, window: int, windows: int, batch: int) -> dict:
    side = windows * window
    cube = lazy_cube(side, side, chunk=side).persist()
    kwargs = dict(model=model, weights="random", window=window, normalise=False, batch_size=batch)
    network = build_model(model_spec(model, "random"))
    pixels = np.stack([cube[b].values[0] for b in S2.bands])  # (10, side, side)
    tiles = pixels.reshape(10, windows, window, windows, window).transpose(1, 3, 0, 2, 4)
    tiles = torch.from_numpy(np.ascontiguousarray(tiles.reshape(-1, 10, window, window)))

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, len(tiles), batch):
                network.forward_features(s2=tiles[start : start + batch])

    def through_xarray() -> None:
        cube.csmoe.embed(patch=network.config.patch_size, **kwargs).compute()

    through_xarray()  # warm the per-process model cache
    t_bare, t_xr = timed(bare, 2), timed(through_xarray, 2)
    n = len(tiles)
    return {
        "windows": n,
        "bare_s": t_bare,
        "xarray_s": t_xr,
        "ratio": t_bare / t_xr,
        "wps": n / t_xr,
    }


def warm_worker(spec) -> None:
    cached_model(spec, torch.device("cpu"))


def cluster_scaling(model: str, window: int, windows: int, batch: int) -> dict:
    from distributed import Client, LocalCluster

    side = windows * window
    cube = lazy_cube(side, side, chunk=window)
    kwargs = dict(model=model, weights="random", window=window, normalise=False, batch_size=batch)
    times = {}
    for workers in (1, 2):
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
            tempfile.TemporaryDirectory() as tmp,
        ):
            spec = model_spec(model, "random")
            client.run(warm_worker, spec)  # build the model once on every worker, untimed
            start = time.perf_counter()
            embed_to_zarr(cube, Path(tmp) / "emb.zarr", client=client, progress=False, **kwargs)
            times[workers] = time.perf_counter() - start
    return {
        "windows": windows**2,
        "one_s": times[1],
        "two_s": times[2],
        "ratio": times[1] / times[2],
    }


def memory_run(model: str, window: int, height: int, width: int, chunk: int) -> None:
    """Child process: embed a lazy cube to Zarr with an in-process cluster, print peak RSS."""
    from distributed import Client, LocalCluster

    cube = lazy_cube(height, width, chunk=chunk)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        embed_to_zarr(
            cube, Path(tmp) / "emb.zarr", client=client, progress=False, model=model,
            weights="random", window=window, normalise=False,
        )  # fmt: skip
    peak_mib = peak_rss_mib()
    print(json.dumps({"peak_mib": peak_mib, "pixels": height * width}))


def peak_rss_mib() -> float:
    """This process's own peak resident set (VmHWM); ``ru_maxrss`` would report the
    parent's peak, which a forked child inherits."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_growth(model: str, window: int, side: int) -> dict:
    chunk = max(window, side // 4 // window * window)
    results = {}
    for factor, (h, w) in {1: (side, side), 8: (2 * side, 4 * side)}.items():
        out = subprocess.run(
            [sys.executable, __file__, "--memory-run", model, str(window), str(h), str(w), str(chunk)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[factor] = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "side": side,
        "peak_1x_mib": results[1]["peak_mib"],
        "peak_8x_mib": results[8]["peak_mib"],
        "growth": results[8]["peak_mib"] / results[1]["peak_mib"],
    }


def gpu_figures(model: str, window: int, batch: int) -> dict | None:
    if not torch.cuda.is_available():
        return None
    network = build_model(model_spec(model, "random")).cuda()
    x = torch.randn(batch, 10, window, window, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            network.forward_features(s2=x)
        torch.cuda.synchronize()
        start, steps = time.perf_counter(), 20
        events = []
        for _ in range(steps):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            network.forward_features(s2=x)
            end.record()
            events.append((begin, end))
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    busy = sum(b.elapsed_time(e) for b, e in events) / 1000
    return {"windows_per_s": steps * batch / wall, "gpu_busy_share": busy / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="csmoe_p16")
    parser.add_argument("--window", type=int, default=224)
    parser.add_argument("--windows", type=int, default=4, help="windows per cube side")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--memory-side", type=int, default=896)
    parser.add_argument("--memory-model", default="csmoe_tiny", help="second, data-dominated run")
    parser.add_argument("--memory-window", type=int, default=64)
    parser.add_argument("--memory-side-small-model", type=int, default=2048)
    parser.add_argument("--memory-run", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_run:
        model, *numbers = args.memory_run
        memory_run(model, *map(int, numbers))
        return
    dask.config.set(scheduler="threads")
    print(f"model {args.model}, window {args.window} px, torch threads {torch.get_num_threads()}")
    a = xarray_vs_bare(args.model, args.window, args.windows, args.batch)
    print(
        f"1. xarray/dask vs bare forward, {a['windows']} windows: bare {a['bare_s']:.2f} s, "
        f"xarray {a['xarray_s']:.2f} s ({a['wps']:.2f} windows/s) -> ratio {a['ratio']:.2f} (target >= 0.85)"
    )
    b = cluster_scaling(args.model, args.window, args.windows, args.batch)
    print(
        f"2. LocalCluster, {b['windows']} windows: 1 worker {b['one_s']:.2f} s, 2 workers "
        f"{b['two_s']:.2f} s -> speed-up {b['ratio']:.2f} (target >= 1.6)"
    )
    for model, window, side in (
        (args.model, args.window, args.memory_side),
        (args.memory_model, args.memory_window, args.memory_side_small_model),
    ):
        c = memory_growth(model, window, side)
        print(
            f"3. peak RSS, {model} window {window}, {side}^2 px vs 8x: {c['peak_1x_mib']:.0f} MiB vs "
            f"{c['peak_8x_mib']:.0f} MiB -> growth {c['growth']:.2f} (target <= 1.3)"
        )
    d = gpu_figures(args.model, args.window, 64)
    if d is None:
        print("4. GPU: no CUDA device here; skipped")
    else:
        print(
            f"4. GPU bf16: {d['windows_per_s']:.1f} windows/s, GPU busy {100 * d['gpu_busy_share']:.0f}% of wall time"
        )


if __name__ == "__main__":
    main()
