"""Pretraining data path, measured in one run (noisy on a shared machine).

Prints (patch-store part):
  1. store writing ÷ raw rasterio reading of the same GeoTIFF pixels (target ≥ 0.7);
  2. peak memory while building a store 8× larger (target ≤ 1.3× growth), each store
     built in a fresh child process as a user does (``client=None``: its own 2-worker
     cluster): the child's own peak and the largest worker process's peak (VmHWM).
Inputs are the real Major TOM Core cells of ``../shared/fixtures/real``, repeated as new
cells (hard links) in a temporary folder, so every tile is a real GeoTIFF read.

Usage: python benchmarks/pretrain.py [--copies 8] [--patch 120]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rasterio

REPO = Path(__file__).resolve().parents[1]
MAJORTOM = REPO.parent / "shared" / "fixtures" / "real" / "major-tom-core" / "S2L2A"


def make_cells(folder: Path, copies: int) -> Path:
    """``copies`` × the real cells as new Major TOM cells under ``folder`` (hard links)."""
    root = folder / "S2L2A"
    for product in sorted(MAJORTOM.glob("*/*/*")):
        row, cell = product.parent.parent.name, product.parent.name
        for k in range(copies):
            target = root / row / f"{cell}{k}" / product.name
            target.mkdir(parents=True, exist_ok=True)
            for band in product.glob("*.tif"):
                if not (target / band.name).exists():
                    os.link(band, target / band.name)
    return root


def raw_read_seconds(root: Path, *, repeats: int = 3) -> tuple[float, float]:
    """Read every S2 band GeoTIFF of every tile with rasterio, whole: best (wall, CPU)
    seconds of ``repeats`` passes."""
    from xcsmoe.sensors import S2

    files = [p / f"{b}.tif" for p in sorted(root.glob("*/*/*")) for b in S2.bands]
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        for path in files:
            with rasterio.open(path) as src:
                src.read(1)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu


def cluster_cpu_seconds(client) -> float:
    """CPU seconds used so far by this process and every worker process of ``client``."""
    return time.process_time() + sum(client.run(time.process_time).values())


def store_vs_raw(copies: int, patch: int, *, repeats: int = 3) -> dict:
    """Throughput of ``build_patch_store`` on a running 2-process cluster ÷ raw reading.

    The cluster is started (and timed) once, then warmed up: every worker imports
    rasterio, zarr and xcsmoe and builds a small store. Cluster start-up is a fixed cost
    of a session, not of the pixels, so the ratio leaves it out; it is reported beside
    it (and a ratio that includes it). Store time is the best of ``repeats`` builds into
    fresh paths, as raw reading is the best of as many passes (a shared machine's noise
    only ever adds time). CPU seconds (this process and the
    workers) are reported too: on a shared machine they move less than wall time.
    """
    import dask
    from distributed import Client, LocalCluster

    from xcsmoe.pretraining.patch_store import WORKER_CONFIG, build_patch_store
    from xcsmoe.pretraining.readers import majortom_tiles

    with tempfile.TemporaryDirectory() as tmp:
        root = make_cells(Path(tmp), copies)
        tiles = majortom_tiles(root)
        raw, raw_cpu = raw_read_seconds(root, repeats=repeats)
        start = time.perf_counter()
        with (
            dask.config.set(WORKER_CONFIG),  # as build_patch_store's own cluster
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            startup = time.perf_counter() - start
            client.run(__import__, "xcsmoe.pretraining.patch_store")
            build_patch_store(  # warm-up: both workers scan and write once
                tiles[:2], Path(tmp) / "warm.zarr", patch_size=patch, require_pairs=False,
                client=client, progress=False,
            )  # fmt: skip
            builds, cpus = [], []
            for k in range(repeats):
                start, cpu = time.perf_counter(), cluster_cpu_seconds(client)
                report = build_patch_store(
                    tiles, Path(tmp) / f"store{k}.zarr", patch_size=patch,
                    require_pairs=False, client=client, progress=False,
                )  # fmt: skip
                builds.append(time.perf_counter() - start)
                cpus.append(cluster_cpu_seconds(client) - cpu)
    build, build_cpu = min(builds), min(cpus)
    return {
        "tiles": len(tiles),
        "patches": report.patches,
        "raw_read_s": raw,
        "store_s": build,
        "cluster_start_s": startup,
        "ratio": raw / build,
        "ratio_with_startup": raw / (build + startup),
        "raw_cpu_s": raw_cpu,
        "store_cpu_s": build_cpu,
        "cpu_ratio": raw_cpu / build_cpu,
    }


def memory_run(copies: int, patch: int) -> None:
    """Child process: build a store of ``copies`` × the cells as a user does (its own
    2-worker cluster, ``client=None``); prints this process's peak and the largest
    worker process's peak (both VmHWM)."""
    from xcsmoe.pretraining.patch_store import build_patch_store
    from xcsmoe.pretraining.readers import majortom_tiles

    with tempfile.TemporaryDirectory() as tmp:
        tiles = majortom_tiles(make_cells(Path(tmp), copies))
        report = build_patch_store(
            tiles, Path(tmp) / "store.zarr", patch_size=patch, require_pairs=False,
            progress=False,
        )  # fmt: skip
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # exited workers
    print(json.dumps({"client_mib": peak_rss_mib(), "worker_mib": workers,
                      "patches": report.patches}))  # fmt: skip


def peak_rss_mib() -> float:
    """This process's own peak resident set (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_growth(copies: int, patch: int) -> dict:
    """Peaks of a store of ``copies`` and of ``8 * copies`` × the cells, each built in a
    fresh child process."""
    results = {}
    for factor in (1, 8):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-run", str(copies * factor), "--patch", str(patch)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[factor] = json.loads(out.stdout.strip().splitlines()[-1])
    growth = {
        part: results[8][f"{part}_mib"] / results[1][f"{part}_mib"] for part in ("client", "worker")
    }
    return {
        "patches_1x": results[1]["patches"],
        "patches_8x": results[8]["patches"],
        **{f"{part}_{k}x_mib": results[k][f"{part}_mib"] for part in growth for k in (1, 8)},
        "growth": max(growth.values()),
        "client_growth": growth["client"],
        "worker_growth": growth["worker"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8, help="copies of the 2 real cells")
    parser.add_argument("--patch", type=int, default=120)
    parser.add_argument("--memory-run", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_run is not None:
        memory_run(args.memory_run, args.patch)
        return
    if not MAJORTOM.is_dir():
        sys.exit(f"real Major TOM cells not found at {MAJORTOM}")
    throughput = store_vs_raw(args.copies, args.patch)
    print(
        f"store writing ÷ raw rasterio reading: {throughput['ratio']:.2f} (target ≥ 0.7) — "
        f"{throughput['tiles']} tiles, {throughput['patches']} patches, raw "
        f"{throughput['raw_read_s']:.2f} s, store {throughput['store_s']:.2f} s on a running "
        f"2-worker cluster (its start-up, {throughput['cluster_start_s']:.1f} s once per "
        f"session, left out; with it: {throughput['ratio_with_startup']:.2f})"
    )
    print(
        f"  CPU seconds: raw {throughput['raw_cpu_s']:.2f}, store {throughput['store_cpu_s']:.2f} "
        f"(all processes), ratio {throughput['cpu_ratio']:.2f}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    memory = memory_growth(1, args.patch)
    print(
        f"peak memory 8× larger store: {memory['growth']:.2f}× (target ≤ 1.3; the larger of "
        f"client {memory['client_growth']:.2f}×, worker {memory['worker_growth']:.2f}×) — "
        f"{memory['patches_1x']} patches: client {memory['client_1x_mib']:.0f} MiB, largest "
        f"worker {memory['worker_1x_mib']:.0f} MiB; {memory['patches_8x']} patches: client "
        f"{memory['client_8x_mib']:.0f} MiB, worker {memory['worker_8x_mib']:.0f} MiB"
    )


# ====================================================================== loader and training
# Loader patches/s (0, 1, 2 spawned workers) ÷ training-step patches/s of csmoe_p16, and the
# masked-token order study (spatial vs random kept-token order with grouped Soft MoE slots).
# Usage: python benchmarks/pretrain.py --training [--loader-batches 24] [--mask-steps 60]
# GPU bf16 training step and MFU: python benchmarks/pretrain.py --training --gpu [--gpu-batch 64]


def replicated_sample_store(folder: Path, *, copies: int, patch: int = 120) -> Path:
    """The sample catalog's real pairs cut by build_patch_store, repeated ``copies`` times."""
    import numpy as np
    import xarray as xr

    import xcsmoe
    from xcsmoe.pretraining.patch_store import build_patch_store

    items = list(xcsmoe.example_catalog(folder / "catalog").get_items(recursive=True))
    base = folder / "base.zarr"
    build_patch_store(items, base, patch_size=patch, val_fraction=0.0, n_workers=1, progress=False)
    ds = xr.open_zarr(base)
    n = ds.sizes["patch"]
    big = ds.isel(patch=np.tile(np.arange(n), copies)).compute()
    big["split"] = ("patch", np.zeros(big.sizes["patch"], "uint8"))
    encoding = {v: {"chunks": (8, *big[v].shape[1:])} for v in ("s1", "s2")}
    for name in big.variables:
        big[name].encoding = {}
    out = folder / "replicated.zarr"
    big.to_zarr(out, zarr_format=3, consolidated=True, mode="w", encoding=encoding)
    return out


def loader_patches_per_s(store: Path, *, workers: int, batches: int, batch_size: int) -> float:
    """Patches/s the loader delivers (resized to csmoe_p16's 224 px), after one warm-up batch."""
    from xcsmoe.model.registry import model_config
    from xcsmoe.pretraining.loader import patch_loader, store_plan

    plan = store_plan(store, model_config("csmoe_p16"))
    loader = patch_loader(plan, batch_size=batch_size, workers=workers)
    done, epoch, start = 0, 0, None
    while done < batches:
        loader.sampler.set_epoch(epoch)
        for _ in loader:
            if start is None:
                start = time.perf_counter()
                continue
            done += 1
            if done >= batches:
                break
        epoch += 1
    return batches * batch_size / (time.perf_counter() - start)


def train_step_patches_per_s(*, batch_size: int, steps: int) -> tuple[float, str]:
    """csmoe_p16 forward + backward + AdamW step patches/s on random 224 px inputs, at the
    precision pretraining picks by default on this CPU (bf16 autocast where native)."""
    import torch

    from xcsmoe.embedding.precision import cpu_has_native_bf16
    from xcsmoe.model.registry import create_model

    model = create_model("csmoe_p16", pretraining=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    s1, s2 = torch.randn(batch_size, 2, 224, 224), torch.randn(batch_size, 10, 224, 224)
    bf16 = cpu_has_native_bf16()

    def step() -> None:
        optimiser.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(s1, s2).loss
        loss.backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start), "bf16" if bf16 else "float32"


def train_step_flops(model, s1, s2) -> int:
    """FLOPs of one forward + backward of the pretraining model on ``(s1, s2)`` (torch
    FlopCounterMode: matmuls, convolutions and attention products, 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(s1, s2).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def gpu_training_step(*, variant: str, batch_size: int, steps: int, device: str) -> dict:
    """bf16-autocast training step of ``variant`` on ``device``: patches/s and model FLOP
    utilisation (FLOPs per step × steps/s ÷ the GPU's dense bf16 peak).

    Random 224 px inputs (the loader is measured apart); forward, backward and a fused
    AdamW step, after 3 warm-up steps; ``device="cpu"`` runs the same code as a check."""
    import torch

    from xcsmoe.model.registry import create_model

    torch.manual_seed(0)
    model = create_model(variant, pretraining=True).to(device).train()
    size = model.config.img_size
    s1 = torch.randn(batch_size, 2, size, size, device=device)
    s2 = torch.randn(batch_size, 10, size, size, device=device)
    flops = train_step_flops(model, s1[:1], s2[:1]) * batch_size
    fused = device == "cuda"
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(s1, s2).loss
        loss.backward()
        optimiser.step()

    for _ in range(3):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / steps
    out = {"device": device, "variant": variant, "batch": batch_size,
           "patches_per_s": batch_size / seconds, "tflop_per_step": flops / 1e12}  # fmt: skip
    if device == "cuda":
        sys.path.insert(0, str(Path(__file__).parent))
        from forward_throughput import PEAK_BF16_TFLOPS

        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        out.update(gpu=name, peak_tflops=peak,
                   mfu=None if peak is None else flops / seconds / (peak * 1e12))  # fmt: skip
    return out


def loader_vs_training(*, batches: int, batch_size: int = 8) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = replicated_sample_store(Path(tmp), copies=16)
        loader = {
            w: loader_patches_per_s(store, workers=w, batches=batches, batch_size=batch_size)
            for w in (0, 1, 2)
        }
    train, precision = train_step_patches_per_s(batch_size=batch_size, steps=3)
    ratio = {w: v / train for w, v in loader.items()}
    return {"loader": loader, "train": train, "precision": precision, "ratio": ratio}


def mask_order_study(*, steps: int) -> dict:
    """Spatial vs random kept-token order on csmoe_tiny with the sample patches.

    1. same weights and masks, only the order differs: relative change of each loss and
       cosine similarity of the masked-forward [CLS] features;
    2. ``steps`` training steps per order (same seed): final losses, and how close each
       encoder's [CLS] of a 50 %-masked input (in its training order) is to its [CLS] at
       inference (all tokens, row-major).
    """
    import numpy as np
    import torch

    from xcsmoe.model.pretrain import CSMoEForPretraining
    from xcsmoe.model.registry import model_config
    from xcsmoe.pretraining.loader import patch_loader, store_plan
    from xcsmoe.pretraining.recipe import PretrainRecipe
    from xcsmoe.pretraining.train import pretrain, read_losses

    torch.set_num_threads(1)
    config = model_config("csmoe_tiny")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = replicated_sample_store(Path(tmp), copies=8, patch=32 * 3)
        plan = store_plan(store, config)
        batch = next(iter(patch_loader(plan, batch_size=16, flips=False)))

        def masked_cls(model: CSMoEForPretraining, spatial: bool, seed: int = 0):
            model.spatial_order = spatial
            g = torch.Generator().manual_seed(seed)
            feats, *_ = model.encode_masked(batch["s2"], "s2", 0.5, g)
            return feats[:, 0]

        torch.manual_seed(0)
        init = CSMoEForPretraining(config).eval()
        with torch.no_grad():
            losses = {}
            for spatial in (True, False):
                init.spatial_order = spatial
                g = torch.Generator().manual_seed(0)
                result = init(batch["s1"], batch["s2"], generator=g)
                losses[spatial] = {k: float(v) for k, v in result.losses.items()}
            cos = torch.cosine_similarity(masked_cls(init, True), masked_cls(init, False)).mean()
        out["same_weights"] = {
            "rel_change": {
                k: abs(losses[True][k] - losses[False][k]) / max(abs(losses[False][k]), 1e-12)
                for k in ("uni", "cross", "mim", "total")
            },
            "cls_cosine": float(cos),
        }
        trained = {}
        for order in ("spatial", "random"):
            recipe = PretrainRecipe(
                variant="csmoe_tiny", store=store, output=Path(tmp) / order, max_steps=steps,
                batch_size=8, lr=1e-3, warmup_steps=steps // 10, seed=0, workers=0,
                checkpoint_every=steps, log_every=1, mask_order=order,
            )  # fmt: skip
            result = pretrain(recipe, progress=False)
            _, total = read_losses(result.metrics, "train/total")
            model = CSMoEForPretraining(config).eval()
            state = torch.load(result.checkpoint, weights_only=True)["state_dict"]
            model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
            with torch.no_grad():
                full = model.backbone(s2=batch["s2"]).cls["s2"]
                sims = [
                    torch.cosine_similarity(masked_cls(model, order == "spatial", s), full).mean()
                    for s in range(4)
                ]
            trained[order] = {
                "final_loss": float(np.mean(total[-10:])),
                "masked_vs_inference_cls_cosine": float(torch.stack(sims).mean()),
            }
        out["trained"] = trained
    return out


def training_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="loader and training benchmarks")
    parser.add_argument("--training", action="store_true")
    parser.add_argument("--loader-batches", type=int, default=24)
    parser.add_argument("--mask-steps", type=int, default=60)
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="only the bf16 GPU training step")
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--device", default="cuda", help="cuda (or cpu, to check the code)")
    args = parser.parse_args(argv)
    if args.gpu:
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit("no CUDA device: the bf16 training-step benchmark needs a GPU")
        result = gpu_training_step(
            variant="csmoe_p16", batch_size=args.gpu_batch, steps=args.gpu_steps,
            device=args.device,
        )  # fmt: skip
        mfu = result.get("mfu")
        print(
            f"csmoe_p16 bf16 training step on {result.get('gpu', args.device)}: "
            f"{result['patches_per_s']:.1f} patches/s (batch {result['batch']}), "
            f"{result['tflop_per_step']:.2f} TFLOP per step"
            + (f", MFU {100 * mfu:.1f} % of {result['peak_tflops']:.0f} TFLOP/s (target ≥ 35 %)"
               if mfu is not None else "")
        )  # fmt: skip
        return
    if not args.skip_loader:
        speed = loader_vs_training(batches=args.loader_batches)
        for w, value in speed["loader"].items():
            print(
                f"loader {w} workers: {value:.1f} patches/s ÷ csmoe_p16 train step "
                f"({speed['precision']}, batch 8) {speed['train']:.2f} patches/s = "
                f"{speed['ratio'][w]:.1f} (target ≥ 1.0 with 2)"
            )
    study = mask_order_study(steps=args.mask_steps)
    print(json.dumps(study, indent=1))


if __name__ == "__main__":
    if "--training" in sys.argv:
        training_main(sys.argv[1:])
    else:
        main()
