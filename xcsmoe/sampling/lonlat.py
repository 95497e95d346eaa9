"""Longitude/latitude checks and the antimeridian, for archives, regions and footprints.

Conventions: longitudes are kept in ``[-180, 180]`` with ``-180`` and ``180`` the same
meridian; latitudes in ``[-90, 90]`` (the poles included). A bbox ``(west, south, east,
north)`` with ``west > east`` crosses the antimeridian (as in GeoJSON/STAC), and so does
one whose ``east`` lies past 180 or whose ``west`` lies before -180: both are split into
parts inside ``[-180, 180]``, never wrapped silently. A footprint that crosses the
antimeridian (split into parts at ±180, drawn with a jump of more than 180° between two
vertices, or with longitudes past ±180) is *unwrapped* into one continuous shape to
find its centre and its majority class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from xcsmoe.errors import InputError, expected

__all__ = [
    "check_lonlat",
    "split_bbox",
    "split_geometry",
    "unwrap_geometry",
    "wrap_lon",
]

_WORLD = (-180.0, -90.0, 180.0, 90.0)
_EDGE = 1e-9  # degrees: a vertex this close to ±180 lies on the antimeridian


def wrap_lon(lon: Any) -> np.ndarray:
    """Longitudes wrapped into ``[-180, 180]``; values already inside are unchanged."""
    lon = np.asarray(lon, dtype=float)
    return np.where(np.abs(lon) <= 180.0, lon, (lon + 180.0) % 360.0 - 180.0)


def check_lonlat(lon: Any, lat: Any, *, argument: str = "archive") -> None:
    """Raise :class:`InputError` for NaN/infinite or out-of-range coordinates.

    ``lon`` must lie in ``[-180, 180]`` and ``lat`` in ``[-90, 90]``; the message counts
    the offending samples and quotes the first.
    """
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    finite = np.isfinite(lon) & np.isfinite(lat)
    in_range = finite & (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0)
    if in_range.all():
        return
    first = int(np.flatnonzero(~in_range)[0])
    what = "NaN or infinite" if not finite[first] else "out-of-range"
    raise InputError(
        expected(
            f"{argument} lon/lat",
            "finite coordinates with lon in [-180, 180] and lat in [-90, 90]",
            f"{int((~in_range).sum())} {what} (first at position {first}: "
            f"lon={lon[first]}, lat={lat[first]})",
            "Drop or fix those samples before sampling.",
        )
    )


def split_bbox(bbox: Any, *, argument: str = "region") -> list[tuple[float, float, float, float]]:
    """Parts of a lon/lat bbox inside ``[-180, 180]`` (two when it crosses 180°).

    ``west > east`` means the bbox crosses the antimeridian; ``east > 180`` or
    ``west < -180`` continue past it. Latitudes outside ``[-90, 90]``, ``south > north``
    or a width above 360° are refused.
    """
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InputError(expected(argument, "(west, south, east, north) numbers", bbox)) from None
    if not np.all(np.isfinite([west, south, east, north])):
        raise InputError(expected(argument, "finite bbox numbers", bbox))
    if not -90.0 <= south < north <= 90.0:
        raise InputError(
            expected(
                argument,
                "-90 ≤ south < north ≤ 90",
                f"south={south}, north={north}",
                "Latitudes do not wrap; swap them or clip them to the poles.",
            )
        )
    if west > east:  # GeoJSON/STAC: crosses the antimeridian
        if not (east >= -180.0 and west <= 180.0):
            raise InputError(
                expected(
                    argument,
                    "west > east only with both inside [-180, 180] (a bbox across 180°)",
                    f"west={west}, east={east}",
                )
            )
        east += 360.0
    if east - west > 360.0:
        raise InputError(
            expected(argument, "a bbox at most 360° wide", f"{east - west}° (west={west})")
        )
    return [
        tuple(float(v) for v in part.bounds)  # type: ignore[misc]
        for part in _parts(shapely.box(west, south, east, north))
        if part.area > 0
    ]


def _parts(geometry: BaseGeometry) -> list[BaseGeometry]:
    """``geometry`` cut at ±180 and shifted by multiples of 360° into ``[-180, 180]``."""
    out = []
    for shift in (-720.0, -360.0, 0.0, 360.0, 720.0):
        window = shapely.box(-180.0 - shift, -90.0, 180.0 - shift, 90.0)
        piece = geometry.intersection(window)
        if piece.is_empty:
            continue
        piece = shapely.transform(piece, lambda xy, s=shift: xy + np.array([s, 0.0]))
        out.extend(p for p in getattr(piece, "geoms", [piece]) if p.geom_type == "Polygon")
    return out


def split_geometry(geometry: BaseGeometry) -> BaseGeometry:
    """A (possibly unwrapped) polygon as a (multi)polygon inside ``[-180, 180]``."""
    west, _, east, _ = geometry.bounds
    if west >= -180.0 and east <= 180.0:
        return geometry
    parts = [p for p in _parts(geometry) if not p.is_empty]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _shift_negative_vertices(geometry: BaseGeometry) -> BaseGeometry:
    return shapely.transform(
        geometry, lambda xy: np.where(xy[:, :1] < 0, xy + np.array([360.0, 0.0]), xy)
    )


def _has_jump(geometry: BaseGeometry) -> bool:
    polygons = getattr(geometry, "geoms", [geometry])
    for polygon in polygons:
        if polygon.geom_type != "Polygon":
            continue
        x = np.asarray(polygon.exterior.coords)[:, 0]
        if len(x) > 1 and np.abs(np.diff(x)).max() > 180.0:
            return True
    return False


def unwrap_geometry(geometry: BaseGeometry) -> BaseGeometry | None:
    """The footprint as one continuous shape if it crosses the antimeridian, else None.

    Recognised: longitudes past ±180 (returned as they are), a polygon drawn with a jump
    of more than 180° between vertices, and a multipolygon split at ±180 (parts touching
    both +180 and -180). Unwrapped shapes have longitudes in ``[0, 360]``.
    """
    if geometry is None or geometry.is_empty:
        return None
    west, _, east, _ = geometry.bounds
    if west < -180.0 or east > 180.0:
        return geometry
    if _has_jump(geometry):
        unwrapped = _shift_negative_vertices(geometry)
        return unwrapped if unwrapped.is_valid else shapely.make_valid(unwrapped)
    if geometry.geom_type == "MultiPolygon" and west <= -180.0 + _EDGE and east >= 180.0 - _EDGE:
        parts = [
            shapely.transform(p, lambda xy: xy + np.array([360.0, 0.0])) if p.centroid.x < 0 else p
            for p in geometry.geoms
        ]
        unwrapped = shapely.union_all(parts)
        if unwrapped.bounds[2] - unwrapped.bounds[0] < east - west:
            return unwrapped
    return None
