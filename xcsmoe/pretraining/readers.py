"""Readers of two published layouts of real Sentinel data, as patch-store tiles and cubes.

* **Major TOM Core** (expanded tile layout) ``<root>/<row>/<cell>/<product>/<band>.tif``,
  e.g. ``S2L2A/0U/0U_199R/S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_.../B02.tif``: one
  tile per product on the grid of its 10 m bands (20 m bands repeated onto it, exact
  nearest neighbour). The product name gives time and processing baseline. Baseline
  ``N9999`` marks products processed outside ESA's baselines; their DNs carry no +1000
  shift (the darkest B02 pixel of the real example is DN 92), so the offset is 0.
* **SSL4EO-S12** ``<root>/{s1,s2a,s2c}/<location>/<scene>/<band>.tif`` with one scene
  folder per season: S1 GRD ``VV``/``VH`` in dB (converted to linear power), S2 L2A
  (``s2a``) or L1C (``s2c``). One tile per location and season (scene folders paired in
  sorted order, as the dataset is published), on the published EPSG:4326 grid of the S2
  10 m bands; S1 and 20 m bands are resampled onto it by nearest neighbour.

:func:`majortom_tiles` / :func:`ssl4eo_tiles` return :class:`PatchTile`\\ s for
:func:`~xcsmoe.pretraining.patch_store.build_patch_store`; :func:`read_majortom` /
:func:`read_ssl4eo` return lazy cubes in the convention of :func:`xcsmoe.load_cube`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox

from xcsmoe.errors import InputError, expected
from xcsmoe.pretraining.tiles import PatchTile, RasterSource, tile_cube
from xcsmoe.sensors import S2, s2_offset

__all__ = ["majortom_tiles", "read_majortom", "read_ssl4eo", "ssl4eo_tiles"]

_PRODUCT = re.compile(r"^S2[ABC]_MSIL(?:2A|1C)_(\d{8}T\d{6})_N(\d{2})(\d{2})_")
_SSL4EO_S2 = {b: b.replace("B0", "B") for b in S2.bands}  # B02 -> B2, B8A stays
_SSL4EO_S1 = {"vv": "VV", "vh": "VH"}


def _folder(root: str | os.PathLike[str], argument: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise InputError(expected(argument, "an existing folder", str(path)))
    return path


def _geobox(path: Path) -> GeoBox:
    import rasterio

    with rasterio.open(path) as src:
        return GeoBox((src.height, src.width), src.transform, str(src.crs))


# ------------------------------------------------------------------------------ Major TOM


def majortom_tiles(
    root: str | os.PathLike[str], *, cells: list[str] | None = None
) -> list[PatchTile]:
    """Tiles of a Major TOM Core S2 L2A folder (``S2L2A`` itself or the folder above it).

    ``cells``: grid cell ids to keep (e.g. ``["0U_199R"]``); default all.
    """
    base = _folder(root, "root")
    if (base / "S2L2A").is_dir():
        base = base / "S2L2A"
    products = sorted(p for p in base.glob("*/*/*") if p.is_dir())
    if cells is not None:
        products = [p for p in products if p.parent.name in set(cells)]
    if not products:
        raise InputError(
            expected("root", "Major TOM folders <row>/<cell>/<product>/B02.tif",
                     f"none under {str(base)!r}" + (f" for cells {cells}" if cells else ""))
        )  # fmt: skip
    per_cell: dict[str, int] = {}
    for product in products:
        per_cell[product.parent.name] = per_cell.get(product.parent.name, 0) + 1
    return [_majortom_tile(p, unique=per_cell[p.parent.name] == 1) for p in products]


def _majortom_tile(product: Path, *, unique: bool) -> PatchTile:
    missing = [b for b in S2.bands if not (product / f"{b}.tif").is_file()]
    if missing:
        raise InputError(
            expected(f"Major TOM product {product.name!r}", "a GeoTIFF per S2 band", f"missing {missing}")
        )  # fmt: skip
    match = _PRODUCT.match(product.name)
    time = pd.Timestamp(match[1]).to_datetime64() if match else None
    baseline = f"{match[2]}.{match[3]}" if match and match[2] != "99" else None
    offset = s2_offset({"s2:processing_baseline": baseline}) if baseline else 0.0
    cell = product.parent.name
    tile_id = cell if unique else f"{cell}/{product.name}"
    return PatchTile(
        tile_id=tile_id,
        geobox=_geobox(product / "B02.tif"),
        source=RasterSource(s2_files=tuple((b, str(product / f"{b}.tif")) for b in S2.bands)),
        item_s2=product.name,
        time_s2=np.datetime64(time, "ns") if time is not None else None,
        s2_offset=offset,
    )


def read_majortom(
    root: str | os.PathLike[str], *, cells: list[str] | None = None
) -> dict[str, xr.Dataset]:
    """Lazy cubes (``tile id -> Dataset``) of a Major TOM Core S2 L2A folder."""
    return {tile.tile_id: tile_cube(tile) for tile in majortom_tiles(root, cells=cells)}


# ------------------------------------------------------------------------------ SSL4EO-S12


def ssl4eo_tiles(
    root: str | os.PathLike[str],
    *,
    product: str = "s2a",
    locations: list[str] | None = None,
    with_s1: bool = True,
) -> list[PatchTile]:
    """Tiles of an SSL4EO-S12 folder (holding ``s1/``, ``s2a/``, ``s2c/``), one per
    location and season. ``product``: ``"s2a"`` (L2A, default) or ``"s2c"`` (L1C)."""
    base = _folder(root, "root")
    if product not in ("s2a", "s2c"):
        raise InputError(expected("product", "'s2a' (L2A) or 's2c' (L1C)", product))
    if not (base / product).is_dir():
        raise InputError(expected("root", f"an SSL4EO-S12 folder with {product}/", str(base)))
    found = sorted(p.name for p in (base / product).iterdir() if p.is_dir())
    chosen = found if locations is None else [x for x in found if x in set(locations)]
    if not chosen:
        raise InputError(expected("locations", f"locations among {found[:5]}", locations))
    tiles = []
    for location in chosen:
        s2_scenes = sorted(p for p in (base / product / location).iterdir() if p.is_dir())
        s1_dir = base / "s1" / location
        s1_scenes = sorted(p for p in s1_dir.iterdir() if p.is_dir()) if s1_dir.is_dir() else []
        for season, s2_scene in enumerate(s2_scenes):
            s1_scene = s1_scenes[season] if with_s1 and season < len(s1_scenes) else None
            tiles.append(_ssl4eo_tile(f"{location}/{season}", s2_scene, s1_scene))
    return tiles


def _ssl4eo_tile(tile_id: str, s2_scene: Path, s1_scene: Path | None) -> PatchTile:
    s2_files = tuple((b, str(s2_scene / f"{_SSL4EO_S2[b]}.tif")) for b in S2.bands)
    s1_files = (
        tuple((b, str(s1_scene / f"{name}.tif")) for b, name in _SSL4EO_S1.items())
        if s1_scene is not None
        else ()
    )
    missing = [p for _, p in (*s2_files, *s1_files) if not Path(p).is_file()]
    if missing:
        raise InputError(expected(f"SSL4EO-S12 scene of {tile_id}", "a GeoTIFF per band", missing))
    meta = _metadata(s2_scene)
    baseline = meta.get("PROCESSING_BASELINE")
    return PatchTile(
        tile_id=tile_id,
        geobox=_geobox(s2_scene / "B2.tif"),
        source=RasterSource(s2_files=s2_files, s1_files=s1_files, s1_units="dB"),
        item_s2=s2_scene.name,
        item_s1=s1_scene.name if s1_scene is not None else "",
        time_s2=_ms_time(meta.get("system:time_start")),
        time_s1=_ms_time(_metadata(s1_scene).get("system:time_start")) if s1_scene else None,
        s2_offset=s2_offset({"s2:processing_baseline": baseline}) if baseline else 0.0,
    )


def _metadata(scene: Path) -> dict:
    path = scene / "metadata.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _ms_time(value: object) -> np.datetime64 | None:
    if value is None:
        return None
    return np.datetime64(int(value), "ms").astype("datetime64[ns]")


def read_ssl4eo(
    root: str | os.PathLike[str], *, product: str = "s2a", locations: list[str] | None = None
) -> dict[str, xr.Dataset]:
    """Lazy cubes (``"<location>/<season>" -> Dataset``) of an SSL4EO-S12 folder."""
    tiles = ssl4eo_tiles(root, product=product, locations=locations)
    return {tile.tile_id: tile_cube(tile) for tile in tiles}
