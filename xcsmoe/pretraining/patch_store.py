"""Tiles → valid patches → a Zarr v3 patch store, on Dask, resumably (metadata → plan →
execution).

The number of valid patches of a tile is known only after its pixels are read, while
resumable region writes need fixed positions and the final store must hold exactly the
valid patches. Both are met with one read of every pixel:

1. **Check** (reads only): arguments, tiles, the store at the path (same job → resume,
   another job → refused unless ``overwrite``), before a cluster starts.
2. **Plan** (pure, :mod:`~xcsmoe.pretraining.patch_plan`): the blocks of every tile; the
   skeleton has room for every full patch (``capacity``), and regions of whole chunks
   over that room.
3. **Stream** (:mod:`~xcsmoe.pretraining.patch_pipeline`): every block is scanned (read;
   kept patches stay in the worker's memory, a JSON result naming them is committed);
   kept patches are ordered by (tile, row, column), and as soon as the positions of a
   region are fixed its patches are written and its marker set, while later tiles are
   still scanned.
4. **Finish**: ``s2``/``s1`` are cut to the kept patches, the per-patch metadata (ids,
   times, centre, transform, split, descriptors) and discard counts are written, the
   metadata consolidated and the store marked complete; the scan results are removed.

A rerun of the same job resumes: regions with a marker are not written again, tiles
whose regions all have one are not read again, and it ends byte-identical. A full disk or
a read-only folder met on the way (local stores) is reported as an :class:`InputError`;
everything written so far stays and the same call resumes. Scan results live in the
hidden sibling folder ``.<store>.scan/`` of a local store, and in the sibling prefix
``<store>.scan/<job hash>/`` of a store at a URL (``s3://``, ``gs://``, ``az://``,
``file://``, ``memory://`` for in-process workers; :mod:`xcsmoe.storage`), so workers that
share no disk with the client commit them through the store's filesystem.

Where the time goes (16 real Major TOM tiles, 2 workers, ``benchmarks/pretrain.py``):
GDAL reading the LZW GeoTIFFs (as much as plain rasterio reading), then zstd and writing
chunk files, then Dask's scheduling and the skeleton and metadata writes on the client.

Layout (the contract with the loader): :mod:`xcsmoe.pretraining.patch_meta`; one record
per patch along ``patch``, ``s2`` uint16 DN and ``s1`` float32 linear power, 8 patches per
zstd-compressed chunk by default. ``region_done`` has one marker per region of the
skeleton's room; regions past the last kept patch are empty and marked done.
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

from xcsmoe.cluster import check_cluster_args, check_workers_reach, connect
from xcsmoe.errors import InputError, expected
from xcsmoe.pretraining.patch_meta import (
    discard_counts,
    patch_metadata,
    store_encoding,
    store_skeleton,
)
from xcsmoe.pretraining.patch_pipeline import stream_patches
from xcsmoe.pretraining.patch_plan import (
    PatchLayout,
    PatchSettings,
    check_patch_size,
    check_tiles,
    plan_blocks,
)
from xcsmoe.pretraining.staging import open_staging, remove_staging
from xcsmoe.pretraining.tiles import PatchTile, tiles_from_items, tiles_from_selection
from xcsmoe.regionstore import (
    COMPLETE_ATTR,
    JOB_ATTR,
    MARKER,
    StoreSpec,
    check_store,
    consolidate,
    create_store,
    finish_store,
)
from xcsmoe.storage import (
    StoreLocation,
    inspect_location,
    local_folder,
    read_root_metadata,
    store_location,
)

__all__ = ["WORKER_CONFIG", "PatchStoreReport", "build_patch_store", "resolve_tiles"]

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
            :mod:`xcsmoe.storage`). Scan results are kept beside it: in ``.<store>.scan/``
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
    blocks = plan_blocks(tiles, settings)
    capacity = sum(block.patches for block in blocks)
    spec = StoreSpec(
        store_skeleton(capacity, settings),
        store_encoding(settings),
        ("region",),
        (-(-capacity // settings.region_patches),),
        {**settings.fingerprint(), "tiles": [t.identity() for t in tiles]},
    )
    attrs = _existing_attrs(location)  # read only: fine in a read-only folder
    if attrs.get(JOB_ATTR) == spec.fingerprint_json and attrs.get(COMPLETE_ATTR) is True:
        return _report_existing(location, str(local or location.url), tiles, settings)
    if local is not None:
        _check_writable(local)
    status = check_store(location, spec, overwrite=overwrite)  # refuses another job's store
    with (
        _write_errors_reported(local) if local is not None else nullcontext(),
        dask.config.set(WORKER_CONFIG),
        connect(client, n_workers=n_workers) as active,
    ):
        check_workers_reach(location, active)
        # scan results belong to this job *and* this block size (block indices name them)
        staging_job = f"{spec.fingerprint_json}|block_patches={settings.block_patches}"
        scan_dir = open_staging(location, local, staging_job)
        outcome = stream_patches(
            tiles, blocks, settings, client=active, scan_dir=scan_dir,
            target=str(local) if local is not None else location, status=status,
            create=lambda fresh: create_store(fresh, spec), progress=progress,
        )  # fmt: skip
        layout = outcome.stream.layout()
        scans = [outcome.stream.scans[block.index] for block in blocks]
        counts = discard_counts(tiles, blocks, scans, settings)
        if layout.size == 0:
            raise InputError(
                expected("selection", "at least one valid patch", f"none ({counts})",
                         "Select tiles with valid pixels, or a smaller patch_size.")
            )  # fmt: skip
        _write_layout(location, tiles, layout, settings, counts)
        complete = finish_store(location)
    if complete:
        remove_staging(scan_dir)
    return PatchStoreReport(
        str(local or location.url), layout.size, len(tiles), outcome.scanned, layout.regions,
        outcome.written, **counts,
    )  # fmt: skip


def _write_layout(
    location: StoreLocation,
    tiles: Sequence[PatchTile],
    layout: PatchLayout,
    settings: PatchSettings,
    counts: dict[str, int],
) -> None:
    """Fit the store to the kept patches once every region is written (idempotent: a
    rerun after a kill here does it again): mark the empty regions past the last patch,
    cut ``s2``/``s1`` to ``layout.size``, write the per-patch metadata and the discard
    counts, and consolidate the metadata."""
    import zarr

    group = zarr.open_group(**location.zarr_args(), mode="r+", use_consolidated=False)
    markers = group[MARKER]
    if markers.shape[0] > layout.regions:
        markers[layout.regions :] = 1  # room never used: nothing to write there
    for name in ("s2", "s1"):
        array = group[name]
        if array.shape[0] != layout.size:
            array.resize((layout.size, *array.shape[1:]))
    metadata = patch_metadata(tiles, layout, settings)
    metadata.attrs = {**group.attrs.asdict(), **counts}  # xarray replaces the group's attrs
    metadata.to_zarr(**location.zarr_args(), mode="a", consolidated=False, zarr_format=3)
    consolidate(location)


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
    store or its scan results into an :class:`InputError` that says how to go on.

    Nothing written is lost: scan results and finished regions stay, a region cut short
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
                     "permissions, then run the same command again: written regions are "
                     "kept and the job resumes.")
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
    location: StoreLocation, shown: str, tiles: Sequence[PatchTile], settings: PatchSettings
) -> PatchStoreReport:
    import zarr

    group = zarr.open_group(**location.zarr_args(), mode="r")
    attrs = dict(group.attrs)
    patches = int(group["s2"].shape[0])
    return PatchStoreReport(
        shown, patches, len(tiles), 0, -(-patches // settings.region_patches), 0,
        int(attrs["discarded_partial"]), int(attrs["discarded_invalid"]),
        int(attrs["discarded_unpaired"]),
    )  # fmt: skip
