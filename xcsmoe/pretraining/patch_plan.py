"""Pure planning of a patch store: settings, patch grid, blocks, validity, layout, split.

No pixel is read here. A tile of ``H x W`` pixels is cut on a fixed grid of
``H // P`` rows by ``W // P`` columns of ``P``-pixel patches from its top-left corner;
patches that would cross the right or bottom edge are *partial*, never read, and
counted. The grid is read in *blocks* of up to ``block_patches`` x ``block_patches``
patches (one task each), so memory stays bounded by a block, not by a tile.

Scanning a block tells which of its patches are kept; :func:`plan_layout` orders kept
patches by (tile, row, column), cut into *regions* of whole Zarr chunks. The positions of
a tile's patches are fixed once it and every tile before it are scanned, so
:class:`LayoutStream` hands out regions to write while later tiles are still scanned.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from xcsmoe.errors import ConfigError, InputError, expected
from xcsmoe.pretraining.tiles import PatchTile
from xcsmoe.sensors import S1, S2

__all__ = [
    "Block",
    "LayoutStream",
    "PatchLayout",
    "PatchSettings",
    "model_patch_size",
    "plan_blocks",
    "plan_layout",
    "split_of",
]

LAYOUT_VERSION = 1


@dataclass(frozen=True)
class PatchSettings:
    """Every setting that changes a stored value (the job's identity, with the tiles)."""

    patch_size: int = 120
    bands_s2: tuple[str, ...] = S2.bands
    bands_s1: tuple[str, ...] = S1.bands
    require_pairs: bool = True
    val_fraction: float = 0.05
    seed: int = 0
    chunk_patches: int = 8
    region_chunks: int = 4
    block_patches: int = 8

    def __post_init__(self) -> None:
        for name in ("patch_size", "chunk_patches", "region_chunks", "block_patches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(expected(name, "a positive integer", value))
        if not isinstance(self.require_pairs, bool):
            raise ConfigError(expected("require_pairs", "True or False", self.require_pairs))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ConfigError(expected("seed", "an integer", self.seed))
        fraction = self.val_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not (0.0 <= fraction < 1.0)
        ):
            raise ConfigError(expected("val_fraction", "a number in [0, 1)", fraction))
        for name, spec in (("bands_s2", S2), ("bands_s1", S1)):
            if tuple(getattr(self, name)) != spec.bands:
                raise ConfigError(
                    expected(name, f"the model's bands {list(spec.bands)}", getattr(self, name),
                             "Patch stores hold every band of both sensors in model order.")
                )  # fmt: skip

    @property
    def region_patches(self) -> int:
        return self.chunk_patches * self.region_chunks

    def fingerprint(self) -> dict[str, Any]:
        return {
            "layout": LAYOUT_VERSION,
            "patch_size": int(self.patch_size),
            "bands_s2": list(self.bands_s2),
            "bands_s1": list(self.bands_s1),
            "require_pairs": self.require_pairs,
            "val_fraction": float(self.val_fraction),
            "seed": int(self.seed),
            "chunk_patches": int(self.chunk_patches),
            "region_chunks": int(self.region_chunks),
        }


def model_patch_size(model: Any) -> int | None:
    """Patch size of ``model``: a variant name, a config, a module with ``.config``, or
    an int. ``None`` means no model (any patch size is allowed)."""
    if model is None:
        return None
    if isinstance(model, (int, np.integer)) and not isinstance(model, bool):
        if model < 1:
            raise ConfigError(expected("model", "a positive patch size", model))
        return int(model)
    if isinstance(model, str):
        from xcsmoe.model.registry import model_config

        return int(model_config(model).patch_size)
    config = getattr(model, "config", model)
    size = getattr(config, "patch_size", None)
    if isinstance(size, int):
        return size
    raise ConfigError(
        expected("model", "a variant name, a CSMoEConfig, a model or a patch size", model)
    )


def check_patch_size(patch_size: int, model: Any) -> None:
    """Refuse a patch size that the model's patch does not divide."""
    model_patch = model_patch_size(model)
    if model_patch is not None and patch_size % model_patch:
        lower = patch_size // model_patch * model_patch
        raise ConfigError(
            expected(
                "patch_size",
                f"a multiple of the model patch {model_patch}",
                patch_size,
                f"Use {lower or model_patch} or {lower + model_patch}.",
            )
        )


@dataclass(frozen=True)
class Block:
    """Patch rows ``row0:row1`` and columns ``col0:col1`` of tile ``tile``."""

    index: int
    tile: int
    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def patches(self) -> int:
        return (self.row1 - self.row0) * (self.col1 - self.col0)

    def pixel_window(self, patch: int) -> tuple[slice, slice]:
        return (
            slice(self.row0 * patch, self.row1 * patch),
            slice(self.col0 * patch, self.col1 * patch),
        )


def grid_shape(tile: PatchTile, patch: int) -> tuple[int, int]:
    """Full patch rows and columns of a tile."""
    return tile.geobox.shape.y // patch, tile.geobox.shape.x // patch


def partial_patches(tile: PatchTile, patch: int) -> int:
    """Patches crossing the tile's right or bottom edge."""
    height, width = tile.geobox.shape.y, tile.geobox.shape.x
    rows, cols = grid_shape(tile, patch)
    return -(-height // patch) * -(-width // patch) - rows * cols


def scanned(tile: PatchTile, settings: PatchSettings) -> bool:
    """Whether a tile's pixels are read: paired tiles always, single-sensor ones only
    when ``require_pairs`` is false."""
    return (tile.has_s1 and tile.has_s2) or not settings.require_pairs


def plan_blocks(tiles: Sequence[PatchTile], settings: PatchSettings) -> list[Block]:
    """Blocks of every tile to scan, tile by tile, row-major."""
    blocks: list[Block] = []
    step = settings.block_patches
    for t, tile in enumerate(tiles):
        if not scanned(tile, settings):
            continue
        rows, cols = grid_shape(tile, settings.patch_size)
        for r in range(0, rows, step):
            for c in range(0, cols, step):
                blocks.append(Block(len(blocks), t, r, min(r + step, rows), c, min(c + step, cols)))
    return blocks


def check_tiles(tiles: Sequence[PatchTile], settings: PatchSettings) -> None:
    """Refuse an empty input, and an input without any S1+S2 pair when pairs are needed."""
    if len(tiles) == 0:
        raise InputError(
            expected("selection", "at least one tile", "an empty selection",
                     "Select at least one item or grid cell.")
        )  # fmt: skip
    if settings.require_pairs and not any(t.has_s1 and t.has_s2 for t in tiles):
        sensors = sorted({"S2" if t.has_s2 else "S1" for t in tiles})
        raise InputError(
            expected(
                "selection",
                "at least one S1+S2 pair (require_pairs=True)",
                f"{len(tiles)} tile(s), {'/'.join(sensors)} only",
                "Add the other sensor's items, or pass require_pairs=False.",
            )
        )
    ids = [t.tile_id for t in tiles]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(expected("selection", "unique tile ids", f"duplicates {dupes[:3]}"))


def split_of(seed: int, tile_id: str, size: int, val_fraction: float) -> np.ndarray:
    """Train (0) / validation (1) of each of ``size`` grid patches of a tile (row-major).

    Seeded by ``seed`` and the tile id only, so a patch's split does not depend on the
    other tiles of the store.
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(tile_id.encode())])
    return (rng.random(size) < val_fraction).astype(np.uint8)


@dataclass(frozen=True)
class PatchLayout:
    """Final order of the kept patches and the regions they are written in.

    ``block``/``slot``: for each stored patch, its block and position among the block's
    kept patches; ``tile``/``row``/``col``: where it lies; ``has_s1``/``has_s2``: flags.
    """

    block: np.ndarray
    slot: np.ndarray
    tile: np.ndarray
    row: np.ndarray
    col: np.ndarray
    has_s1: np.ndarray
    has_s2: np.ndarray
    region_patches: int

    @property
    def size(self) -> int:
        return int(self.block.size)

    @property
    def regions(self) -> int:
        return -(-self.size // self.region_patches)

    def region(self, index: int) -> slice:
        start = index * self.region_patches
        return slice(start, min(start + self.region_patches, self.size))


def plan_layout(
    blocks: Sequence[Block], scans: Sequence[dict[str, Any]], settings: PatchSettings
) -> PatchLayout:
    """Order kept patches by (tile, row, column) from each block's scan result.

    A scan result holds ``kept`` (block-local row-major positions of kept patches) and
    ``has_s1``/``has_s2`` (flags of those patches).
    """
    parts = []
    for block, scan in zip(blocks, scans, strict=True):
        kept = np.asarray(scan["kept"], dtype=np.int64)
        width = block.col1 - block.col0
        parts.append(
            np.stack(
                [
                    np.full(kept.size, block.tile),
                    block.row0 + kept // width,
                    block.col0 + kept % width,
                    np.full(kept.size, block.index),
                    np.arange(kept.size),
                    np.asarray(scan["has_s1"], dtype=np.int64),
                    np.asarray(scan["has_s2"], dtype=np.int64),
                ],
                axis=1,
            )
        )
    table = np.concatenate(parts) if parts else np.empty((0, 7), dtype=np.int64)
    table = table[np.lexsort((table[:, 2], table[:, 1], table[:, 0]))]
    return PatchLayout(
        block=table[:, 3], slot=table[:, 4], tile=table[:, 0], row=table[:, 1],
        col=table[:, 2], has_s1=table[:, 5].astype(bool), has_s2=table[:, 6].astype(bool),
        region_patches=settings.region_patches,
    )  # fmt: skip


class LayoutStream:
    """The layout of a job, fixed tile by tile as block scans arrive in any order.

    ``add`` records a block's scan result; ``take_ready`` returns the regions whose every
    position became known since the last call (every region once all tiles are scanned);
    ``sources`` gives a ready region's patches as ``(start, blocks, slots)``; ``layout``
    the whole :class:`PatchLayout` at the end (equal to :func:`plan_layout` of all scans).
    """

    def __init__(self, tiles: int, blocks: Sequence[Block], settings: PatchSettings):
        self._settings = settings
        self._blocks_of: list[list[Block]] = [[] for _ in range(tiles)]
        for block in blocks:
            self._blocks_of[block.tile].append(block)
        self.scans: dict[int, dict[str, Any]] = {}
        self._parts: list[PatchLayout] = []  # one per fixed tile, in tile order
        self._starts: list[int] = []  # first position of each fixed tile
        self.known = 0  # patches whose positions are fixed
        self._handed_out = 0  # regions returned by take_ready
        self._fix_scanned_tiles()  # tiles without blocks (not read) are fixed, empty

    @property
    def tiles_fixed(self) -> int:
        return len(self._parts)

    @property
    def complete(self) -> bool:
        return self.tiles_fixed == len(self._blocks_of)

    def add(self, index: int, scan: dict[str, Any]) -> None:
        self.scans[index] = scan
        self._fix_scanned_tiles()

    def _fix_scanned_tiles(self) -> None:
        while not self.complete:
            own = self._blocks_of[self.tiles_fixed]
            if any(block.index not in self.scans for block in own):
                return
            part = plan_layout(own, [self.scans[block.index] for block in own], self._settings)
            self._starts.append(self.known)
            self._parts.append(part)
            self.known += part.size

    def take_ready(self) -> list[int]:
        per_region = self._settings.region_patches
        end = -(-self.known // per_region) if self.complete else self.known // per_region
        ready = list(range(self._handed_out, end))
        self._handed_out = max(end, self._handed_out)
        return ready

    def blocks_of(self, tile: int) -> list[Block]:
        return self._blocks_of[tile]

    def tile_span(self, tile: int) -> tuple[int, int]:
        """Positions ``[start, stop)`` of a fixed tile's kept patches."""
        return self._starts[tile], self._starts[tile] + self._parts[tile].size

    def sources(self, region: int) -> tuple[int, np.ndarray, np.ndarray]:
        start = region * self._settings.region_patches
        stop = min(start + self._settings.region_patches, self.known)
        first = bisect_right(self._starts, start) - 1
        blocks, slots = [], []
        for tile in range(first, self.tiles_fixed):
            if self._starts[tile] >= stop:
                break
            part, offset = self._parts[tile], self._starts[tile]
            window = slice(max(start - offset, 0), min(stop - offset, part.size))
            blocks.append(part.block[window])
            slots.append(part.slot[window])
        return start, np.concatenate(blocks), np.concatenate(slots)

    def layout(self) -> PatchLayout:
        if not self.complete:
            raise RuntimeError("the layout is fixed only once every tile is scanned")
        if not self._parts:
            return plan_layout([], [], self._settings)
        joined = {
            f.name: np.concatenate([getattr(p, f.name) for p in self._parts])
            for f in fields(PatchLayout)
            if f.name != "region_patches"
        }
        return PatchLayout(**joined, region_patches=self._settings.region_patches)
