"""Execution: tiles → valid patches → a Zarr v3 patch store, on Dask, resumably.

The number of valid patches of a tile is known only after its pixels are read, while
resumable region writes need fixed positions and the final store must hold exactly the
valid patches. Both are met with one read of every pixel, in two passes:

1. **Scan** (one task per block of a tile's patch grid): read the block straight into
   patches in the store's dtypes (``source.read_patches``: GeoTIFF bands copied once, no
   float copy of S2), keep the patches whose every pixel is valid (both sensors, or
   either one when ``require_pairs=False``), and stage the kept patches, raw and
   uncompressed, beside the store with a small JSON result written last (the commit
   marker: ``os.replace`` on disk, one atomic PUT on object stores). A rerun skips blocks
   whose result exists; the staging carries the job fingerprint. A local store stages in
   the hidden sibling folder ``.<store>.scan/``; a store at a URL in the sibling prefix
   ``<store>.scan/<fingerprint hash>/`` of the same bucket, so workers that share no disk
   with the client (or each other) stage and read back through the store's filesystem.
2. **Plan** (pure, :func:`~xcsmoe.pretraining.patch_plan.plan_layout`): kept patches in
   (tile, row, column) order; per-patch metadata (ids, times, centre, transform, split)
   is written with the store skeleton; pixels are cut into regions of whole chunks.
3. **Write** (one task per region, :mod:`xcsmoe.regionstore`): copy the staged patches of
   a region into the ``s2``/``s1`` chunks, then set its marker. A rerun writes only the
   regions without a marker and ends byte-identical. The staging is removed once the
   store is complete.

Where the time goes (8 real Major TOM tiles, 2 workers): reading the GeoTIFFs, then zstd
and Zarr's chunk handling; staging costs a copy to the page cache. A full disk or a
read-only folder met on the way (local stores) is reported as an :class:`InputError`;
everything written so far stays and the same call resumes.

``store`` is a local path or a URL (``s3://``, ``gs://``, ``az://``, ``file://``,
``memory://`` for in-process workers; :mod:`xcsmoe.storage`) with ``storage_options``:
markers, fingerprint and completion flag live in the store, so resume and refusal work
the same on object storage.

Layout (the contract with the loader): :mod:`xcsmoe.pretraining.patch_meta`; one record
per patch along ``patch``, ``s2`` uint16 DN and ``s1`` float32 linear power, 8 patches per
zstd-compressed chunk by default.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
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
from xcsmoe.pretraining.staging import (
    Staging,
    commit_result,
    load_staged,
    open_staging,
    read_results,
    remove_staging,
    result_name,
    stage_array,
    staged_names,
)
from xcsmoe.pretraining.tiles import PatchTile, tiles_from_items, tiles_from_selection
from xcsmoe.regionstore import (
    COMPLETE_ATTR,
    JOB_ATTR,
    StoreSpec,
    check_cluster_args,
    check_store,
    check_workers_reach,
    connect,
    create_store,
    finish_store,
    run_tasks,
    write_region,
)
from xcsmoe.storage import (
    StoreLocation,
    inspect_location,
    local_folder,
    read_root_metadata,
    store_location,
)

__all__ = ["WORKER_CONFIG", "PatchStoreReport", "build_patch_store", "resolve_tiles", "scan_block"]

#: Dask config for the processes of a store-building cluster. Dask starts workers with
#: ``MALLOC_TRIM_THRESHOLD_=65536``, which freezes glibc's mmap threshold at 128 KiB and
#: hands freed heap back to the kernel at once: every block-sized array is then fresh
#: memory whose pages fault in one by one, and the kernel took as much CPU as the work
#: (scanning 8 real Major TOM tiles: 0.51 s in a plain process, 0.81-0.91 s with Dask's
#: setting, 0.51 s with these). Arrays up to 32 MiB (a block of patches) come from the
#: heap, and up to 64 MiB of freed heap is kept for the next block. Applied to the
#: LocalCluster that ``build_patch_store`` starts; set it around your own
#: ``LocalCluster(...)`` (or export the variables on your workers) to get the same.
WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 32 * 2**20,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 64 * 2**20,
}


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
    store: str | os.PathLike[str] | StoreLocation,
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
    storage_options: Mapping[str, Any] | None = None,
) -> PatchStoreReport:
    """Cut ``source`` into valid patches and write them to the Zarr v3 store ``store``.

    Args:
        store: a local folder or a URL (``s3://bucket/patches.zarr``, ``gs://``,
            ``az://``, ``file://``, or ``memory://`` for in-process workers; see
            :mod:`xcsmoe.storage`). Scans are staged beside it: in ``.<store>.scan/``
            for a folder, in ``<store>.scan/`` of the same bucket for a URL.
        storage_options: backend options for a URL ``store`` (e.g. s3fs's
            ``endpoint_url``, ``key``, ``secret``); by default the backend reads its
            environment variables (``AWS_*``) on the client and on every worker.
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

    Returns a :class:`PatchStoreReport`. Reruns of the same job resume. Every argument is
    checked and the store inspected (bucket, credentials, what is there) before a cluster
    starts or a byte is written.
    """
    if isinstance(store, os.PathLike) and not isinstance(store, Path):
        store = Path(store)
    location = store_location(store, storage_options)
    local = None  # the local folder as given (shown in the report), None for a URL
    if location.is_local:
        local = local_folder(store.url if isinstance(store, StoreLocation) else store)
    settings = PatchSettings(
        patch_size=patch_size, require_pairs=require_pairs, val_fraction=val_fraction,
        seed=seed, chunk_patches=chunk_patches, region_chunks=region_chunks,
        block_patches=block_patches,
    )  # fmt: skip
    check_patch_size(settings.patch_size, model)
    check_cluster_args(client, n_workers)
    check_workers_reach(location, client)  # memory:// is not shared by processes
    tiles = resolve_tiles(source, items)
    check_tiles(tiles, settings)
    fingerprint = {**settings.fingerprint(), "tiles": [t.identity() for t in tiles]}
    probe = StoreSpec(xr.Dataset(), {}, ("region",), (0,), fingerprint)
    attrs = _existing_attrs(location)  # read only: fine in a read-only folder
    same_job = attrs.get(JOB_ATTR) == probe.fingerprint_json
    if same_job and attrs.get(COMPLETE_ATTR) is True:
        return _report_existing(location, str(local or location.url), tiles)
    if local is not None:
        _check_writable(local)
    if not same_job:
        check_store(location, probe, overwrite=overwrite)  # raises for another job's store
    blocks = plan_blocks(tiles, settings)
    with (
        _write_errors_reported(local) if local is not None else nullcontext(),
        dask.config.set(WORKER_CONFIG),
        connect(client, n_workers=n_workers) as active,
    ):
        check_workers_reach(location, active)
        scan_dir = open_staging(location, local, probe.fingerprint_json)
        staged = staged_names(scan_dir)  # one listing, not one look-up per block
        todo = [b for b in blocks if result_name(b.index) not in staged]
        scan = dask.delayed(scan_block, pure=True)
        run_tasks(
            [scan(tiles[b.tile], b, settings=settings, scan_dir=scan_dir) for b in todo],
            active, desc="scanning tiles", progress=progress,
        )  # fmt: skip
        scans = read_results(scan_dir, [b.index for b in blocks])
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
        status = check_store(location, spec, overwrite=overwrite)
        if not status.complete:
            status = create_store(status, spec)
            write = dask.delayed(write_patch_region, pure=True)
            target = str(local) if local is not None else location
            tasks = [
                write(target, scan_dir, index[0], _region_sources(layout, index[0]))
                for index in status.todo
            ]
            run_tasks(tasks, active, desc="writing patches", progress=progress)
        complete = finish_store(location)
    if complete:
        remove_staging(scan_dir)
    return PatchStoreReport(
        str(local or location.url), layout.size, len(tiles), len(todo), layout.regions,
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
    tile: PatchTile, block: Block, *, settings: PatchSettings, scan_dir: Staging
) -> dict[str, Any]:
    """Worker side: read one block, keep its valid patches, stage them; returns the result.

    Staged: ``block-<i>-s2.npy`` ``(k, 10, P, P)`` uint16 (0 where a patch has no S2) and
    ``block-<i>-s1.npy`` ``(k, 2, P, P)`` float32 (NaN where none), then the JSON result
    (last: its presence commits the block). ``scan_dir`` is a local folder or, for a store
    at a URL, the :class:`~xcsmoe.storage.StoreLocation` of the staging prefix.
    """
    ys, xs = block.pixel_window(settings.patch_size)
    cut = tile.source.read_patches(
        tile.geobox[ys, xs], patch=settings.patch_size, bands_s2=settings.bands_s2,
        bands_s1=settings.bands_s1,
    )  # fmt: skip
    valid_s2, valid_s1 = cut.valid_s2, cut.valid_s1
    keep = valid_s2 & valid_s1 if settings.require_pairs else valid_s2 | valid_s1
    kept = np.flatnonzero(keep)
    has_s2, has_s1 = valid_s2[kept], valid_s1[kept]
    name = result_name(block.index)
    for sensor, values, present, fill in (
        ("s2", cut.s2, has_s2, 0),
        ("s1", cut.s1, has_s1, np.nan),
    ):
        if values is None or not present.any():
            continue
        staged = values if kept.size == len(values) else values[kept]  # no copy: all kept
        if not present.all():
            staged[~present] = fill
        stage_array(scan_dir, name.replace(".json", f"-{sensor}.npy"), staged)
    result = {
        "kept": kept.tolist(),
        "has_s2": has_s2.tolist(),
        "has_s1": has_s1.tolist(),
        "invalid": int(block.patches - kept.size),
    }
    commit_result(scan_dir, name, result)
    return result


# -------------------------------------------------------------------------- write pass


def _region_sources(layout: PatchLayout, index: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Start, blocks and slots of the patches of region ``index`` (small arrays)."""
    region = layout.region(index)
    return region.start, layout.block[region], layout.slot[region]


def _slot_runs(blocks: np.ndarray, slots: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(block, first slot, stop slot, first row in the region)`` of each run of a
    region's patches that are consecutive staged rows of one block."""
    breaks = np.flatnonzero((np.diff(blocks) != 0) | (np.diff(slots) != 1)) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [blocks.size]])
    return [
        (int(blocks[a]), int(slots[a]), int(slots[b - 1]) + 1, int(a))
        for a, b in zip(starts, stops, strict=True)
    ]


def write_patch_region(
    store: str | StoreLocation,
    scan_dir: Staging,
    index: int,
    sources: tuple[int, np.ndarray, np.ndarray],
) -> tuple[int, ...]:
    """Worker side: gather a region's staged patches and write them, then its marker.

    A sensor that no patch of the region holds is not written: its chunks stay absent,
    which Zarr reads as the fill value (0 for ``s2``, NaN for ``s1``). Chunks of a sensor
    that some patch holds are written whole, without Zarr's empty-chunk comparison (only
    ``require_pairs=False`` stores can have such a chunk of fill values; it reads the same).
    """
    start, blocks, slots = sources
    runs = _slot_runs(blocks, slots)
    gathered: dict[str, np.ndarray] = {}
    for sensor, fill in (("s2", 0), ("s1", np.nan)):
        staged_of = {  # one read (one GET at a URL) per block
            block: load_staged(scan_dir, result_name(block).replace(".json", f"-{sensor}.npy"))
            for block in dict.fromkeys(run[0] for run in runs)
        }
        pieces = [(staged_of[block], first, stop, at) for block, first, stop, at in runs]
        if all(staged is None for staged, *_ in pieces):
            continue
        if len(pieces) == 1:  # one block, consecutive patches: its staged rows as they are
            staged, first, stop, _ = pieces[0]
            gathered[sensor] = staged[first:stop]
            continue
        like = next(staged for staged, *_ in pieces if staged is not None)
        out = np.empty((blocks.size, *like.shape[1:]), like.dtype)
        for staged, first, stop, at in pieces:
            out[at : at + stop - first] = fill if staged is None else staged[first:stop]
        gathered[sensor] = out
    where_ = (slice(start, start + blocks.size),)
    values = {k: (where_, v) for k, v in gathered.items()}
    return write_region(store, values, (index,), write_empty_chunks=True)


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


_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


@contextmanager
def _write_errors_reported(store: Path) -> Iterator[None]:
    """Turn a full disk (or file size limit) or a read-only folder met while writing the
    store or its staging folder into an :class:`InputError` that says how to go on.

    Nothing written is lost: staged blocks and finished regions stay, a region cut short
    has no marker and is rewritten, so the same call resumes once there is room.
    """
    try:
        yield
    except OSError as error:
        where = error.filename or error.filename2
        ours = where is not None and Path(os.fsdecode(where)).is_relative_to(store.parent)
        if error.errno not in _DISK_FULL and not (error.errno in _READ_ONLY and ours):
            raise
        what = "no room" if error.errno in _DISK_FULL else "not writable"
        raise InputError(
            expected("store", "a folder with room that xcsmoe can write",
                     f"{what}: {error.strerror or error}" + (f" ({where})" if where else ""),
                     "Free disk space (or raise the file size limit) or fix the folder's "
                     "permissions, then run the same command again: staged blocks and "
                     "written regions are kept and the job resumes.")
        ) from error  # fmt: skip


def _existing_attrs(location: StoreLocation) -> dict[str, Any]:
    """The root attributes of a Zarr store at ``location`` (one read), ``{}`` if none.

    A URL is inspected first, within seconds: a missing bucket, refused credentials or a
    silent endpoint raise :class:`~xcsmoe.errors.StorageError` before any work."""
    if location.is_local:
        if not (Path(location.url) / "zarr.json").is_file():
            return {}
    elif inspect_location(location).kind != "zarr":
        return {}
    root = read_root_metadata(location)
    attrs = root.get("attributes") if root else None
    return attrs if isinstance(attrs, dict) else {}


def _report_existing(
    location: StoreLocation, shown: str, tiles: Sequence[PatchTile]
) -> PatchStoreReport:
    import zarr

    group = zarr.open_group(**location.zarr_args(), mode="r")
    attrs = dict(group.attrs)
    regions = int(group["region_done"].shape[0])
    return PatchStoreReport(
        shown, int(group["s2"].shape[0]), len(tiles), 0, regions, 0,
        int(attrs["discarded_partial"]), int(attrs["discarded_invalid"]),
        int(attrs["discarded_unpaired"]),
    )  # fmt: skip
