"""Tiles: the units a patch store is cut from, and where their pixels come from.

A :class:`PatchTile` is one acquisition (an S2 item and/or its S1 partner) on one grid.
Its ``source`` reads any window of that grid into raw arrays in the convention of
:func:`xcsmoe.load_cube` (float32, NaN for nodata, S2 in DN, S1 in linear power) with
``read``, or straight into patches in the patch store's dtypes (S2 uint16 DN, S1 float32)
with per-patch validity with ``read_patches`` (what the patch store uses: no float copy of
the S2 bands, one copy from the file's pixels into the patches):

* :class:`StacSource` — STAC items through :func:`xcsmoe.load_cube` (every provider);
* :class:`RasterSource` — band GeoTIFFs of a published layout (see
  :mod:`xcsmoe.pretraining.readers`), nearest-neighbour onto the tile grid.

:func:`tiles_from_items` pairs S2 with S1 items (largest overlap, nearest time within a
tolerance); :func:`tiles_from_selection` does the same for the rows of a sampling
selection (its ``sample_id`` names items; descriptor columns travel with the tile).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox

from xcsmoe.errors import InputError, expected
from xcsmoe.pretraining.block_patches import (
    Arrays,
    BlockPatches,
    cut_into,
    patches_from_arrays,
    per_patch,
)
from xcsmoe.sensors import S1, S2, db_to_linear

__all__ = [
    "DESCRIPTOR_COLUMNS",
    "BlockPatches",
    "PatchTile",
    "RasterSource",
    "StacSource",
    "tiles_from_items",
    "tiles_from_selection",
]

DESCRIPTOR_COLUMNS = ("climate", "landcover", "stratum")


@dataclass(frozen=True)
class StacSource:
    """Pixels of STAC items, read with :func:`xcsmoe.load_cube` on any window geobox."""

    s2_items: tuple[pystac.Item, ...] = ()
    s1_items: tuple[pystac.Item, ...] = ()
    s1_tolerance: str = "3D"
    provider: Any = None

    def read(self, geobox: GeoBox, *, bands_s2: Sequence[str], bands_s1: Sequence[str]) -> Arrays:
        """Raw ``{"s2": (len(bands_s2), h, w), "s1": (len(bands_s1), h, w)}`` float32."""
        from xcsmoe.stac.load import load_cube

        bands = [*(bands_s2 if self.s2_items else ()), *(bands_s1 if self.s1_items else ())]
        cube = load_cube(
            list(self.s2_items) or None, list(self.s1_items) or None, geobox=geobox,
            bands=bands, chunks=-1, s1_tolerance=self.s1_tolerance, provider=self.provider,
        )  # fmt: skip
        cube = cube.isel(time=0).compute(scheduler="synchronous")
        out: Arrays = {"s2": None, "s1": None}
        if self.s2_items:
            out["s2"] = np.stack([cube[b].values for b in bands_s2]).astype(np.float32)
        if self.s1_items:
            out["s1"] = np.stack([cube[b].values for b in bands_s1]).astype(np.float32)
        return out

    def read_patches(
        self, geobox: GeoBox, *, patch: int, bands_s2: Sequence[str], bands_s1: Sequence[str]
    ) -> BlockPatches:
        """The window ``geobox`` (a whole number of patches) as :class:`BlockPatches`."""
        return patches_from_arrays(self.read(geobox, bands_s2=bands_s2, bands_s1=bands_s1), patch)


@dataclass(frozen=True)
class RasterSource:
    """Band GeoTIFFs (``band -> path``) of one acquisition per sensor.

    S2 files hold DN with 0 as nodata; S1 files hold backscatter in ``s1_units`` (``"dB"``
    or ``"linear"``), NaN as nodata. Bands are read onto the tile grid with nearest
    neighbour: an exact copy (or pixel repetition for coarser bands) when the file's grid
    is aligned with the tile grid, a GDAL nearest-neighbour warp otherwise.
    """

    s2_files: tuple[tuple[str, str], ...] = ()
    s1_files: tuple[tuple[str, str], ...] = ()
    s1_units: str = "dB"

    def read(self, geobox: GeoBox, *, bands_s2: Sequence[str], bands_s1: Sequence[str]) -> Arrays:
        out: Arrays = {"s2": None, "s1": None}
        if self.s2_files:
            files = dict(self.s2_files)
            out["s2"] = np.stack([_read_band(files[b], geobox, S2.nodata) for b in bands_s2])
        if self.s1_files:
            out["s1"] = self._read_s1(geobox, bands_s1)
        return out

    def _read_s1(self, geobox: GeoBox, bands_s1: Sequence[str]) -> np.ndarray:
        files = dict(self.s1_files)
        s1 = np.stack([_read_band(files[b], geobox, None) for b in bands_s1])
        return db_to_linear(s1).astype(np.float32) if self.s1_units == "dB" else s1

    def read_patches(
        self, geobox: GeoBox, *, patch: int, bands_s2: Sequence[str], bands_s1: Sequence[str]
    ) -> BlockPatches:
        """The window ``geobox`` (a whole number of patches) as :class:`BlockPatches`.

        uint16 S2 files are copied into the patches as they are, band by band (validity:
        no pixel equals the file's nodata); other S2 dtypes and S1 go through ``read``'s
        float32 convention.
        """
        height, width = geobox.shape.y, geobox.shape.x
        n = (height // patch) * (width // patch)
        s2 = s1 = None
        valid_s2 = valid_s1 = np.zeros(n, dtype=bool)
        if self.s2_files:
            import rasterio

            files = dict(self.s2_files)
            s2 = np.empty((n, len(bands_s2), patch, patch), dtype=np.uint16)
            valid = np.ones((height, width), dtype=bool)
            with rasterio.Env():  # one GDAL environment for every band, not one per open
                for b, band in enumerate(bands_s2):  # one band in memory at a time
                    raw, nodata = _read_native(files[band], geobox, S2.nodata)
                    if raw.dtype != np.uint16:
                        values = _as_float(raw, nodata)
                        ok = np.isfinite(values)
                        raw = np.where(ok, values, 0).astype(np.uint16)
                    else:
                        ok = raw != nodata if nodata is not None and not np.isnan(nodata) else True
                    valid &= ok
                    cut_into(s2, b, raw)
            valid_s2 = per_patch(valid, patch)
        if self.s1_files:
            cut = patches_from_arrays({"s1": self._read_s1(geobox, bands_s1)}, patch)
            s1, valid_s1 = cut.s1, cut.valid_s1
        return BlockPatches(s2, s1, valid_s2, valid_s1)


def _read_band(path: str, geobox: GeoBox, nodata: float | None) -> np.ndarray:
    """One band of ``path`` on ``geobox`` as float32 with NaN for nodata (nearest)."""
    return _as_float(*_read_native(path, geobox, nodata))


def _as_float(raw: np.ndarray, nodata: float | None) -> np.ndarray:
    out = raw.astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        out[raw == nodata] = np.nan
    return out


def _read_native(
    path: str, geobox: GeoBox, nodata: float | None
) -> tuple[np.ndarray, float | None]:
    """One band of ``path`` on ``geobox`` in the file's dtype, and its nodata (nearest)."""
    import rasterio
    from rasterio.warp import Resampling, reproject
    from rasterio.windows import Window

    height, width = geobox.shape.y, geobox.shape.x
    with rasterio.open(path) as src:
        nodata = src.nodata if src.nodata is not None else nodata
        factor, offset = _aligned(src, geobox)
        if factor is not None:  # same grid or an integer-coarser aligned grid: exact
            row0, col0 = offset
            window = Window(
                col0 // factor, row0 // factor,
                (col0 + width - 1) // factor - col0 // factor + 1,
                (row0 + height - 1) // factor - row0 // factor + 1,
            )  # fmt: skip
            inside = (
                window.col_off >= 0 and window.row_off >= 0
                and window.col_off + window.width <= src.width
                and window.row_off + window.height <= src.height
            )  # fmt: skip
            raw = src.read(1, window=window, boundless=not inside, fill_value=nodata or 0)
            if factor > 1:
                raw = raw.repeat(factor, axis=0).repeat(factor, axis=1)
                raw = raw[row0 % factor : row0 % factor + height, col0 % factor :][:, :width]
        else:
            raw = np.zeros((height, width), dtype=src.dtypes[0])
            reproject(
                rasterio.band(src, 1), raw, dst_transform=geobox.affine,
                dst_crs=str(geobox.crs), resampling=Resampling.nearest,
                src_nodata=nodata, dst_nodata=nodata if nodata is not None else 0,
            )  # fmt: skip
    return raw, nodata


def _aligned(src: Any, geobox: GeoBox) -> tuple[int | None, tuple[int, int]]:
    """``(factor, (row, col))`` when the file grid is the tile grid coarsened by an
    integer ``factor`` and pixel-aligned with it; ``(None, ...)`` otherwise."""
    from rasterio.crs import CRS

    if CRS.from_user_input(str(geobox.crs)) != src.crs:
        return None, (0, 0)
    a, s = geobox.affine, src.transform
    if a.b or a.d or s.b or s.d:
        return None, (0, 0)
    ratio = s.a / a.a
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > 1e-9 or abs(s.e / a.e - factor) > 1e-9:
        return None, (0, 0)
    col = (a.c - s.c) / a.a
    row = (a.f - s.f) / a.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None, (0, 0)
    return factor, (round(row), round(col))


@dataclass(frozen=True)
class PatchTile:
    """One acquisition to cut patches from: its grid, source and per-patch metadata."""

    tile_id: str
    geobox: GeoBox
    source: StacSource | RasterSource = field(repr=False)
    item_s2: str = ""
    item_s1: str = ""
    time_s2: np.datetime64 | None = None
    time_s1: np.datetime64 | None = None
    s2_offset: float = 0.0
    descriptors: tuple[tuple[str, str], ...] = ()

    @property
    def has_s2(self) -> bool:
        return bool(self.item_s2)

    @property
    def has_s1(self) -> bool:
        return bool(self.item_s1)

    def identity(self) -> dict[str, Any]:
        """What makes this tile's patches what they are (part of the job fingerprint)."""
        return {
            "id": self.tile_id,
            "s2": self.item_s2,
            "s1": self.item_s1,
            "crs": str(self.geobox.crs),
            "affine": [float(v) for v in list(self.geobox.affine)[:6]],
            "shape": [int(self.geobox.shape.y), int(self.geobox.shape.x)],
            "s2_offset": float(self.s2_offset),
            "descriptors": [list(d) for d in self.descriptors],
        }


# ------------------------------------------------------------------------ from STAC items


def tiles_from_items(
    items: Iterable[pystac.Item],
    *,
    s1_tolerance: str = "3D",
    provider: Any = None,
    descriptors: Mapping[str, Mapping[str, str]] | None = None,
) -> list[PatchTile]:
    """One tile per S2 item paired with its S1 partner, then one per unused S1 item.

    The partner is the S1 item covering at least half of the S2 footprint that is
    nearest in time within ``s1_tolerance``. ``descriptors``: ``item id -> {column: value}``.
    """
    from xcsmoe.stac.plan import plan_cube

    s2_items, s1_items = _split(items, provider)
    used: set[int] = set()
    tiles = []
    for s2 in s2_items:
        partner = _partner(s2, s1_items, pd.Timedelta(s1_tolerance))
        if partner is not None:
            used.add(partner)
        s1 = (s1_items[partner],) if partner is not None else ()
        plan = plan_cube([s2], list(s1) or None, provider=provider, s1_tolerance=s1_tolerance)
        tiles.append(_stac_tile(s2, s1, plan, s1_tolerance, provider, descriptors))
    for index, s1_item in enumerate(s1_items):
        if index not in used:
            plan = plan_cube(None, [s1_item], provider=provider)
            tiles.append(_stac_tile(None, (s1_item,), plan, s1_tolerance, provider, descriptors))
    return tiles


def tiles_from_selection(
    selection: Any, items: Iterable[pystac.Item], **kwargs: Any
) -> list[PatchTile]:
    """Tiles of the items a sampling selection names (``sample_id``), with the
    selection's descriptor columns (``climate``, ``landcover``, ``stratum``) attached.

    S1 items overlapping a selected S2 item are considered as its partners.
    """
    import geopandas as gpd

    if not isinstance(selection, gpd.GeoDataFrame) or "sample_id" not in selection.columns:
        raise InputError(
            expected("selection", "a GeoDataFrame with a sample_id column",
                     type(selection).__name__, "Pass the output of xcsmoe.select_genetic.")
        )  # fmt: skip
    if len(selection) == 0:
        raise InputError(expected("selection", "at least one row", "an empty selection"))
    by_id = {item.id: item for item in items}
    wanted = [str(s) for s in selection["sample_id"]]
    missing = [s for s in wanted if s not in by_id]
    if missing:
        raise InputError(
            expected("items", "an item for every sample_id of the selection",
                     f"{len(missing)} missing (first: {missing[0]!r})",
                     "Pass the items the selection was built from.")
        )  # fmt: skip
    columns = [c for c in DESCRIPTOR_COLUMNS if c in selection.columns]
    descriptors = {
        str(row["sample_id"]): {c: str(row[c]) for c in columns} for _, row in selection.iterrows()
    }
    chosen = [by_id[s] for s in wanted]
    s2_chosen, _ = _split(chosen, kwargs.get("provider"))
    _, s1_all = _split(by_id.values(), kwargs.get("provider"))
    s1_near = [s1 for s1 in s1_all if any(_overlap(s2, s1) >= 0.5 for s2 in s2_chosen)]
    s1_chosen = [i for i in chosen if i in s1_all]
    extra = [s1 for s1 in s1_near if s1 not in s1_chosen]
    tiles = tiles_from_items([*chosen, *extra], descriptors=descriptors, **kwargs)
    keep = {i.id for i in chosen}
    return [t for t in tiles if t.item_s2 in keep or (not t.item_s2 and t.item_s1 in keep)]


def _split(items: Iterable[Any], provider: Any) -> tuple[list[pystac.Item], list[pystac.Item]]:
    from xcsmoe.stac.plan import _split_items

    items = list(items)
    for item in items:
        if not isinstance(item, pystac.Item):
            raise InputError(expected("items", "pystac.Item objects", type(item).__name__))
    by_sensor = _split_items(items, provider)
    return by_sensor["s2"], by_sensor["s1"]


def _overlap(s2: pystac.Item, s1: pystac.Item) -> float:
    """Share of the S2 footprint's bbox that the S1 bbox covers."""
    a, b = s2.bbox, s1.bbox
    if not a or not b:
        return 0.0
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return w * h / area if area > 0 else 0.0


def _partner(s2: pystac.Item, s1_items: list[pystac.Item], tolerance: pd.Timedelta) -> int | None:
    best, best_gap = None, None
    for index, s1 in enumerate(s1_items):
        if _overlap(s2, s1) < 0.5 or s2.datetime is None or s1.datetime is None:
            continue
        gap = abs(pd.Timestamp(s2.datetime) - pd.Timestamp(s1.datetime))
        if gap <= tolerance and (best_gap is None or gap < best_gap):
            best, best_gap = index, gap
    return best


def _stac_tile(
    s2: pystac.Item | None,
    s1: tuple[pystac.Item, ...],
    plan: Any,
    s1_tolerance: str,
    provider: Any,
    descriptors: Mapping[str, Mapping[str, str]] | None,
) -> PatchTile:
    main = s2 if s2 is not None else s1[0]
    found = (descriptors or {}).get(main.id, {})
    return PatchTile(
        tile_id=main.id,
        geobox=plan.geobox,
        source=StacSource((s2,) if s2 is not None else (), s1, s1_tolerance, provider),
        item_s2=s2.id if s2 is not None else "",
        item_s1=s1[0].id if s1 else "",
        time_s2=_time(s2),
        time_s1=_time(s1[0]) if s1 else None,
        s2_offset=float(plan.s2_offsets[0]) if plan.s2_offsets is not None else 0.0,
        descriptors=tuple(sorted((str(k), str(v)) for k, v in found.items())),
    )


def _time(item: pystac.Item | None) -> np.datetime64 | None:
    if item is None or item.datetime is None:
        return None
    return np.datetime64(pd.Timestamp(item.datetime).tz_convert(None).to_datetime64(), "ns")


def tile_cube(tile: PatchTile) -> xr.Dataset:
    """A tile as a lazy one-step cube in the convention of :func:`xcsmoe.load_cube`:
    dims ``(time, y, x)`` (``latitude, longitude`` on a geographic grid), float32 bands, NaN for nodata, coords ``s2_offset`` and
    ``s1_time``, an odc geobox."""
    import dask
    import dask.array as da
    from odc.geo.xr import xr_coords

    read = dask.delayed(tile.source.read, pure=True)(
        tile.geobox, bands_s2=S2.bands, bands_s1=S1.bands
    )
    shape = (tile.geobox.shape.y, tile.geobox.shape.x)
    dims = ("time", *tile.geobox.dimensions)
    data = {}
    for sensor, bands, present in (("s2", S2.bands, tile.has_s2), ("s1", S1.bands, tile.has_s1)):
        if not present:
            continue
        stack = da.from_delayed(read[sensor], (len(bands), *shape), dtype=np.float32)
        for i, band in enumerate(bands):
            data[band] = (dims, stack[i][None])
    time = tile.time_s2 if tile.has_s2 else tile.time_s1
    coords = dict(xr_coords(tile.geobox))
    coords["time"] = [time if time is not None else np.datetime64("NaT", "ns")]
    coords["s2_offset"] = ("time", np.array([tile.s2_offset], dtype=np.float32))
    s1_time = tile.time_s1 if tile.time_s1 is not None else np.datetime64("NaT", "ns")
    coords["s1_time"] = ("time", np.array([s1_time], dtype="datetime64[ns]"))
    return xr.Dataset(data, coords=coords, attrs={"tile_id": tile.tile_id})
