"""Sampling archives: one row per candidate sample, in EPSG:4326.

Columns: ``sample_id``, ``geometry`` (footprint), ``lon``, ``lat`` (centre). Counts of
dropped inputs are kept in ``archive.attrs["summary"]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from xcsmoe.errors import ConfigError, InputError, SamplingError, expected
from xcsmoe.sampling.lonlat import _parts, split_bbox, split_geometry, unwrap_geometry, wrap_lon

__all__ = ["archive_from_items", "frame_from_bounds", "majortom_archive"]

OnInvalid = Literal["raise", "drop"]


def frame_from_bounds(
    ids: np.ndarray, bounds: np.ndarray, *, summary: dict[str, Any] | None = None
) -> gpd.GeoDataFrame:
    """Archive of rectangular footprints from ``(n, 4)`` lon/lat ``bounds``."""
    bounds = np.asarray(bounds, dtype=float).reshape(-1, 4)
    geometry = shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])
    return _frame(
        ids,
        geometry,
        (bounds[:, 0] + bounds[:, 2]) / 2,
        (bounds[:, 1] + bounds[:, 3]) / 2,
        summary=summary,
    )


def _frame(
    ids: np.ndarray,
    geometry: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    *,
    summary: dict[str, Any] | None,
) -> gpd.GeoDataFrame:
    frame = gpd.GeoDataFrame(
        {"sample_id": np.asarray(ids, dtype=object), "lon": lon, "lat": lat},
        geometry=gpd.GeoSeries(geometry, crs="EPSG:4326"),
    )
    frame = frame[["sample_id", "geometry", "lon", "lat"]]
    frame.attrs["summary"] = dict(summary or {}, kept=len(frame))
    return frame


# --------------------------------------------------------------------------- STAC items
def _item_dicts(items: Any) -> list[dict[str, Any]]:
    if isinstance(items, Mapping):
        if items.get("type") == "FeatureCollection":
            return [dict(feature) for feature in items.get("features", [])]
        return [dict(items)]
    if hasattr(items, "to_dict") and hasattr(items, "items") and not hasattr(items, "bbox"):
        return [item.to_dict() for item in items.items]  # pystac.ItemCollection
    if hasattr(items, "to_dict"):
        return [items.to_dict()]
    if isinstance(items, Iterable) and not isinstance(items, (str, bytes)):
        out: list[dict[str, Any]] = []
        for item in items:
            out.extend(_item_dicts(item))
        return out
    raise InputError(
        expected(
            "items",
            "pystac Items, an ItemCollection, or STAC Item/FeatureCollection dicts",
            type(items).__name__,
        )
    )


def _footprint(item: Mapping[str, Any]) -> BaseGeometry | None:
    geometry = item.get("geometry")
    if geometry:
        try:
            return shapely.geometry.shape(geometry)
        except Exception:  # malformed GeoJSON: reported as invalid
            return None
    bbox = item.get("bbox")
    if bbox is not None and len(bbox) in (4, 6):
        west, south, east, north = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox
        if west > east:  # STAC: the bbox crosses the antimeridian
            east += 360.0
        return shapely.box(west, south, east, north)
    return None


def _normalise(geometry: BaseGeometry | None) -> tuple[BaseGeometry | None, float, float]:
    """Footprint inside [-180, 180] (split at the antimeridian) and its centre lon/lat."""
    if geometry is None or geometry.is_empty or not geometry.is_valid:
        return geometry, np.nan, np.nan
    west, south, east, north = geometry.bounds
    if south < -90.0 or north > 90.0 or east - west > 360.0 or west < -540 or east > 540:
        return geometry, np.nan, np.nan  # reported as off-Earth, never clipped
    unwrapped = unwrap_geometry(geometry)
    if unwrapped is None:
        centre = geometry.centroid
        return geometry, centre.x, centre.y
    centre = unwrapped.centroid
    return split_geometry(unwrapped), float(wrap_lon(centre.x)), centre.y


def _geometry_problems(geometry: np.ndarray) -> np.ndarray:
    """Per footprint: '' when usable, else a short reason."""
    reasons = np.full(len(geometry), "", dtype=object)
    missing = np.array([g is None for g in geometry])
    reasons[missing] = "missing"
    present = ~missing
    geoms = geometry[present]
    sub = np.full(len(geoms), "", dtype=object)
    if len(geoms):
        empty = shapely.is_empty(geoms)
        bounds = shapely.bounds(geoms)
        off_earth = (
            (bounds[:, 0] < -180)
            | (bounds[:, 2] > 180)
            | (bounds[:, 1] < -90)
            | (bounds[:, 3] > 90)
        )
        sub[~shapely.is_valid(geoms)] = "invalid"
        sub[off_earth] = "outside lon/lat range"
        sub[empty] = "empty"
    reasons[present] = sub
    return reasons


def archive_from_items(items: Any, *, on_invalid: OnInvalid = "raise") -> gpd.GeoDataFrame:
    """Archive from STAC items: footprint = item geometry (else bbox), centre = centroid.

    Footprints that cross the antimeridian (see :mod:`xcsmoe.sampling.lonlat`) are
    stored split at ±180 and centred on their unwrapped shape. ``on_invalid="raise"``
    stops on a missing, empty, self-intersecting or off-Earth footprint; ``"drop"`` drops
    them and counts the reasons in ``attrs["summary"]``.
    """
    if on_invalid not in ("raise", "drop"):
        raise InputError(expected("on_invalid", "'raise' or 'drop'", on_invalid))
    records = _item_dicts(items)
    if not records:
        raise SamplingError(expected("items", "at least one STAC item", "none"))
    ids = np.array([str(r.get("id", i)) for i, r in enumerate(records)], dtype=object)
    geometry = np.empty(len(records), dtype=object)
    normalised = [_normalise(_footprint(r)) for r in records]
    geometry[:] = [g for g, _, _ in normalised]
    lon = np.array([x for _, x, _ in normalised], dtype=float)
    lat = np.array([y for _, _, y in normalised], dtype=float)
    reasons = _geometry_problems(geometry)
    bad = reasons != ""
    if bad.any() and on_invalid == "raise":
        first = int(np.flatnonzero(bad)[0])
        raise SamplingError(
            expected(
                "items",
                "valid footprints",
                f"{int(bad.sum())} unusable (first: {ids[first]!r}, {reasons[first]})",
                "Fix the geometries or pass on_invalid='drop' to drop and count them.",
            )
        )
    dropped = {
        str(k): int(v) for k, v in zip(*np.unique(reasons[bad], return_counts=True), strict=True)
    }
    keep = ~bad
    if not keep.any():
        raise SamplingError(expected("items", "at least one usable footprint", dropped))
    summary = {"input": len(records), "dropped": dropped}
    return _frame(ids[keep], geometry[keep], lon[keep], lat[keep], summary=summary)


# --------------------------------------------------------------------------- Major TOM
def _region_polygons(region: Any) -> list[BaseGeometry]:
    """Polygons inside [-180, 180] covering ``region`` (split at the antimeridian)."""
    if region is None:
        return [shapely.box(-180.0, -90.0, 180.0, 90.0)]
    if isinstance(region, (tuple, list, np.ndarray)) and len(region) == 4:
        return [shapely.box(*part) for part in split_bbox(region)]
    if not isinstance(region, BaseGeometry):
        raise InputError(
            expected("region", "None, a shapely geometry or (west, south, east, north)", region)
        )
    if region.is_empty or not region.is_valid:
        raise InputError(expected("region", "a valid, non-empty polygon", region.wkt[:80]))
    west, south, east, north = region.bounds
    if south < -90.0 or north > 90.0 or east - west > 360.0:
        raise InputError(
            expected("region", "latitudes in [-90, 90], at most 360° wide", region.bounds)
        )
    return [part for part in _parts(region) if not part.is_empty]


def _grid_band(grid: Any, polygon: BaseGeometry, south: float, north: float) -> tuple:
    """Cells of ``grid`` whose centre lies in ``polygon`` ∩ [south, north)."""
    band = polygon.intersection(shapely.box(-180.0, south, 180.0, north))
    ids: list[str] = []
    bounds: list[tuple[float, float, float, float]] = []
    for part in getattr(band, "geoms", [band]):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        records = grid._native.generate_grid_cells(list(part.exterior.coords))
        ids.extend(r[0] for r in records if r[1])
        bounds.extend(r[2:] for r in records if r[1])
    if not ids:
        return np.empty(0, dtype=object), np.empty((0, 4))
    box = np.asarray(bounds, dtype=float)
    lon, lat = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    inside = (lat >= south) & ((lat < north) | (north >= 90))
    # Cells past 180 (the grid's last column runs over) are the same places as cells
    # from -180 on: test the wrapped centre, keep the cell with its wrapped bounds.
    wrapped = wrap_lon(lon)
    inside &= shapely.intersects_xy(polygon, wrapped, lat) | shapely.intersects_xy(
        polygon, lon, lat
    )
    shift = (wrapped - lon)[:, None] * np.array([1.0, 0.0, 1.0, 0.0])
    return np.asarray(ids, dtype=object)[inside], (box + shift)[inside]


def majortom_archive(
    region: Any = None,
    *,
    spacing_km: float = 10.0,
    land_only: bool = True,
    landcover: Any = None,
    landcover_classes: Any = None,
    band_degrees: float = 5.0,
) -> gpd.GeoDataFrame:
    """Major TOM grid cells (primary cells, ``spacing_km`` apart) over ``region``.

    ``region``: None (the globe), a shapely polygon or ``(west, south, east, north)``;
    a bbox with ``west > east`` or past ±180 is split at the antimeridian (see
    :mod:`xcsmoe.sampling.lonlat`), and a cell centred on 180 is the one on -180.
    ``land_only`` keeps cells whose centre is land on the ``landcover`` product (default
    MODIS IGBP): not one of its class table's water codes, not nodata.
    ``landcover_classes`` overrides that table. The grid is generated in latitude bands
    of ``band_degrees`` so that memory stays proportional to one band.
    """
    from majortom_eg import MajorTomGrid

    from xcsmoe.sampling.rasters import OK, as_raster

    if not spacing_km > 0:
        raise InputError(expected("spacing_km", "a positive distance", spacing_km))
    if not 0 < band_degrees <= 180:
        raise InputError(expected("band_degrees", "a number in (0, 180]", band_degrees))
    polygons = _region_polygons(region)
    grid = MajorTomGrid(round(spacing_km * 1000), overlap=False)
    raster = None
    if land_only:
        raster = as_raster(landcover, default="landcover", classes=landcover_classes)
        if not raster.water:
            raise ConfigError(
                expected(
                    "landcover",
                    "a product whose class table names its water codes (land_only=True)",
                    f"{raster.product!r} without water codes",
                    "Pass landcover_classes=<table with 'water'> or land_only=False.",
                )
            )
    edges = np.arange(-90.0, 90.0 + band_degrees, band_degrees).clip(-90.0, 90.0)
    all_ids, all_bounds = [], []
    counts = {"grid_cells": 0, "water": 0, "outside_raster": 0}
    for polygon in polygons:
        for south, north in itertools.pairwise(edges):
            if north <= polygon.bounds[1] or south > polygon.bounds[3]:
                continue
            ids, bounds = _grid_band(grid, polygon, float(south), float(north))
            counts["grid_cells"] += len(ids)
            if raster is not None and len(ids):
                codes, status = raster.lookup(
                    (bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2
                )
                valid = status == OK
                counts["outside_raster"] += int((~valid).sum())
                water = valid & np.isin(codes, list(raster.water))
                counts["water"] += int(water.sum())
                ids, bounds = ids[valid & ~water], bounds[valid & ~water]
            all_ids.append(ids)
            all_bounds.append(bounds)
    ids = np.concatenate(all_ids) if all_ids else np.empty(0, dtype=object)
    bounds = np.concatenate(all_bounds) if all_bounds else np.empty((0, 4))
    # One cell per place: a cell centred on 180 is the one centred on -180.
    lon = wrap_lon((bounds[:, 0] + bounds[:, 2]) / 2)
    lon = np.where(lon >= 180.0, lon - 360.0, lon)
    place = np.round(lon * 1e6).astype(np.int64) * 1_000_000_000 + np.round(
        (bounds[:, 1] + bounds[:, 3]) / 2 * 1e6
    ).astype(np.int64)
    _, first = np.unique(place, return_index=True)
    first.sort()
    if len(first) == 0:
        raise SamplingError(expected("region", "at least one grid cell (over land)", 0))
    counts["duplicates"] = len(ids) - len(first)
    if raster is not None:
        counts["landcover_product"] = raster.product
    return frame_from_bounds(ids[first], bounds[first], summary=counts)
