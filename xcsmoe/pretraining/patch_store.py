"""Execution: tiles → valid patches → a Zarr v3 patch store, on Dask, resumably.

The number of valid patches of a tile is known only after its pixels are read, while
resumable region writes need fixed positions and the final store must hold exactly the
valid patches. Both are met with one read of every pixel, in two passes:

1. **Scan** (one task per block of a tile's patch grid): read the block, keep the
   patches whose every pixel is valid (both sensors, or either one when
   ``require_pairs=False``), and stage the kept patches, raw and uncompressed, in a hidden
   sibling folder ``.<store>.scan/`` with a small JSON result written last (atomically).
   A rerun skips blocks whose result exists; the folder carries the job fingerprint.
2. **Plan** (pure, :func:`~xcsmoe.pretraining.patch_plan.plan_layout`): kept patches in
   (tile, row, column) order; per-patch metadata (ids, times, centre, transform, split)
   is written with the store skeleton; pixels are cut into regions of whole chunks.
3. **Write** (one task per region, :mod:`xcsmoe.regionstore`): copy the staged patches of
   a region into the ``s2``/``s1`` chunks, then set its marker. A rerun writes only the
   regions without a marker and ends byte-identical. The staging folder is removed once
   the store is complete.

Layout (the contract with the loader): :mod:`xcsmoe.pretraining.patch_meta`; one record
per patch along ``patch``, ``s2`` uint16 DN and ``s1`` float32 linear power, 8 patches per
zstd-compressed chunk by default.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from xcsmoe.errors import InputError, expected
from xcsmoe.pretraining.patch_meta import discard_counts, store_encoding, store_template
from xcsmoe.pretraining.patch_plan import (
    Block,
    PatchLayout,
    PatchSettings,
    check_patch_size,
    check_tiles,
    plan_blocks,
    plan_layout,
)
from xcsmoe.pretraining.tiles import PatchTile, tiles_from_items, tiles_from_selection
from xcsmoe.regionstore import (
    COMPLETE_ATTR,
    JOB_ATTR,
    StoreSpec,
    check_cluster_args,
    check_store,
    connect,
    create_store,
    finish_store,
    run_tasks,
    write_region,
)

__all__ = ["PatchStoreReport", "build_patch_store", "resolve_tiles", "scan_block"]


@dataclass(frozen=True)
class PatchStoreReport:
    """What a run of :func:`build_patch_store` did (counts in patches)."""

    store: str
    patches: int
    tiles: int
    blocks_scanned: int
    regions: int
    regions_written: int
    discarded_partial: int
    discarded_invalid: int
    discarded_unpaired: int


def build_patch_store(
    source: Any,
    store: str | os.PathLike[str],
    *,
    items: Sequence[Any] | None = None,
    patch_size: int = 120,
    model: Any = None,
    require_pairs: bool = True,
    val_fraction: float = 0.05,
    seed: int = 0,
    client: Any = None,
    n_workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    chunk_patches: int = 8,
    region_chunks: int = 4,
    block_patches: int = 8,
) -> PatchStoreReport:
    """Cut ``source`` into valid patches and write them to the Zarr v3 store ``store``.

    Args:
        source: a sampling selection (GeoDataFrame with ``sample_id``; pass ``items``),
            STAC items (S2 and S1 mixed; paired automatically) or :class:`PatchTile`\\ s
            (e.g. from :func:`~xcsmoe.pretraining.readers.majortom_tiles`).
        patch_size: pixels per patch side; a multiple of ``model``'s patch when given.
        model: a variant name, config, model or patch size to check ``patch_size`` with.
        require_pairs: keep only patches with valid S1 *and* S2 (else either, flagged).
        val_fraction, seed: reproducible share of patches in the validation split.
        client: a ``distributed.Client``, a scheduler address, or ``None`` for a
            ``LocalCluster`` of ``n_workers`` single-threaded processes.
        overwrite: replace a store written by another job.
        chunk_patches, region_chunks, block_patches: patches per Zarr chunk, chunks per
            write task, patch rows/columns per scan task.

    Returns a :class:`PatchStoreReport`. Reruns of the same job resume.
    """
    settings = PatchSettings(
        patch_size=patch_size, require_pairs=require_pairs, val_fraction=val_fraction,
        seed=seed, chunk_patches=chunk_patches, region_chunks=region_chunks,
        block_patches=block_patches,
    )  # fmt: skip
    check_patch_size(settings.patch_size, model)
    check_cluster_args(client, n_workers)
    tiles = resolve_tiles(source, items)
    check_tiles(tiles, settings)
    store = Path(store)
    _check_writable(store)
    fingerprint = {**settings.fingerprint(), "tiles": [t.identity() for t in tiles]}
    probe = StoreSpec(xr.Dataset(), {}, ("region",), (0,), fingerprint)
    if _same_complete_job(store, probe):
        return _report_existing(store, tiles, settings)
    if not _same_job(store, probe):
        check_store(store, probe, overwrite=overwrite)  # raises for another job's store
    blocks = plan_blocks(tiles, settings)
    scan_dir = _scan_dir(store, probe.fingerprint_json)
    with connect(client, n_workers=n_workers) as active:
        todo = [b for b in blocks if not (scan_dir / _result_name(b.index)).is_file()]
        scan = dask.delayed(scan_block, pure=True)
        run_tasks(
            [scan(tiles[b.tile], b, settings=settings, scan_dir=str(scan_dir)) for b in todo],
            active, desc="scanning tiles", progress=progress,
        )  # fmt: skip
        scans = [_read_result(scan_dir, b.index) for b in blocks]
        layout = plan_layout(blocks, scans, settings)
        counts = discard_counts(tiles, blocks, scans, settings)
        if layout.size == 0:
            raise InputError(
                expected("selection", "at least one valid patch", f"none ({counts})",
                         "Select tiles with valid pixels, or a smaller patch_size.")
            )  # fmt: skip
        spec = StoreSpec(
            store_template(tiles, layout, settings, counts),
            store_encoding(layout, settings),
            ("region",),
            (layout.regions,),
            fingerprint,
        )
        status = check_store(store, spec, overwrite=overwrite)
        if not status.complete:
            status = create_store(status, spec)
            write = dask.delayed(write_patch_region, pure=True)
            tasks = [
                write(str(store), str(scan_dir), index[0], _region_sources(layout, index[0]))
                for index in status.todo
            ]
            run_tasks(tasks, active, desc="writing patches", progress=progress)
    if finish_store(store):
        shutil.rmtree(scan_dir, ignore_errors=True)
    return PatchStoreReport(
        str(store), layout.size, len(tiles), len(todo), layout.regions,
        len(status.todo) if not status.complete else 0, **counts,
    )  # fmt: skip


def resolve_tiles(source: Any, items: Sequence[Any] | None = None) -> list[PatchTile]:
    """Tiles of a selection (with ``items``), of STAC items, or tiles as given."""
    import geopandas as gpd
    import pystac

    if isinstance(source, gpd.GeoDataFrame):
        if items is None:
            raise InputError(
                expected("items", "the STAC items the selection names", None,
                         "Pass items=<the items given to archive_from_items>.")
            )  # fmt: skip
        return tiles_from_selection(source, items)
    if source is None or isinstance(source, (str, bytes, os.PathLike)):
        raise InputError(
            expected("source", "a selection, STAC items or PatchTiles", type(source).__name__)
        )
    source = list(source)
    if not source:
        raise InputError(
            expected("selection", "at least one tile", "an empty selection",
                     "Select at least one item or grid cell.")
        )  # fmt: skip
    if all(isinstance(s, PatchTile) for s in source):
        return source
    if all(isinstance(s, pystac.Item) for s in source):
        return tiles_from_items(source)
    kinds = sorted({type(s).__name__ for s in source})
    raise InputError(expected("source", "only pystac Items or only PatchTiles", kinds))


# --------------------------------------------------------------------------- scan pass


def scan_block(
    tile: PatchTile, block: Block, *, settings: PatchSettings, scan_dir: str
) -> dict[str, Any]:
    """Worker side: read one block, keep its valid patches, stage them; returns the result.

    Staged: ``block-<i>-s2.npy`` ``(k, 10, P, P)`` uint16 (0 where a patch has no S2) and
    ``block-<i>-s1.npy`` ``(k, 2, P, P)`` float32 (NaN where none), then the JSON result.
    """
    patch = settings.patch_size
    ys, xs = block.pixel_window(patch)
    arrays = tile.source.read(
        tile.geobox[ys, xs], bands_s2=settings.bands_s2, bands_s1=settings.bands_s1
    )
    shape = (block.row1 - block.row0, block.col1 - block.col0)
    s2 = _cut(arrays["s2"], shape, patch)
    s1 = _cut(arrays["s1"], shape, patch)
    valid_s2 = _all_finite(s2, block.patches)
    valid_s1 = _all_finite(s1, block.patches)
    keep = valid_s2 & valid_s1 if settings.require_pairs else valid_s2 | valid_s1
    kept = np.flatnonzero(keep)
    has_s2, has_s1 = valid_s2[kept], valid_s1[kept]
    folder = Path(scan_dir)
    name = _result_name(block.index)
    if s2 is not None and has_s2.any():
        out = np.zeros((kept.size, *s2.shape[1:]), dtype=np.uint16)
        out[has_s2] = s2[kept[has_s2]]
        _save_atomic(folder / name.replace(".json", "-s2.npy"), out)
    if s1 is not None and has_s1.any():
        out1 = np.full((kept.size, *s1.shape[1:]), np.nan, dtype=np.float32)
        out1[has_s1] = s1[kept[has_s1]]
        _save_atomic(folder / name.replace(".json", "-s1.npy"), out1)
    result = {
        "kept": kept.tolist(),
        "has_s2": has_s2.tolist(),
        "has_s1": has_s1.tolist(),
        "invalid": int(block.patches - kept.size),
    }
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, folder / name)
    return result


def _cut(values: np.ndarray | None, shape: tuple[int, int], patch: int) -> np.ndarray | None:
    """``(C, rows*P, cols*P)`` → ``(rows*cols, C, P, P)``, row-major."""
    if values is None:
        return None
    rows, cols = shape
    bands = values.shape[0]
    grid = values.reshape(bands, rows, patch, cols, patch)
    return grid.transpose(1, 3, 0, 2, 4).reshape(rows * cols, bands, patch, patch)


def _all_finite(patches: np.ndarray | None, count: int) -> np.ndarray:
    if patches is None:
        return np.zeros(count, dtype=bool)
    return np.isfinite(patches).reshape(count, -1).all(axis=1)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def _result_name(index: int) -> str:
    return f"block-{index:07d}.json"


def _read_result(scan_dir: Path, index: int) -> dict[str, Any]:
    return json.loads((scan_dir / _result_name(index)).read_text())


def _scan_dir(store: Path, fingerprint_json: str) -> Path:
    """The hidden staging folder beside ``store``, emptied when it holds another job."""
    folder = store.parent / f".{store.name}.scan"
    job = folder / "job.json"
    if folder.exists() and (not job.is_file() or job.read_text() != fingerprint_json):
        if not job.is_file() and any(folder.iterdir()):
            raise InputError(
                expected("store", "a path whose staging folder xcsmoe can use",
                         f"{str(folder)!r} holding files xcsmoe did not write",
                         "Remove that folder or choose another store path.")
            )  # fmt: skip
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not job.is_file():
        job.write_text(fingerprint_json)
    return folder


# -------------------------------------------------------------------------- write pass


def _region_sources(layout: PatchLayout, index: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Start, blocks and slots of the patches of region ``index`` (small arrays)."""
    region = layout.region(index)
    return region.start, layout.block[region], layout.slot[region]


def write_patch_region(
    store: str, scan_dir: str, index: int, sources: tuple[int, np.ndarray, np.ndarray]
) -> tuple[int, ...]:
    """Worker side: gather a region's staged patches and write them, then its marker."""
    start, blocks, slots = sources
    folder = Path(scan_dir)
    s2 = s1 = None
    for block in np.unique(blocks):
        where = np.flatnonzero(blocks == block)
        name = _result_name(int(block))
        for sensor in ("s2", "s1"):
            path = folder / name.replace(".json", f"-{sensor}.npy")
            if not path.is_file():
                continue
            staged = np.load(path, mmap_mode="r")
            if sensor == "s2":
                if s2 is None:
                    s2 = np.zeros((blocks.size, *staged.shape[1:]), dtype=np.uint16)
                s2[where] = staged[slots[where]]
            else:
                if s1 is None:
                    s1 = np.full((blocks.size, *staged.shape[1:]), np.nan, dtype=np.float32)
                s1[where] = staged[slots[where]]
    zarr_shape = _stored_shapes(store)
    if s2 is None:
        s2 = np.zeros((blocks.size, *zarr_shape["s2"][1:]), dtype=np.uint16)
    if s1 is None:
        s1 = np.full((blocks.size, *zarr_shape["s1"][1:]), np.nan, dtype=np.float32)
    where_ = (slice(start, start + blocks.size),)
    return write_region(store, {"s2": (where_, s2), "s1": (where_, s1)}, (index,))


def _stored_shapes(store: str) -> dict[str, tuple[int, ...]]:
    import zarr

    group = zarr.open_group(store, mode="r")
    return {name: tuple(group[name].shape) for name in ("s2", "s1")}


# ------------------------------------------------------------------------------ checks


def _check_writable(store: Path) -> None:
    """Refuse, before any work, an output folder that cannot be written."""
    target = store if store.exists() else store.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
        raise InputError(
            expected("store", "a path in a writable folder", str(store),
                     f"{str(target)!r} is not writable; choose another path or fix permissions.")
        )  # fmt: skip


def _same_job(store: Path, probe: StoreSpec) -> bool:
    if not (store / "zarr.json").is_file():
        return False
    import zarr

    try:
        return zarr.open_group(str(store), mode="r").attrs.get(JOB_ATTR) == probe.fingerprint_json
    except Exception:
        return False


def _same_complete_job(store: Path, probe: StoreSpec) -> bool:
    if not _same_job(store, probe):
        return False
    import zarr

    return zarr.open_group(str(store), mode="r").attrs.get(COMPLETE_ATTR) is True


def _report_existing(
    store: Path, tiles: Sequence[PatchTile], settings: PatchSettings
) -> PatchStoreReport:
    import zarr

    group = zarr.open_group(str(store), mode="r")
    attrs = dict(group.attrs)
    regions = int(group["region_done"].shape[0])
    return PatchStoreReport(
        str(store), int(group["s2"].shape[0]), len(tiles), 0, regions, 0,
        int(attrs["discarded_partial"]), int(attrs["discarded_invalid"]),
        int(attrs["discarded_unpaired"]),
    )  # fmt: skip
