"""Object-store cost of ``embed_to_zarr``: requests per written region and bytes written
per byte of embeddings, measured on a loopback ``moto_server`` (PyPI ``moto[server]``).

The request count comes from the server's own access log (every request of the client
and of every worker). Two jobs that differ only in their number of regions give the
requests per written region, ``(N_large - N_small) / (R_large - R_small)``; a third size
checks that it stays constant. Bytes written are the sizes of the objects each PUT
wrote (metadata rewritten several times counts each time), divided by the bytes of the
float32 embeddings the job produced: per added region (the store's steady cost), and
for the whole store including its fixed metadata.

Usage: python benchmarks/object_store.py [--model csmoe_tiny] [--window 64]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from xcsmoe.embedding.batch import embed_to_zarr
from xcsmoe.sensors import S1, S2
from xcsmoe.stac.serve import free_port

_REQUEST = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/[\d.]+"')


def cube(rows: int, cols: int, window: int) -> xr.Dataset:
    """A standard-normal S1+S2 cube of ``rows x cols`` windows, one chunk per window."""
    h, w = rows * window, cols * window
    box = GeoBox.from_bbox((600_000, 5_100_000, 600_000 + 10 * w, 5_100_000 + 10 * h),
                           "EPSG:32633", resolution=10)  # fmt: skip
    coords = dict(xr_coords(box))
    coords["time"] = pd.date_range("2021-06-01", periods=1).values
    rng = np.random.default_rng(0)
    data = {n: (("time", "y", "x"), rng.standard_normal((1, h, w), dtype=np.float32))
            for n in S1.bands + S2.bands}  # fmt: skip
    return xr.Dataset(data, coords=coords).chunk({"time": 1, "y": window, "x": window})


def object_store_figures(model: str = "csmoe_tiny", window: int = 64, sizes=(2, 4, 12)) -> dict:
    """Start ``moto_server``, embed cubes of ``1 x n`` windows for each ``n`` in ``sizes``
    into a bucket, and return requests per region and bytes written ÷ embedding bytes."""
    import s3fs
    from distributed import Client, LocalCluster

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "moto.log"
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            for _ in range(150):
                try:
                    urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            options = {"endpoint_url": endpoint, "key": "bench", "secret": "bench"}
            fs = s3fs.S3FileSystem(**options)
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            fs.mkdir(bucket)
            runs = {}
            with (
                LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cl,
                Client(cl) as client,
            ):
                for n in sizes:
                    start = len(_requests(log))
                    store = f"s3://{bucket}/run{n}.zarr"
                    report = embed_to_zarr(cube(1, n, window), store, client=client, storage_options=options,
                                           model=model, weights="random", window=window,
                                           normalise=False, progress=False)  # fmt: skip
                    requests = _requests(log)[start:]
                    sizes_now = {k: fs.info(k)["size"] for k in fs.find(f"{bucket}/run{n}.zarr")}
                    written = sum(sizes_now.get(p.lstrip("/").split("?")[0], 0)
                                  for m, p in requests if m == "PUT")  # fmt: skip
                    produced = xr.open_zarr(store, storage_options=options)[
                        ["cls", "tokens"]
                    ].nbytes
                    runs[n] = {
                        "regions": report.computed, "requests": len(requests),
                        "methods": Counter(m for m, _ in requests), "written": written,
                        "produced": produced, "ratio": written / produced,
                    }  # fmt: skip
        finally:
            server.terminate()
            server.wait()
    small, mid, large = (runs[n] for n in sizes)
    per_region = (large["requests"] - mid["requests"]) / (large["regions"] - mid["regions"])
    per_region_small = (mid["requests"] - small["requests"]) / (mid["regions"] - small["regions"])
    marginal = (large["written"] - mid["written"]) / (large["produced"] - mid["produced"])
    return {"per_region": per_region, "per_region_small": per_region_small,
            "ratio": large["ratio"], "marginal_ratio": marginal, "regions": large["regions"],
            "runs": runs}  # fmt: skip


def _requests(log: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _REQUEST.finditer(log.read_text(errors="replace"))]


def summary_line(figures: dict) -> str:
    return (
        f"object store (moto, {figures['regions']} regions): {figures['per_region']:.1f} requests per "
        f"written region ({figures['per_region_small']:.1f} on the smaller stores: constant), bytes "
        f"written / embedding bytes {figures['marginal_ratio']:.3f} per added region (target <= 1.1), "
        f"{figures['ratio']:.3f} for the whole {figures['regions']}-region store incl. its metadata"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="csmoe_tiny")
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args()
    result = object_store_figures(args.model, args.window)
    for n, run in result["runs"].items():
        print(
            f"  1 x {n} windows: {run['requests']} requests {dict(run['methods'])}, ratio {run['ratio']:.3f}"
        )
    print(summary_line(result))
