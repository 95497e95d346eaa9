"""Execution of a patch store job on Dask: block scans and region writes, streamed.

Worker side:

* :func:`scan_block` reads one block of a tile straight into patches, keeps the patches
  whose every pixel is valid, commits a small JSON result (which patches were kept)
  beside the store and returns the kept patches, which stay in the worker's memory (the
  client reads the committed result, never the pixels);
* :func:`write_patch_region` takes a region's patches from the scans that hold them
  (Dask moves a scan's arrays when they are on another worker), writes its ``s2``/``s1``
  chunks, then sets the region's marker.

Client side, :func:`stream_patches` submits the scans in tile order and fixes the layout
tile by tile as results arrive (:class:`~xcsmoe.pretraining.patch_plan.LayoutStream`).
Each region whose positions are all fixed is written at once, ahead of the scans still
queued; a tile's patches are released once every region holding them is written. Scans
run at most ``window`` blocks ahead of the earliest unfinished one, so memory holds a
few blocks, not the job. Pixels go from the GeoTIFFs to the store's chunks with no
intermediate file (and no staging objects in the bucket of a store at a URL). The store
skeleton is created when the first region is ready, so a job without any valid patch
leaves nothing behind.

Resume: scan results stay until the store is complete, and a region whose marker is set
is never rewritten. A rerun reads again only the tiles that have a region without a
marker (its pixels were in memory) or no committed scan; every other tile's positions
come from its committed result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from xcsmoe.pretraining.patch_plan import Block, LayoutStream, PatchSettings
from xcsmoe.pretraining.staging import (
    Staging,
    commit_result,
    read_results,
    result_name,
    staged_names,
)
from xcsmoe.pretraining.tiles import PatchTile
from xcsmoe.regionstore import StoreStatus, write_region
from xcsmoe.storage import StoreLocation

__all__ = ["ScannedBlock", "StreamOutcome", "scan_block", "stream_patches", "write_patch_region"]

SENSOR_FILLS = (("s2", 0), ("s1", np.nan))  # sensors and the value of "absent"

# (result, s2, s1): the JSON result and the kept patches, ``(k, C, P, P)`` or None
ScannedBlock = tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]


# ------------------------------------------------------------------------- worker side


def scan_block(
    tile: PatchTile, block: Block, *, settings: PatchSettings, scan_dir: Staging
) -> ScannedBlock:
    """Read one block and keep its valid patches; commit the result, return the patches.

    Returned: the result (``kept`` block-local positions, ``has_s2``/``has_s1`` flags,
    ``invalid`` count), ``s2`` ``(k, 10, P, P)`` uint16 (0 where a patch has no S2) and
    ``s1`` ``(k, 2, P, P)`` float32 (NaN where none), ``None`` for a sensor no kept patch
    has. ``scan_dir`` is a local folder or, for a store at a URL, the
    :class:`~xcsmoe.storage.StoreLocation` of the staging prefix.
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
    patches: list[np.ndarray | None] = []
    for (_, fill), values, present in zip(
        SENSOR_FILLS, (cut.s2, cut.s1), (has_s2, has_s1), strict=True
    ):
        if values is None or not present.any():
            patches.append(None)
            continue
        values = values if kept.size == len(values) else values[kept]  # no copy: all kept
        if not present.all():
            values[~present] = fill
        patches.append(values)
    result = {
        "kept": kept.tolist(),
        "has_s2": has_s2.tolist(),
        "has_s1": has_s1.tolist(),
        "invalid": int(block.patches - kept.size),
    }
    commit_result(scan_dir, result_name(block.index), result)
    return result, patches[0], patches[1]


def _slot_runs(blocks: np.ndarray, slots: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(block, first slot, stop slot, first row in the region)`` of each run of a
    region's patches that are consecutive kept patches of one block."""
    breaks = np.flatnonzero((np.diff(blocks) != 0) | (np.diff(slots) != 1)) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [blocks.size]])
    return [
        (int(blocks[a]), int(slots[a]), int(slots[b - 1]) + 1, int(a))
        for a, b in zip(starts, stops, strict=True)
    ]


def write_patch_region(
    store: str | StoreLocation,
    index: int,
    sources: tuple[int, np.ndarray, np.ndarray],
    scanned: Mapping[int, ScannedBlock],
) -> tuple[int, ...]:
    """Write the patches of region ``index``, then its marker.

    ``sources``: the region's first position, and the block and kept-patch slot of each
    of its patches; ``scanned``: the scans of those blocks. A run of one block's patches
    is written as it is (no copy); a region made of several blocks is gathered first. A
    sensor that no patch of the region holds is not written: its chunks stay absent,
    which Zarr reads as the fill value (0 for ``s2``, NaN for ``s1``). Chunks are written
    whole, without Zarr's empty-chunk comparison (only ``require_pairs=False`` stores can
    have a chunk of fill values; it reads the same).
    """
    start, blocks, slots = sources
    runs = _slot_runs(blocks, slots)
    gathered: dict[str, np.ndarray] = {}
    for position, (sensor, fill) in enumerate(SENSOR_FILLS, start=1):
        pieces = [(scanned[block][position], first, stop, at) for block, first, stop, at in runs]
        if all(values is None for values, *_ in pieces):
            continue
        if len(pieces) == 1:
            values, first, stop, _ = pieces[0]
            gathered[sensor] = values[first:stop]
            continue
        like = next(values for values, *_ in pieces if values is not None)
        out = np.empty((blocks.size, *like.shape[1:]), like.dtype)
        for values, first, stop, at in pieces:
            out[at : at + stop - first] = fill if values is None else values[first:stop]
        gathered[sensor] = out
    where = (slice(start, start + blocks.size),)
    values = {sensor: (where, array) for sensor, array in gathered.items()}
    return write_region(store, values, (index,), write_empty_chunks=True)


# ------------------------------------------------------------------------- client side


@dataclass(frozen=True)
class StreamOutcome:
    """What :func:`stream_patches` did: the fixed layout, tasks run, the store's status."""

    stream: LayoutStream
    scanned: int
    written: int
    status: StoreStatus


def stream_patches(
    tiles: Sequence[PatchTile],
    blocks: Sequence[Block],
    settings: PatchSettings,
    *,
    client: Any,
    scan_dir: Staging,
    target: str | StoreLocation,
    status: StoreStatus,
    create: Callable[[StoreStatus], StoreStatus],
    window: int | None = None,
    progress: bool = True,
) -> StreamOutcome:
    """Scan the blocks whose pixels are needed and write every region without a marker.

    ``status``: the store as :func:`~xcsmoe.regionstore.check_store` found it (its markers
    say which regions are written); ``create(status)`` makes the skeleton, called once,
    when the first region is to be written. ``window``: blocks a scan may run ahead of
    the earliest unfinished one (default: 2 per worker thread, at least 4). The first
    failing task cancels the others and is raised; committed scan results and region
    markers stay.
    """
    from distributed import as_completed

    per_region = settings.region_patches
    # writes go first, in order (priority >= 1), then scans in order (priority <= 0)
    write_priority = status.regions
    written_before = {int(i) for i in np.flatnonzero(status.done)}
    stream = LayoutStream(len(tiles), blocks, settings)
    names = staged_names(scan_dir)  # one listing, not one look-up per block
    earlier = [b.index for b in blocks if result_name(b.index) in names]
    for index, result in zip(earlier, read_results(scan_dir, earlier), strict=True):
        stream.add(index, result)

    def regions_of(tile: int) -> set[int]:
        first, stop = stream.tile_span(tile)
        return set(range(first // per_region, -(-stop // per_region))) if stop > first else set()

    written_tiles = {t for t in range(stream.tiles_fixed) if regions_of(t) <= written_before}
    todo = [b for b in blocks if b.tile not in written_tiles]  # their pixels are needed
    if window is None:
        threads = sum(client.nthreads().values()) or 1
        window = max(4, 2 * threads)

    scans: dict[int, Any] = {}  # block -> future of its ScannedBlock, until written
    unwritten_of_tile: dict[int, set[int]] = {}  # fixed tiles with a region to write
    # future key -> (future, "scan", block) or (future, "write", region), until it finishes
    running: dict[str, tuple[Any, str, int]] = {}
    pending = as_completed()
    finished: set[int] = set()  # scans finished (block indices)
    earliest = submitted = tiles_seen = written = 0  # earliest: first unfinished in todo
    deferred: list[int] = []  # ready regions waiting for their scans to be submitted

    def track(kind: str, index: int, future: Any) -> None:
        running[future.key] = (future, kind, index)
        pending.add(future)

    def submit_scans() -> None:
        nonlocal submitted, earliest
        while earliest < len(todo) and todo[earliest].index in finished:
            earliest += 1
        while submitted < min(earliest + window, len(todo)):
            block = todo[submitted]
            future = client.submit(
                scan_block, tiles[block.tile], block, settings=settings, scan_dir=scan_dir,
                priority=-block.index, pure=False,
            )  # fmt: skip
            scans[block.index] = future
            track("scan", block.index, future)
            submitted += 1

    def release(tile: int) -> None:
        for block in stream.blocks_of(tile):
            scans.pop(block.index, None)

    def hand_out() -> None:
        """Follow newly fixed tiles; submit the writes of newly ready regions."""
        nonlocal tiles_seen, status
        for tile in range(tiles_seen, stream.tiles_fixed):
            left = regions_of(tile) - written_before
            if left:
                unwritten_of_tile[tile] = left
            else:
                release(tile)
        tiles_seen = stream.tiles_fixed
        deferred.extend(r for r in stream.take_ready() if r not in written_before)
        for region in list(deferred):
            sources = stream.sources(region)
            blocks_needed = [int(b) for b in np.unique(sources[1])]
            if any(b not in scans for b in blocks_needed):
                continue  # positions known from a committed result, pixels not read yet
            deferred.remove(region)
            if not status.exists:
                status = create(status)
            future = client.submit(
                write_patch_region, target, region, sources,
                {b: scans[b] for b in blocks_needed}, priority=write_priority - region,
                pure=False,
            )  # fmt: skip
            track("write", region, future)

    bar = tqdm(total=len(todo), desc="scanning and writing", unit="block", disable=not progress)
    try:
        submit_scans()
        hand_out()
        for batch in pending.batches():
            scanned = []
            for future in batch:
                _, kind, index = running.pop(future.key)
                if future.status != "finished":
                    future.result()  # raises the task's error
                if kind == "scan":
                    scanned.append(index)
                    continue
                written += 1
                for tile in [t for t, left in unwritten_of_tile.items() if index in left]:
                    left = unwritten_of_tile[tile]
                    left.discard(index)
                    if not left:
                        del unwritten_of_tile[tile]
                        release(tile)
            # a scan's patches stay on its worker: the client reads the committed result
            for index, result in zip(scanned, read_results(scan_dir, scanned), strict=True):
                stream.add(index, result)
                finished.add(index)
            bar.update(len(scanned))
            bar.set_postfix(regions=written, refresh=False)
            submit_scans()
            hand_out()
    except BaseException:
        client.cancel([future for future, *_ in running.values()] + list(scans.values()))
        raise
    finally:
        bar.close()
    if deferred:  # cannot happen: a region's tiles are read when it has no marker
        raise RuntimeError(f"regions {deferred[:5]} were never written")
    return StreamOutcome(stream, len(todo), written, status)
