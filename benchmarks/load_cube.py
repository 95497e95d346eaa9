"""Throughput of ``load_cube`` (odc-stac) versus reading the same COGs with rasterio.

Two workloads, printed as MPix/s and as a ratio (target: odc-stac >= 0.8 x rasterio):

* ``sample``: the six BigEarthNet S1/S2 pairs, bands stored at 10 m (B02 B03 B04 B08
  vv vh), one cube per pair.
* ``mosaic``: a synthetic 2 x 2 mosaic of uint16 COGs (``--side`` px square, 3 bands)
  written to a temporary folder, loaded as one cube of ``2 * side`` px square.

Both sides use the same number of threads and read every pixel once from a warm page
cache; load_cube also converts to float32 and masks nodata, rasterio returns uint16.

    python benchmarks/load_cube.py [--side 2048] [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import dask
import numpy as np
import pystac
import rasterio
from rasterio.transform import from_origin

from xcsmoe.stac.load import load_cube
from xcsmoe.stac.sample_catalog import example_catalog, iter_pairs

BANDS_10M = ("B02", "B03", "B04", "B08")
MOSAIC_BANDS = ("B02", "B03", "B04")


def _best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    fn()  # warm-up: page cache, GDAL and dask start-up
    times, pixels = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        pixels = fn()
        times.append(time.perf_counter() - start)
    return min(times), pixels


def _rasterio_reader(paths: list[str], threads: int, *, as_float: bool) -> Callable[[], int]:
    """Whole-file reads; ``as_float``: the cube's output (float32, nodata as NaN)."""

    def read(path: str) -> int:
        with rasterio.open(path) as src:
            data = src.read(1)
            nodata = src.nodata
        if as_float:
            out = data.astype(np.float32)
            if nodata is not None and not np.isnan(nodata):
                np.copyto(out, np.float32(np.nan), where=data == nodata)
            return out.size
        return data.size

    def run() -> int:
        with ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(read, paths))

    return run


def _cube_reader(
    make_cube: Callable[[], list], threads: int, *, prebuilt: bool = False
) -> Callable[[], int]:
    """``load_cube`` + compute; ``prebuilt``: time the compute only (graph built once)."""
    built = make_cube() if prebuilt else None

    def run() -> int:
        cubes = built if built is not None else make_cube()
        with dask.config.set(scheduler="threads", num_workers=threads):
            (done,) = dask.compute(cubes)
        return sum(int(np.prod(v.shape)) for ds in done for v in ds.data_vars.values())

    return run


def _readers(make_cube, paths, threads) -> dict[str, Callable[[], int]]:
    return {
        "load_cube": _cube_reader(make_cube, threads),
        "compute": _cube_reader(make_cube, threads, prebuilt=True),
        "rio_f32": _rasterio_reader(paths, threads, as_float=True),
        "rio_raw": _rasterio_reader(paths, threads, as_float=False),
    }


def sample_workload(threads: int) -> tuple[Callable[[], int], Callable[[], int]]:
    pairs = list(iter_pairs(example_catalog()))
    paths = [
        urlparse(item.assets[key].href).path
        for s2, s1 in pairs
        for item, keys in ((s2, BANDS_10M), (s1, ("vv", "vh")))
        for key in keys
    ]
    bands = [*BANDS_10M, "vv", "vh"]

    def cubes() -> list:
        return [load_cube([s2], [s1], bands=bands, chunks=-1) for s2, s1 in pairs]

    return _readers(cubes, paths, threads)


def write_mosaic(folder: Path, side: int) -> list[pystac.Item]:
    """2 x 2 tiles of ``side`` px uint16 COGs (3 bands) on one UTM grid, as STAC items."""
    rng = np.random.default_rng(0)
    items = []
    for row in range(2):
        for col in range(2):
            x0, y0 = 500_000 + col * side * 10, 5_300_000 - row * side * 10
            transform = from_origin(x0, y0, 10, 10)
            item = pystac.Item(
                f"tile-{row}{col}",
                {"type": "Point", "coordinates": [15.0, 47.8]},
                None,
                dt.datetime(2021, 6, 1, 10, tzinfo=dt.timezone.utc),
                {"proj:code": "EPSG:32633"},
                collection="synthetic-mosaic",
            )
            item.geometry = None
            for band in MOSAIC_BANDS:
                path = folder / f"{item.id}_{band}.tif"
                data = rng.integers(1, 10_000, (side, side), dtype=np.uint16)
                profile = dict(
                    driver="COG", width=side, height=side, count=1, dtype="uint16",
                    crs="EPSG:32633", transform=transform, nodata=0, compress="DEFLATE",
                    blocksize=512,
                )  # fmt: skip
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data, 1)
                asset = pystac.Asset(path.as_uri(), media_type="image/tiff", roles=["data"])
                asset.extra_fields.update(
                    {"proj:shape": [side, side], "proj:transform": list(transform)[:6]}
                )
                item.add_asset(band, asset)
            _set_footprint(item, x0, y0, side)
            items.append(item)
    return items


def _set_footprint(item: pystac.Item, x0: float, y0: float, side: int) -> None:
    from odc.geo.geom import box

    geom = box(x0, y0 - side * 10, x0 + side * 10, y0, "EPSG:32633").to_crs("EPSG:4326")
    item.geometry, item.bbox = geom.json, list(geom.boundingbox)
    item.stac_extensions = ["https://stac-extensions.github.io/projection/v2.0.0/schema.json"]


def mosaic_workload(folder: Path, side: int, threads: int):
    items = write_mosaic(folder, side)
    paths = [urlparse(a.href).path for i in items for a in i.assets.values()]

    def cubes() -> list:
        return [load_cube(items, bands=list(MOSAIC_BANDS), chunks={"x": side, "y": side})]

    return _readers(cubes, paths, threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048, help="mosaic tile size in px")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    print(f"threads={args.threads}, best of {args.repeat}, warm page cache; MPix/s")
    print("  load_cube: plan + odc-stac graph + compute (float32, NaN nodata)")
    print("  compute:   the same graph computed again (planning excluded)")
    print("  rio_f32:   rasterio whole-file reads + float32 + NaN nodata (same output)")
    print("  rio_raw:   rasterio whole-file reads in the storage dtype")
    print("  ratio:     load_cube / rio_f32 (target >= 0.8)")
    head = f"{'workload':<36} {'MPix':>6} {'load_cube':>10} {'compute':>8} {'rio_f32':>8} {'rio_raw':>8} {'ratio':>6}"
    print(head)
    with tempfile.TemporaryDirectory(prefix="xcsmoe-bench-") as folder:
        workloads = {
            "sample (6 pairs, 4 S2 + 2 S1 bands)": sample_workload(args.threads),
            f"mosaic (4 x {args.side}^2 COG, 3 bands)": mosaic_workload(
                Path(folder), args.side, args.threads
            ),
        }
        for name, readers in workloads.items():
            rates, counts = {}, set()
            for key, run in readers.items():
                seconds, pixels = _best(run, args.repeat)
                rates[key] = pixels / seconds / 1e6
                counts.add(pixels)
            if len(counts) != 1:
                raise RuntimeError(f"{name}: pixel counts differ: {sorted(counts)}")
            print(
                f"{name:<36} {counts.pop() / 1e6:>6.2f} {rates['load_cube']:>10.1f} "
                f"{rates['compute']:>8.1f} {rates['rio_f32']:>8.1f} {rates['rio_raw']:>8.1f} "
                f"{rates['load_cube'] / rates['rio_f32']:>6.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
