"""Execution of a patch store job on Dask: block scans and region writes, streamed.

Worker side:

* :func:`scan_block` reads one block of a tile straight into patches, keeps the patches
  whose every pixel is valid and stages them, raw and uncompressed, beside the store,
  with a small JSON result written last (the block's commit marker);
* :func:`write_patch_region` copies a region's staged patches into its ``s2``/``s1``
  chunks, then sets the region's marker.

Client side, :func:`stream_patches` submits every scan, in tile order, and fixes the
layout tile by tile as results arrive (:class:`~xcsmoe.pretraining.patch_plan.LayoutStream`).
Each region whose positions are all fixed is written at once, ahead of the scans still
queued, and a tile's staged pixels are removed as soon as every region holding its
patches is written. Scans and writes overlap (no barrier between two passes), staging
holds about the tiles in flight rather than the whole job, and the page cache freed by
one tile's staging is reused by the next. The store skeleton is created when the first
region is ready, so a job without any valid patch leaves nothing behind.

Resume: JSON results stay until the store is complete, so a rerun rescans only blocks
without one; a region whose marker is set is never rewritten, and the pixels of a region
without a marker are still staged (they are removed only after its marker is set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from xcsmoe.pretraining.patch_plan import Block, LayoutStream, PatchSettings
from xcsmoe.pretraining.staging import (
    Staging,
    commit_result,
    load_staged,
    read_results,
    remove_staged,
    result_name,
    stage_array,
    staged_names,
)
from xcsmoe.pretraining.tiles import PatchTile
from xcsmoe.regionstore import StoreStatus, write_region
from xcsmoe.storage import StoreLocation

__all__ = ["StreamOutcome", "scan_block", "stream_patches", "write_patch_region"]

SENSOR_FILLS = (("s2", 0), ("s1", np.nan))  # staged sensors and the value of "absent"
WRITE_PRIORITY = 1  # ahead of every scan (scans have priority -block index <= 0)


def _staged_name(block: int, sensor: str) -> str:
    return result_name(block).replace(".json", f"-{sensor}.npy")


# ------------------------------------------------------------------------- worker side


def scan_block(
    tile: PatchTile, block: Block, *, settings: PatchSettings, scan_dir: Staging
) -> dict[str, Any]:
    """Read one block, keep its valid patches, stage them; returns the result.

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
    for (sensor, fill), values, present in zip(
        SENSOR_FILLS, (cut.s2, cut.s1), (has_s2, has_s1), strict=True
    ):
        if values is None or not present.any():
            continue
        staged = values if kept.size == len(values) else values[kept]  # no copy: all kept
        if not present.all():
            staged[~present] = fill
        stage_array(scan_dir, _staged_name(block.index, sensor), staged)
    result = {
        "kept": kept.tolist(),
        "has_s2": has_s2.tolist(),
        "has_s1": has_s1.tolist(),
        "invalid": int(block.patches - kept.size),
    }
    commit_result(scan_dir, result_name(block.index), result)
    return result


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
    """Gather the staged patches of region ``index`` and write them, then its marker.

    ``sources``: the region's first position, and the block and staged row of each of its
    patches. Rows of one block in a row are written as staged (no copy); a region made
    of several blocks is gathered into one array first. A sensor that no patch of the
    region holds is not written: its chunks stay absent, which Zarr reads as the fill
    value (0 for ``s2``, NaN for ``s1``). Chunks are written whole, without Zarr's
    empty-chunk comparison (only ``require_pairs=False`` stores can have a chunk of fill
    values; it reads the same).
    """
    start, blocks, slots = sources
    runs = _slot_runs(blocks, slots)
    gathered: dict[str, np.ndarray] = {}
    for sensor, fill in SENSOR_FILLS:
        staged_of = {  # one read (one GET at a URL) per block
            block: load_staged(scan_dir, _staged_name(block, sensor))
            for block in dict.fromkeys(run[0] for run in runs)
        }
        pieces = [(staged_of[block], first, stop, at) for block, first, stop, at in runs]
        if all(staged is None for staged, *_ in pieces):
            continue
        if len(pieces) == 1:
            staged, first, stop, _ = pieces[0]
            gathered[sensor] = staged[first:stop]
            continue
        like = next(staged for staged, *_ in pieces if staged is not None)
        out = np.empty((blocks.size, *like.shape[1:]), like.dtype)
        for staged, first, stop, at in pieces:
            out[at : at + stop - first] = fill if staged is None else staged[first:stop]
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
    progress: bool = True,
) -> StreamOutcome:
    """Scan every block not scanned yet and write every region whose marker is unset.

    ``status``: the store as :func:`~xcsmoe.regionstore.check_store` found it (its markers
    say which regions are written); ``create(status)`` makes the skeleton, called once,
    when the first region is to be written. The first failing task cancels the others
    and is raised; everything committed so far (scan results, region markers) stays.
    """
    from distributed import as_completed

    stream = LayoutStream(len(tiles), blocks, settings)
    names = staged_names(scan_dir)  # one listing, not one look-up per block
    earlier = [b.index for b in blocks if result_name(b.index) in names]
    for index, scan in zip(earlier, read_results(scan_dir, earlier), strict=True):
        stream.add(index, scan)
    todo = [b for b in blocks if result_name(b.index) not in names]
    blocks_of_tile: dict[int, list[int]] = {}
    for block in blocks:
        blocks_of_tile.setdefault(block.tile, []).append(block.index)
    per_region = settings.region_patches
    written_before = {int(i) for i in np.flatnonzero(status.done)}
    unwritten_of_tile: dict[int, set[int]] = {}  # fixed tiles whose pixels are staged
    tiles_seen = written = 0
    tasks: dict[str, tuple[str, int]] = {}  # future key -> ("scan", block) | ("write", region)
    futures: list[Any] = []
    pending = as_completed()

    def submit(kind: str, index: int, function: Callable[..., Any], *args: Any, **kw: Any) -> None:
        future = client.submit(function, *args, pure=False, **kw)
        tasks[future.key] = (kind, index)
        futures.append(future)
        pending.add(future)

    def remove_pixels(tile: int) -> None:
        names = [_staged_name(i, s) for i in blocks_of_tile.get(tile, ()) for s, _ in SENSOR_FILLS]
        remove_staged(scan_dir, names)

    def region_written(region: int) -> None:
        for tile in [t for t, left in unwritten_of_tile.items() if region in left]:
            unwritten_of_tile[tile].discard(region)
            if not unwritten_of_tile[tile]:
                del unwritten_of_tile[tile]
                remove_pixels(tile)

    def hand_out() -> None:
        """Track newly fixed tiles, and submit the writes of newly ready regions."""
        nonlocal tiles_seen, status
        for tile in range(tiles_seen, stream.tiles_fixed):
            first, stop = stream.tile_span(tile)
            regions = range(first // per_region, -(-stop // per_region)) if stop > first else ()
            left = set(regions) - written_before
            if left:
                unwritten_of_tile[tile] = left
            else:
                remove_pixels(tile)
        tiles_seen = stream.tiles_fixed
        for region in stream.take_ready():
            if region in written_before:
                continue
            if not status.exists:
                status = create(status)
            sources = stream.sources(region)
            submit("write", region, write_patch_region, target, scan_dir, region, sources,
                   priority=WRITE_PRIORITY)  # fmt: skip

    bar = tqdm(total=len(todo), desc="scanning and writing", unit="block", disable=not progress)
    try:
        hand_out()
        for block in todo:
            submit("scan", block.index, scan_block, tiles[block.tile], block, settings=settings,
                   scan_dir=scan_dir, priority=-block.index)  # fmt: skip
        for future in pending:
            kind, index = tasks.pop(future.key)
            result = future.result()
            if kind == "scan":
                stream.add(index, result)
                bar.update(1)
            else:
                written += 1
                region_written(index)
                bar.set_postfix(regions=written, refresh=False)
            hand_out()
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        bar.close()
    return StreamOutcome(stream, len(todo), written, status)
