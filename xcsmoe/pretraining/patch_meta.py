"""Per-patch metadata and the schema of a patch store (pure: no pixel is read).

:func:`store_skeleton` builds the Dataset that :mod:`xcsmoe.regionstore` creates the store
from: lazy ``s2`` ``(patch, band_s2, y, x)`` uint16 and ``s1`` ``(patch, band_s1, y, x)``
float32 (written later, region by region) with room for every patch that may be kept;
:func:`patch_metadata` the per-patch variables (flags, item ids, times, S2 offset, split,
centre lon/lat, CRS, affine transform, descriptors) written once the layout is complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from zarr.codecs import ZstdCodec

from xcsmoe.pretraining.patch_plan import (
    LAYOUT_VERSION,
    Block,
    PatchLayout,
    PatchSettings,
    grid_shape,
    partial_patches,
    scanned,
    split_of,
)
from xcsmoe.pretraining.tiles import PatchTile

__all__ = ["discard_counts", "patch_metadata", "store_encoding", "store_skeleton"]

ZSTD_LEVEL = 1


def discard_counts(
    tiles: Sequence[PatchTile],
    blocks: Sequence[Block],
    scans: Sequence[dict[str, Any]],
    settings: PatchSettings,
) -> dict[str, int]:
    patch = settings.patch_size
    unpaired = sum(int(np.prod(grid_shape(t, patch))) for t in tiles if not scanned(t, settings))
    return {
        "discarded_partial": sum(partial_patches(t, patch) for t in tiles),
        "discarded_invalid": sum(int(s["invalid"]) for s in scans),
        "discarded_unpaired": unpaired,
    }


def store_skeleton(capacity: int, settings: PatchSettings) -> xr.Dataset:
    """What the store is created with: lazy ``s2``/``s1`` with room for ``capacity``
    patches (every full patch of the tiles read; cut to the kept ones at the end), band
    coordinates and the job's settings as attributes."""
    patch = settings.patch_size
    # one dask chunk each: never computed, and a graph of one task costs nothing to build
    s2 = da.zeros((capacity, len(settings.bands_s2), patch, patch), dtype=np.uint16, chunks=-1)
    s1 = da.zeros((capacity, len(settings.bands_s1), patch, patch), dtype=np.float32, chunks=-1)
    data = {"s2": (("patch", "band_s2", "y", "x"), s2), "s1": (("patch", "band_s1", "y", "x"), s1)}
    attrs = {
        "xcsmoe_patch_store": LAYOUT_VERSION,
        "patch_size": int(patch),
        "bands_s2": list(settings.bands_s2),
        "bands_s1": list(settings.bands_s1),
        "val_fraction": float(settings.val_fraction),
        "seed": int(settings.seed),
        "require_pairs": bool(settings.require_pairs),
    }
    coords = {
        "band_s2": np.array(settings.bands_s2, dtype=object),
        "band_s1": np.array(settings.bands_s1, dtype=object),
    }
    out = xr.Dataset(data, coords=coords, attrs=attrs)
    out["s2"].attrs.update(units="DN", nodata=0, description="raw L2A digital numbers")
    out["s1"].attrs.update(units="linear power", description="backscatter, NaN = nodata")
    return out


def patch_metadata(
    tiles: Sequence[PatchTile], layout: PatchLayout, settings: PatchSettings
) -> xr.Dataset:
    """The per-patch variables of the kept patches, in store order (written last)."""
    meta = _patch_metadata(tiles, layout, settings)
    out = xr.Dataset({name: (dims, values) for name, (dims, values) in meta.items()})
    out["s2_offset"].attrs.update(units="DN", description="add to s2 before scaling")
    return out


def _patch_metadata(
    tiles: Sequence[PatchTile], layout: PatchLayout, settings: PatchSettings
) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    from pyproj import Transformer

    n, patch = layout.size, settings.patch_size
    lon, lat = np.empty(n), np.empty(n)
    transform = np.empty((n, 6))
    split = np.empty(n, dtype=np.uint8)
    for t in np.unique(layout.tile):
        tile = tiles[int(t)]
        sel = np.flatnonzero(layout.tile == t)
        rows, cols = layout.row[sel], layout.col[sel]
        a = tile.geobox.affine
        x0, y0 = cols * patch, rows * patch
        transform[sel] = np.stack(
            [np.full(sel.size, a.a), np.full(sel.size, a.b), a.c + a.a * x0 + a.b * y0,
             np.full(sel.size, a.d), np.full(sel.size, a.e), a.f + a.d * x0 + a.e * y0],
            axis=1,
        )  # fmt: skip
        cx, cy = x0 + patch / 2, y0 + patch / 2
        px, py = a.c + a.a * cx + a.b * cy, a.f + a.d * cx + a.e * cy
        to_lonlat = Transformer.from_crs(str(tile.geobox.crs), "EPSG:4326", always_xy=True)
        lon[sel], lat[sel] = to_lonlat.transform(px, py)
        grid_cols = grid_shape(tile, patch)[1]
        size = int(np.prod(grid_shape(tile, patch)))
        split[sel] = split_of(settings.seed, tile.tile_id, size, settings.val_fraction)[
            rows * grid_cols + cols
        ]
    index = layout.tile
    has_s1, has_s2 = layout.has_s1, layout.has_s2

    def per_tile(values: list[Any], dtype: Any, absent: Any, present: np.ndarray) -> np.ndarray:
        out = np.asarray(values, dtype=dtype)[index] if len(index) else np.empty(0, dtype)
        return np.where(present, out, np.asarray(absent, dtype=dtype))

    nat = np.datetime64("NaT", "ns")
    meta: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
        "has_s1": (("patch",), has_s1),
        "has_s2": (("patch",), has_s2),
        "s2_offset": (("patch",), per_tile([t.s2_offset for t in tiles], np.float32, 0, has_s2)),
        "split": (("patch",), split),
        "lon": (("patch",), lon),
        "lat": (("patch",), lat),
        "tile_id": (("patch",), np.asarray([t.tile_id for t in tiles], dtype=object)[index]),
        "item_s2": (("patch",), per_tile([t.item_s2 for t in tiles], object, "", has_s2)),
        "item_s1": (("patch",), per_tile([t.item_s1 for t in tiles], object, "", has_s1)),
        "time_s2": (
            ("patch",),
            per_tile([t.time_s2 or nat for t in tiles], "datetime64[ns]", nat, has_s2),
        ),
        "time_s1": (
            ("patch",),
            per_tile([t.time_s1 or nat for t in tiles], "datetime64[ns]", nat, has_s1),
        ),
        "crs": (("patch",), np.asarray([str(t.geobox.crs) for t in tiles], dtype=object)[index]),
        "transform": (("patch", "affine"), transform),
    }
    names = sorted({k for t in tiles for k, _ in t.descriptors})
    for name in names:
        values = [dict(t.descriptors).get(name, "") for t in tiles]
        meta[name] = (("patch",), np.asarray(values, dtype=object)[index])
    return meta


def store_encoding(settings: PatchSettings) -> dict[str, dict[str, Any]]:
    chunk = settings.chunk_patches
    compressors = (ZstdCodec(level=ZSTD_LEVEL),)
    encoding: dict[str, dict[str, Any]] = {
        "s2": {"chunks": (chunk, len(settings.bands_s2), settings.patch_size,
                          settings.patch_size), "compressors": compressors, "fill_value": 0},
        "s1": {"chunks": (chunk, len(settings.bands_s1), settings.patch_size,
                          settings.patch_size), "compressors": compressors},
    }  # fmt: skip
    return encoding
