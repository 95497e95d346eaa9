"""A real, offline sample catalog: six co-registered S1/S2 BigEarthNet patches as STAC.

The patches ship with the PyPI package ``bigearthnet-common`` (extracted on first use).
The builder writes a static, self-contained STAC catalog with two collections,
``bigearthnet-s2`` (12 L2A bands at their native 10/20/60 m) and ``bigearthnet-s1``
(VV/VH sigma0 in dB, 10 m), whose items carry the proj/raster/eo/sar extensions and
absolute ``file://`` asset hrefs. Each S1 item covers its S2 partner exactly.
"""

from __future__ import annotations

import bz2
import csv
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pystac
import rasterio
from odc.geo.geom import box

from xcsmoe.cache import default_cache_dir
from xcsmoe.errors import ConfigError, expected

__all__ = ["S1_COLLECTION", "S2_COLLECTION", "build_example_catalog", "example_catalog"]

S2_COLLECTION = "bigearthnet-s2"
S1_COLLECTION = "bigearthnet-s1"
_VERSION = "2"
_LICENSE = "CDLA-Permissive-1.0"  # BigEarthNet licence
_EXT = {
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "sar": "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
}
# name, common name, centre wavelength (um), native resolution (m)
_S2_BANDS = (
    ("B01", "coastal", 0.443, 60),
    ("B02", "blue", 0.490, 10),
    ("B03", "green", 0.560, 10),
    ("B04", "red", 0.665, 10),
    ("B05", "rededge", 0.704, 20),
    ("B06", "rededge", 0.740, 20),
    ("B07", "rededge", 0.783, 20),
    ("B08", "nir", 0.842, 10),
    ("B8A", "nir08", 0.865, 20),
    ("B09", "nir09", 0.945, 60),
    ("B11", "swir16", 1.610, 20),
    ("B12", "swir22", 2.190, 20),
)
_TIFF = "image/tiff; application=geotiff"


def example_catalog(path: str | os.PathLike[str] | None = None) -> pystac.Catalog:
    """Open the sample catalog at ``path`` (default: the cache dir), building it if absent.

    Idempotent and safe to call from several processes: the catalog is written to a
    temporary folder and moved into place in one step.
    """
    root = Path(path) if path is not None else default_cache_dir() / f"example-catalog-v{_VERSION}"
    if not (root / "catalog.json").is_file():
        build_example_catalog(root)
    return pystac.Catalog.from_file(str(root / "catalog.json"))


def build_example_catalog(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write the sample catalog into folder ``path``; return the ``catalog.json`` path."""
    root = Path(path).resolve()
    if (root / "catalog.json").is_file() and not overwrite:
        return root / "catalog.json"
    if root.exists() and any(root.iterdir()) and not (root / "catalog.json").is_file():
        raise ConfigError(
            expected("path", "an empty folder or an existing sample catalog", str(root))
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".catalog-", dir=root.parent))
    try:
        catalog = _catalog()
        catalog.normalize_hrefs(str(root))
        catalog.save(pystac.CatalogType.SELF_CONTAINED, dest_href=str(staging))
        if overwrite and root.exists():
            shutil.rmtree(root)
        if root.exists():
            root.rmdir()  # empty folder left by a caller: replace it
        os.replace(staging, root)
    except OSError:
        if not (root / "catalog.json").is_file():
            raise  # a concurrent builder did not win either: a real error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / "catalog.json"


def item_files(catalog: pystac.Catalog | str | os.PathLike[str]) -> list[Path]:
    """Collection then item JSON files of a saved catalog (what a STAC server loads)."""
    root = Path(catalog.self_href if isinstance(catalog, pystac.Catalog) else catalog)
    root = root.parent if root.suffix == ".json" else root
    collections = sorted(root.glob("*/collection.json"))
    items = sorted(p for p in root.glob("*/*/*.json"))
    return collections + items


# ------------------------------------------------------------------------ building


def _catalog() -> pystac.Catalog:
    s2_dir, s1_dir = _patch_folders()
    cloudy, snowy = (
        _patch_list("patches_with_cloud_and_shadow"),
        _patch_list("patches_with_seasonal_snow"),
    )
    s2_items = [_s2_item(d, cloudy, snowy) for d in sorted(s2_dir.iterdir()) if d.is_dir()]
    s1_items = [_s1_item(d) for d in sorted(s1_dir.iterdir()) if d.is_dir()]
    catalog = pystac.Catalog(
        "xcsmoe-sample",
        "Six co-registered Sentinel-1/Sentinel-2 BigEarthNet patches (bigearthnet-common).",
        title="xcsmoe sample catalog",
    )
    catalog.add_child(_collection(S2_COLLECTION, "Sentinel-2 L2A BigEarthNet patches", s2_items))
    catalog.add_child(_collection(S1_COLLECTION, "Sentinel-1 GRD BigEarthNet patches", s1_items))
    return catalog


def _patch_folders() -> tuple[Path, Path]:
    from bigearthnet_common import example_data

    return (
        Path(example_data.get_s2_example_folder_path()),
        Path(example_data.get_s1_example_folder_path()),
    )


def _patch_list(resource: str) -> set[str]:
    """Patch names listed in one of bigearthnet-common's single-column CSV resources."""
    data = resources.files("bigearthnet_common") / f"{resource}.csv.bz2"
    with data.open("rb") as raw, bz2.open(raw, "rt") as text:
        return {row[0] for row in csv.reader(text) if row}


def _metadata(folder: Path) -> dict[str, Any]:
    return json.loads(next(folder.glob("*_labels_metadata.json")).read_text())


def _grid(tif: Path) -> dict[str, Any]:
    with rasterio.open(tif) as src:
        return {
            "epsg": src.crs.to_epsg(),
            "shape": [src.height, src.width],
            "transform": list(src.transform)[:6],
            "bounds": tuple(src.bounds),
            "dtype": src.dtypes[0],
        }


def _footprint(grid: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    geom = box(*grid["bounds"], f"EPSG:{grid['epsg']}").to_crs("EPSG:4326", resolution=400)
    return geom.json, list(geom.boundingbox)


def _asset(tif: Path, grid: dict[str, Any], raster: dict[str, Any], **extra: Any) -> pystac.Asset:
    return pystac.Asset(
        href=tif.resolve().as_uri(),
        media_type=_TIFF,
        roles=["data"],
        extra_fields={
            "proj:shape": grid["shape"],
            "proj:transform": grid["transform"],
            "raster:bands": [{"data_type": grid["dtype"], **raster}],
            **extra,
        },
    )


def _item(name: str, grid: dict[str, Any], when: dt.datetime, props: dict[str, Any]) -> pystac.Item:
    geometry, bbox = _footprint(grid)
    item = pystac.Item(name, geometry, bbox, when, {**props, "proj:code": f"EPSG:{grid['epsg']}"})
    return item


def _s2_item(folder: Path, cloudy: set[str], snowy: set[str]) -> pystac.Item:
    name, meta = folder.name, _metadata(folder)
    tile_source = meta["tile_source"]  # e.g. S2A_MSIL1C_20170613T101031_N0205_R022_T33UUP_...
    baseline = tile_source.split("_")[3][1:]
    grids = {band: _grid(folder / f"{name}_{band}.tif") for band, *_ in _S2_BANDS}
    props = {
        "platform": f"sentinel-2{name[2].lower()}",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        # Patch-level flag from BigEarthNet's cloud/shadow list: 100 if listed, else 0.
        "eo:cloud_cover": 100.0 if name in cloudy else 0.0,
        "s2:processing_baseline": f"{baseline[:2]}.{baseline[2:]}",
        "s2:mgrs_tile": tile_source.split("_")[5][1:],
        "s2:product_uri": tile_source,
        "bigearthnet:labels": meta["labels"],
        "bigearthnet:seasonal_snow": name in snowy,
    }
    when = dt.datetime.fromisoformat(meta["acquisition_date"]).replace(tzinfo=dt.timezone.utc)
    item = _item(name, grids["B02"], when, props)
    item.stac_extensions = [_EXT["proj"], _EXT["raster"], _EXT["eo"]]
    for band, common, wavelength, res in _S2_BANDS:
        raster = {"nodata": 0, "spatial_resolution": res, "scale": 0.0001, "offset": 0.0}
        eo = [{"name": band, "common_name": common, "center_wavelength": wavelength}]
        tif = folder / f"{name}_{band}.tif"
        item.add_asset(band, _asset(tif, grids[band], raster, gsd=res, **{"eo:bands": eo}))
    return item


def _s1_item(folder: Path) -> pystac.Item:
    name, meta = folder.name, _metadata(folder)
    grid = _grid(folder / f"{name}_VV.tif")
    props = {
        "platform": f"sentinel-{name[1:3].lower()}",
        "constellation": "sentinel-1",
        "instruments": ["c-sar"],
        "sar:instrument_mode": name.split("_")[1],
        "sar:frequency_band": "C",
        "sar:center_frequency": 5.405,
        "sar:polarizations": ["VV", "VH"],
        "sar:product_type": "GRD",
        "bigearthnet:labels": meta["labels"],
        "bigearthnet:s2_patch": meta["corresponding_s2_patch"],
        "bigearthnet:scene_source": meta["scene_source"],
    }
    when = dt.datetime.fromisoformat(meta["acquisition_time"]).replace(tzinfo=dt.timezone.utc)
    item = _item(name, grid, when, props)
    item.stac_extensions = [_EXT["proj"], _EXT["raster"], _EXT["sar"]]
    for pol in ("VV", "VH"):
        raster = {"unit": "dB", "spatial_resolution": 10}
        tif = folder / f"{name}_{pol}.tif"
        item.add_asset(pol.lower(), _asset(tif, _grid(tif), raster, **{"sar:polarizations": [pol]}))
    return item


def _collection(cid: str, description: str, items: list[pystac.Item]) -> pystac.Collection:
    times = sorted(i.datetime for i in items if i.datetime is not None)
    west = min(i.bbox[0] for i in items if i.bbox)
    south = min(i.bbox[1] for i in items if i.bbox)
    east = max(i.bbox[2] for i in items if i.bbox)
    north = max(i.bbox[3] for i in items if i.bbox)
    collection = pystac.Collection(
        cid,
        description,
        pystac.Extent(
            pystac.SpatialExtent([[west, south, east, north]]),
            pystac.TemporalExtent([[times[0], times[-1]]]),
        ),
        license=_LICENSE,
        providers=[pystac.Provider("BigEarthNet (TU Berlin)", roles=["producer", "licensor"])],
    )
    for item in items:
        collection.add_item(item)
    return collection


def iter_pairs(catalog: pystac.Catalog) -> Iterator[tuple[pystac.Item, pystac.Item]]:
    """(S2 item, S1 partner) pairs of the sample catalog."""
    s1 = {i.properties["bigearthnet:s2_patch"]: i for i in _items(catalog, S1_COLLECTION)}
    for s2 in _items(catalog, S2_COLLECTION):
        yield s2, s1[s2.id]


def _items(catalog: pystac.Catalog, cid: str) -> list[pystac.Item]:
    child = catalog.get_child(cid)
    if child is None:
        raise ConfigError(expected("catalog", f"a {cid!r} collection", catalog.id))
    return sorted(child.get_items(), key=lambda i: i.id)
