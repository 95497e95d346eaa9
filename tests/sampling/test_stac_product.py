"""Categorical products through STAC: real raster tiles served by a loopback STAC API.

The shipped MODIS IGBP raster is cut into 24 GeoTIFF tiles (60° × 45°, 256-px blocks),
each a STAC item of a collection served by ``rustac serve``; looked up through the API
and mosaicked, every point (random, on tile seams and corners, on lon = ±180 and the
poles) must read exactly what the single raster reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from xcsmoe.errors import ConfigError, SamplingError
from xcsmoe.sampling.classtables import class_table
from xcsmoe.sampling.descriptors import add_descriptors, majority_codes
from xcsmoe.sampling.rasters import NODATA, OK, modis_igbp
from xcsmoe.sampling.stac_product import (
    ProductConfig,
    product_config,
    product_names,
    stac_product,
)

TILE_LON, TILE_LAT = 60, 45  # degrees per tile: 1200 × 900 pixels of 0.05°


def _write_tiles(folder: Path) -> list[dict]:
    import rasterio
    from rasterio.windows import Window

    step_x, step_y = round(TILE_LON / 0.05), round(TILE_LAT / 0.05)
    items = []
    with rasterio.open(_modis_path()) as src:
        profile = src.profile | {
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
        }
        for row in range(src.height // step_y):
            for col in range(src.width // step_x):
                window = Window(col * step_x, row * step_y, step_x, step_y)
                transform = src.window_transform(window)
                path = folder / f"igbp_{row}_{col}.tif"
                tile = profile | {"width": step_x, "height": step_y, "transform": transform}
                with rasterio.open(path, "w", **tile) as dst:
                    dst.write(src.read(1, window=window), 1)
                west, north = transform.c, transform.f
                bbox = [west, north - TILE_LAT, west + TILE_LON, north]
                items.append(
                    {
                        "type": "Feature",
                        "stac_version": "1.0.0",
                        "id": f"igbp-{row}-{col}",
                        "collection": "modis-igbp-tiles",
                        "bbox": bbox,
                        "geometry": shapely.geometry.mapping(shapely.box(*bbox)),
                        "properties": {"datetime": "2019-01-01T00:00:00Z"},
                        "assets": {
                            "map": {"href": str(path), "type": "image/tiff; application=geotiff"}
                        },
                        "links": [],
                    }
                )
    return items


def _modis_path() -> Path:
    from xcsmoe.sampling.classtables import data_path
    from xcsmoe.sampling.rasters import MODIS_TIFF

    return data_path(MODIS_TIFF)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("modis-tiles")
    items = _write_tiles(folder)
    collection = {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": "modis-igbp-tiles",
        "description": "MODIS MCD12C1 2019 IGBP cut into 60° × 45° tiles",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [["2019-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }
    (folder / "collection.json").write_text(json.dumps(collection))
    (folder / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return folder, items


@pytest.fixture(scope="module")
def api(tiles) -> str:
    from xcsmoe.stac.serve import rustac_executable, serve_stac

    try:
        rustac_executable()
    except ConfigError as error:
        pytest.skip(str(error))
    folder, _ = tiles
    with serve_stac([folder / "collection.json", folder / "items.json"]) as url:
        yield url


def _config() -> ProductConfig:
    return ProductConfig(
        name="modis-igbp-tiles",
        collection="modis-igbp-tiles",
        asset="map",
        table=class_table("modis-igbp"),
        resolution=0.05,
        title="MODIS IGBP 2019, tiled",
    )


def _points() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-180, 180, 4000), rng.uniform(-90, 90, 4000)
    seams_lon = np.arange(-180, 181, TILE_LON, dtype=float)  # incl. ±180
    seams_lat = np.arange(-90, 91, TILE_LAT, dtype=float)  # incl. both poles
    grid_lon, grid_lat = np.meshgrid(seams_lon, seams_lat)  # every tile corner
    along_lon = np.repeat(seams_lon, 50)
    along_lat = np.tile(rng.uniform(-90, 90, 50), len(seams_lon))
    across_lat = np.repeat(seams_lat, 50)
    across_lon = np.tile(rng.uniform(-180, 180, 50), len(seams_lat))
    return (
        np.concatenate([lon, grid_lon.ravel(), along_lon, across_lon, [180.0, -180.0, 0.0]]),
        np.concatenate([lat, grid_lat.ravel(), along_lat, across_lat, [0.0, 0.0, -90.0]]),
    )


def test_tiled_lookups_through_the_api_equal_the_single_raster(api) -> None:
    product = stac_product(_config(), url=api)
    lon, lat = _points()
    tiled_codes, tiled_status = product.lookup(lon, lat)
    codes, status = modis_igbp().lookup(lon, lat)
    np.testing.assert_array_equal(tiled_status, status)
    np.testing.assert_array_equal(tiled_codes, codes)
    assert (status == OK).all()  # lon = ±180 and both poles are inside
    assert len(product.tiles) == 24 and product.product == "MODIS IGBP 2019, tiled"


def test_tiled_majority_and_descriptors_equal_the_single_raster(api) -> None:
    product = stac_product(_config(), url=api)
    rng = np.random.default_rng(1)
    west = rng.uniform(-170, 170, 300)
    south = rng.uniform(-80, 80, 300)
    west[:40] = np.repeat([-120.0, -60.0, 0.0, 60.0], 10) - 0.03  # straddle seams
    boxes = shapely.box(west, south, west + 0.2, south + 0.2)
    np.testing.assert_array_equal(
        np.column_stack(majority_codes(product, boxes)),
        np.column_stack(majority_codes(modis_igbp(), boxes)),
    )
    archive = gpd.GeoDataFrame(
        {"sample_id": np.arange(300).astype(str), "lon": west + 0.1, "lat": south + 0.1},
        geometry=boxes,
        crs="EPSG:4326",
    )
    through_stac = add_descriptors(archive, landcover=product)
    default = add_descriptors(archive)
    assert (
        through_stac["landcover"].astype(str).tolist() == default["landcover"].astype(str).tolist()
    )
    summary = through_stac.attrs["summary"]["descriptors"]
    assert summary["landcover_product"] == "MODIS IGBP 2019, tiled"


def test_items_without_an_api_and_nodata_from_the_table(tiles) -> None:
    _, items = tiles
    product = stac_product(
        _config(), items=items[:2], classes={"classes": {"1": "x"}, "nodata": [0]}
    )
    codes, status = product.lookup(np.array([-150.0, 170.0]), np.array([80.0, 0.0]))
    assert status[1] != OK  # no item there
    assert status[0] in (OK, NODATA) and (status[0] == NODATA) == (codes[0] == 0)
    with pytest.raises(SamplingError, match="asset 'data'"):
        stac_product(
            ProductConfig("x", "modis-igbp-tiles", "data", class_table("modis-igbp")), items=items
        )


def test_esa_worldcover_is_configured_with_its_class_table() -> None:
    assert "esa-worldcover" in product_names()
    config = product_config("esa-worldcover")
    assert (config.collection, config.asset) == ("esa-worldcover", "map")
    assert config.table.water == {80} and config.table.nodata == {0}
    assert sorted(config.table.classes) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100]
    assert config.url and "planetarycomputer" in config.url and "WorldCover" in config.title
    with pytest.raises(ConfigError, match="product"):
        product_config("no-such-product")


def test_paper_recipe_through_the_loopback_api(api, tmp_path) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "recipes" / "paper_worldcover.py"
    spec = importlib.util.spec_from_file_location("paper_worldcover", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    tiled = tmp_path / "product.yaml"
    tiled.write_text(
        "products:\n  modis-igbp-tiles:\n    collection: modis-igbp-tiles\n    asset: map\n"
        "    classes: modis-igbp\n    resolution: 0.05\n    title: MODIS IGBP 2019, tiled\n"
    )
    comparison, report = recipe.run(
        tmp_path / "out",
        region=(-2.0, 42.0, 3.0, 46.0),
        product=str(tiled),
        stac_api=api,
        spacing_km=20,
        per_stratum=15,
        generations=10,
        population=6,
    )
    assert report["archive_size"] > 300 and report["tiles_read"] >= 1
    assert report["descriptors"]["landcover_product"] == "MODIS IGBP 2019, tiled"
    assert list(comparison.table.columns) == ["archive", "random", "greedy", "genetic"]
    assert (tmp_path / "out" / "table_ii.txt").read_text().startswith("Table II (")
    assert "tiled" in (tmp_path / "out" / "table_ii.txt").read_text().splitlines()[0]
