"""Categorical products read from a STAC collection and mosaicked across its items.

The paper's land cover, ESA WorldCover (10 m, 3° × 3° GeoTIFF tiles), is the
Planetary Computer collection ``esa-worldcover``, configured in
``catalogs/esa-worldcover.yaml`` under ``products:``. Any other tiled categorical
product is one such entry away: collection, asset key and class table (names, water and
nodata codes).

Plan, then execution: :func:`product_config` reads the entry; a
:class:`StacCategoricalRaster` searches the collection for the items under the points it
is asked about (cached per item), opens each needed tile's metadata once, and reads only
the tile blocks that hold points. Mosaicking: items are ranked newest first (then by
id); a point takes the first item whose pixel holds a class. A pixel owns its west and
north edges, so a point on a seam between two tiles reads the east/south tile, exactly
as in the single raster the tiles were cut from; points on the mosaic's own east/south
edges (lon = 180, the South Pole) read the edge pixel.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyproj import CRS

from xcsmoe.errors import ConfigError, SamplingError, StacConnectionError, expected
from xcsmoe.sampling.classtables import ClassTable, class_table
from xcsmoe.sampling.rasters import NODATA, OK, OUTSIDE, CategoricalRaster

__all__ = [
    "ProductConfig",
    "StacCategoricalRaster",
    "product_config",
    "product_names",
    "stac_product",
]


@dataclass(frozen=True)
class ProductConfig:
    """Where a categorical product lives in STAC and how to read its codes."""

    name: str
    collection: str
    asset: str
    table: ClassTable
    url: str | None = None
    datetime: str | None = None
    resolution: float | None = None
    title: str = ""
    sign: str | None = None


def _product_entries() -> dict[str, tuple[dict[str, Any], str | None, Path]]:
    import yaml

    from xcsmoe.stac.providers import catalogs_dir

    entries: dict[str, tuple[dict[str, Any], str | None, Path]] = {}
    for path in sorted(catalogs_dir().glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        for name, body in (raw.get("products") or {}).items():
            entries[str(name)] = (dict(body or {}), raw.get("url"), path)
    return entries


def product_names() -> list[str]:
    """Names of the categorical products configured in ``catalogs/*.yaml``."""
    return sorted(_product_entries())


def _config(name: str, body: Mapping[str, Any], url: str | None, path: Path) -> ProductConfig:
    for key in ("collection", "asset", "classes"):
        if not body.get(key):
            raise ConfigError(expected(f"{path}: products.{name}.{key}", "a value", None))
    table = class_table(body["classes"]).with_codes(
        water=body.get("water"), nodata=body.get("nodata"), title=body.get("title")
    )
    resolution = body.get("resolution")
    return ProductConfig(
        name=name,
        collection=str(body["collection"]),
        asset=str(body["asset"]),
        table=table,
        url=body.get("url", url),
        datetime=None if body.get("datetime") is None else str(body["datetime"]),
        resolution=None if resolution is None else float(resolution),
        title=str(body.get("title") or table.title or name),
        sign=body.get("sign"),
    )


def product_config(name: str | os.PathLike[str]) -> ProductConfig:
    """The product ``name`` of ``catalogs/*.yaml`` (or the only product of a YAML file)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        import yaml

        raw = yaml.safe_load(path.read_text()) or {}
        products = raw.get("products") or {}
        if len(products) != 1:
            raise ConfigError(
                expected(str(path), "exactly one entry under 'products'", sorted(products))
            )
        ((key, body),) = products.items()
        return _config(str(key), dict(body or {}), raw.get("url"), path)
    entries = _product_entries()
    if str(name) not in entries:
        raise ConfigError(
            expected(
                "product",
                f"one of {sorted(entries)} or a YAML file with a 'products' entry",
                str(name),
            )
        )
    body, url, source = entries[str(name)]
    return _config(str(name), body, url, source)


# --------------------------------------------------------------------------- tiles
class _BlockPoints:
    """Point-wise ``[rows, cols]`` reads of one GeoTIFF, one window per touched block."""

    __slots__ = ("_block", "_href", "shape")

    def __init__(self, href: str, shape: tuple[int, int], block: tuple[int, int]) -> None:
        self._href, self.shape, self._block = href, shape, block

    def __getitem__(self, key: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        rows, cols = (np.asarray(k, dtype=np.int64) for k in key)
        out = np.zeros(rows.shape, dtype=np.int64)
        block_h, block_w = self._block
        ids = (rows // block_h) * (self.shape[1] // block_w + 1) + cols // block_w
        with rasterio.open(self._href) as src:
            for block in np.unique(ids):
                at = ids == block
                top = int(rows[at].min() // block_h * block_h)
                left = int(cols[at].min() // block_w * block_w)
                height = min(block_h, self.shape[0] - top)
                width = min(block_w, self.shape[1] - left)
                data = src.read(1, window=Window(left, top, width, height))
                out[at] = data[rows[at] - top, cols[at] - left]
        return out


def _open_tile(href: str, *, name: str, table: ClassTable) -> CategoricalRaster:
    import rasterio

    try:
        with rasterio.open(href) as src:
            shape, block = (src.height, src.width), src.block_shapes[0]
            transform, crs, nodata = src.transform, src.crs, src.nodata
    except rasterio.errors.RasterioIOError as error:
        raise SamplingError(
            expected(
                "tile",
                "a readable GeoTIFF asset",
                href,
                f"{error}. Planetary Computer hrefs must be signed (pip install "
                "planetary-computer, or pass modifier=...); signatures expire.",
            )
        ) from error
    if crs is None:
        raise SamplingError(expected(f"tile {href}", "a CRS", None))
    codes = set(table.nodata) | ({int(nodata)} if nodata is not None else set())
    return CategoricalRaster(
        name=name,
        data=_BlockPoints(href, shape, block),
        transform=transform,
        crs=CRS.from_wkt(crs.to_wkt()),
        nodata=frozenset(codes),
        classes=table.classes,
        water=table.water,
        title=table.title,
    )


@dataclass
class _Tile:
    id: str
    href: str
    bbox: tuple[float, float, float, float]
    datetime: str
    raster: CategoricalRaster | None = None


def _tiles_from_items(items: Iterable[Any], asset: str) -> list[_Tile]:
    tiles = []
    for item in items:
        data = item.to_dict() if hasattr(item, "to_dict") else dict(item)
        assets = data.get("assets") or {}
        if asset not in assets:
            raise SamplingError(
                expected(
                    f"item {data.get('id')!r}",
                    f"an asset {asset!r}",
                    sorted(assets),
                    "Fix 'asset' in the product configuration.",
                )
            )
        href = str(assets[asset]["href"])
        if "://" not in href and not os.path.isabs(href) and hasattr(item, "assets"):
            href = item.assets[asset].get_absolute_href() or href  # relative to the item
        bbox = data.get("bbox")
        if bbox is None:
            import shapely

            bbox = shapely.geometry.shape(data["geometry"]).bounds
        west, south, east, north = (
            (bbox[0], bbox[1], bbox[-3], bbox[-2]) if len(bbox) == 6 else bbox
        )
        stamp = (data.get("properties") or {}).get("datetime") or (
            data.get("properties") or {}
        ).get("start_datetime", "")
        tiles.append(_Tile(str(data.get("id")), str(href), (west, south, east, north), stamp or ""))
    return tiles


@dataclass(eq=False)
class StacCategoricalRaster:
    """A categorical product mosaicked from the items of a STAC collection.

    Same lookup interface as :class:`~xcsmoe.sampling.rasters.CategoricalRaster`:
    ``lookup(lon, lat)`` → codes and a status per point (``OK``/``OUTSIDE``/``NODATA``).
    """

    name: str
    config: ProductConfig = field(repr=False)
    classes: Mapping[int, str] | None = field(default=None, repr=False)
    water: frozenset[int] = frozenset()
    nodata: frozenset[int] = frozenset()
    title: str = ""
    url: str | None = None
    modifier: Any = field(default=None, repr=False)
    tiles: dict[str, _Tile] = field(default_factory=dict, repr=False)
    searched: list[tuple[float, float, float, float]] = field(default_factory=list, repr=False)
    crs: CRS = field(default_factory=lambda: CRS.from_epsg(4326), repr=False)

    @property
    def product(self) -> str:
        return self.title or self.name

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Pixel size in degrees (from the configuration, else the first opened tile)."""
        for tile in self.tiles.values():
            if tile.raster is not None and tile.raster.crs.is_geographic:
                return tile.raster.pixel_size
        size = self.config.resolution or 1e-4
        return size, size

    def label(self, codes: np.ndarray) -> np.ndarray:
        """Class names for ``codes`` (the code as text where the table has no name)."""
        names = pd.Series(self.classes or {}).reindex(codes).to_numpy()
        missing = pd.isna(names)
        names[missing] = np.asarray(codes)[missing].astype(str)
        return names.astype(object)

    # ------------------------------------------------------------------ items
    def _search(self, bbox: tuple[float, float, float, float]) -> None:
        if self.url is None or any(
            s[0] <= bbox[0] and s[1] <= bbox[1] and s[2] >= bbox[2] and s[3] >= bbox[3]
            for s in self.searched
        ):
            return
        import pystac_client

        try:
            client = pystac_client.Client.open(self.url, modifier=self.modifier)
            search = client.search(
                collections=[self.config.collection], bbox=list(bbox), datetime=self.config.datetime
            )
            items = list(search.items())
        except Exception as error:  # pystac-client raises several types; report one
            raise StacConnectionError(
                expected(
                    "STAC API",
                    f"items of {self.config.collection!r} in {bbox}",
                    self.url,
                    str(error),
                )
            ) from error
        for tile in _tiles_from_items(items, self.config.asset):
            self.tiles.setdefault(tile.id, tile)
        self.searched.append(bbox)

    def _ranked(self) -> list[_Tile]:
        by_id = sorted(self.tiles.values(), key=lambda t: t.id)
        return sorted(by_id, key=lambda t: t.datetime, reverse=True)  # stable: newest first

    # ------------------------------------------------------------------ lookups
    def lookup(
        self, lon: np.ndarray, lat: np.ndarray, *, closed: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class codes at WGS84 points and a status per point, across every tile."""
        lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
        codes = np.zeros(lon.shape, dtype=np.int64)
        status = np.full(lon.shape, OUTSIDE, dtype=np.uint8)
        finite = np.isfinite(lon) & np.isfinite(lat)
        if not finite.any():
            return codes, status
        pad = 1e-9
        self._search(
            (
                float(lon[finite].min()) - pad,
                float(lat[finite].min()) - pad,
                float(lon[finite].max()) + pad,
                float(lat[finite].max()) + pad,
            )
        )
        tiles = self._ranked()
        for seams in (False, True) if closed else (False,):
            for tile in tiles:
                west, south, east, north = tile.bbox
                todo = (status != OK) & finite
                todo &= (lon >= west - pad) & (lon <= east + pad)
                todo &= (lat >= south - pad) & (lat <= north + pad)
                if not todo.any():
                    continue
                if tile.raster is None:
                    tile.raster = _open_tile(
                        tile.href,
                        name=tile.id,
                        table=ClassTable(
                            self.name, self.classes or {}, self.water, self.nodata, self.title
                        ),
                    )
                found, state = tile.raster.lookup(lon[todo], lat[todo], closed=seams)
                where = np.flatnonzero(todo)
                hit = state == OK
                codes[where[hit]] = found[hit]
                status[where[hit]] = OK
                blank = (state == NODATA) & (status[where] == OUTSIDE)
                status[where[blank]] = NODATA
        return codes, status


def stac_product(
    product: str | ProductConfig = "esa-worldcover",
    *,
    url: str | None = None,
    items: Iterable[Any] | None = None,
    classes: Any = None,
    modifier: Any = None,
) -> StacCategoricalRaster:
    """A categorical product read through STAC, mosaicked across items.

    ``product``: a configured name (``"esa-worldcover"``), a YAML path or a
    :class:`ProductConfig`. ``url`` overrides the configured STAC API (e.g. a loopback
    server); ``items`` (pystac Items or Item dicts) skips the search. ``classes``
    overrides the class table. ``modifier`` signs items for reading (pystac-client's
    ``modifier``, e.g. ``planetary_computer.sign_inplace``).
    """
    config = product if isinstance(product, ProductConfig) else product_config(product)
    table = config.table if classes is None else class_table(classes)
    if modifier is None and items is None and config.sign == "planetary-computer":
        try:  # optional: signs Planetary Computer hrefs (SAS tokens)
            import planetary_computer

            modifier = planetary_computer.sign_inplace
        except ImportError:
            modifier = None
    raster = StacCategoricalRaster(
        name=config.name,
        config=config,
        classes=table.classes,
        water=table.water,
        nodata=table.nodata,
        title=config.title if classes is None else table.title,
        url=None if items is not None else (url or config.url),
        modifier=modifier,
    )
    if items is not None:
        for tile in _tiles_from_items(items, config.asset):
            raster.tiles.setdefault(tile.id, tile)
    elif raster.url is None:
        raise ConfigError(
            expected("url", f"a STAC API URL for product {config.name!r}", None, "Pass url=...")
        )
    return raster
