"""Class tables (water/nodata from the product), Table II definitions, map legends."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from xcsmoe.errors import ConfigError
from xcsmoe.sampling.archive import majortom_archive
from xcsmoe.sampling.classtables import class_table, shipped_tables
from xcsmoe.sampling.descriptors import add_descriptors
from xcsmoe.sampling.fitness import haversine_km
from xcsmoe.sampling.plots import coastline_source, plot_selection
from xcsmoe.sampling.rasters import MODIS_TIFF, modis_igbp
from xcsmoe.sampling.stats import format_statistics, selection_statistics, within_strata_average

BISCAY = (-6.0, 43.0, -1.0, 45.0)  # sea and land
IGBP_TO_WORLDCOVER = {0: 80, 1: 10, 2: 10, 3: 10, 4: 10, 5: 10, 6: 20, 7: 20, 8: 10, 9: 30}
IGBP_TO_WORLDCOVER |= {10: 30, 11: 90, 12: 40, 13: 50, 14: 40, 15: 70, 16: 60, 255: 0}


def test_shipped_and_user_class_tables(tmp_path) -> None:
    assert {"esa-worldcover", "modis-igbp"} <= set(shipped_tables())
    modis = class_table("modis_igbp")
    assert modis.water == {0} and modis.nodata == {255} and modis.classes[12] == "Cropland"
    (tmp_path / "mine.csv").write_text(
        "code,name,water,nodata\n0,none,0,1\n1,Sea,1,0\n2,Land,0,0\n"
    )
    table = class_table(tmp_path / "mine.csv")
    assert (table.water, table.nodata, table.classes[2]) == ({1}, {0}, "Land")
    inline = class_table({"classes": {"5": "a"}, "water": 5, "title": "T"})
    assert inline.water == {5} and inline.title == "T"
    with pytest.raises(ConfigError, match="class table"):
        class_table(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="integer codes"):
        class_table({"classes": {"x": "a"}})


@pytest.fixture(scope="module")
def worldcover_coded(tmp_path_factory):
    """The MODIS raster over the Bay of Biscay, recoded to WorldCover's class codes."""
    import rasterio
    from rasterio.windows import from_bounds

    from xcsmoe.sampling.classtables import data_path

    path = tmp_path_factory.mktemp("wc") / "worldcover_coded.tif"
    lookup = np.zeros(256, dtype=np.uint8)
    for igbp, wc in IGBP_TO_WORLDCOVER.items():
        lookup[igbp] = wc
    with rasterio.open(data_path(MODIS_TIFF)) as src:
        window = from_bounds(-8.0, 41.0, 1.0, 47.0, src.transform).round_offsets().round_lengths()
        data = lookup[src.read(1, window=window)]
        profile = src.profile | {
            "width": data.shape[1],
            "height": data.shape[0],
            "transform": src.window_transform(window),
            "nodata": None,
        }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def test_water_and_nodata_come_from_the_products_class_table(worldcover_coded) -> None:
    default = majortom_archive(BISCAY)
    coded = majortom_archive(BISCAY, landcover=worldcover_coded, landcover_classes="esa-worldcover")
    assert coded.attrs["summary"]["water"] == default.attrs["summary"]["water"] > 100
    assert coded["sample_id"].tolist() == default["sample_id"].tolist()
    assert coded.attrs["summary"]["landcover_product"].startswith("ESA WorldCover")
    described = add_descriptors(
        coded, landcover=worldcover_coded, landcover_classes="esa-worldcover"
    )
    assert "Permanent water bodies" not in set(described["landcover"].astype(str))
    assert {"Tree cover", "Cropland"} <= set(described["landcover"].astype(str))
    with pytest.raises(ConfigError, match="water codes"):
        majortom_archive(BISCAY, landcover=worldcover_coded)  # no table: water unknown


def test_within_strata_average_is_pair_weighted() -> None:
    degree = haversine_km(0, 0, 1, 0)
    lon = np.array([0.0, 1.0, 10.0, 12.0, 14.0])
    strata = np.array(["A", "A", "B", "B", "B"])
    # A: one pair at 1°; B: pairs at 2°, 4°, 2° → (1 + 2 + 4 + 2) / 4 pairs
    expected = (1 + 2 + 4 + 2) / 4 * degree
    assert within_strata_average(lon, np.zeros(5), strata) == pytest.approx(expected, rel=1e-6)
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-50, 50, 3000), rng.uniform(-40, 40, 3000)
    strata = np.where(lon > 0, "east", np.where(lat > 0, "north-west", "south-west"))
    exact = within_strata_average(lon, lat, strata)
    sampled = within_strata_average(lon, lat, strata, exact_limit=100, pair_samples=300_000)
    assert sampled == pytest.approx(exact, rel=0.01)


@pytest.fixture(scope="module")
def described():
    return add_descriptors(majortom_archive((-10.0, 36.0, 20.0, 50.0), spacing_km=50))


def test_table_ii_names_its_products(described) -> None:
    table = selection_statistics(described)
    assert "MODIS" in table.attrs["products"]["land cover"]
    assert "Köppen" in table.attrs["products"]["climate"]
    first = format_statistics(table).splitlines()[0]
    assert first.startswith("Table II (") and "MODIS" in first


def test_maps_have_legends_products_and_coastlines(described, tmp_path) -> None:
    assert described["stratum"].nunique() > 20
    figure = plot_selection({"a": described, "b": described.iloc[::2]}, tmp_path / "map.png")
    legends = [c for c in figure.axes[0].get_children() if type(c).__name__ == "Legend"]
    titles = {legend.get_title().get_text() for legend in legends}
    assert titles == {"land cover", "climate group"}
    labels = {t.get_text() for legend in legends for t in legend.get_texts()}
    assert set(described["landcover"].astype(str)) <= labels
    assert any(label.startswith("C temperate") for label in labels)
    assert "MODIS" in figure._suptitle.get_text()
    assert "Natural Earth" in coastline_source() or "contoured" in coastline_source()
    assert (tmp_path / "map.png").stat().st_size > 50_000
    few = described[described["stratum"].isin(described["stratum"].unique()[:3])]
    legend = plot_selection(few).axes[0].get_legend()
    assert legend.get_title().get_text() == "joint stratum" and len(legend.get_texts()) == 3


def test_land_mask_uses_the_products_water_codes() -> None:
    from xcsmoe.sampling.plots import land_mask

    land, extent = land_mask(step=20)
    data = np.asarray(modis_igbp().data)[::20, ::20]
    assert extent == (-180.0, 180.0, -90.0, 90.0)
    assert land.sum() == ((data != 0) & (data != 255)).sum() and 0.2 < land.mean() < 0.4
    frame = pd.DataFrame({"lon": [0.0], "lat": [0.0], "stratum": ["x"]})
    plot_selection(gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy([0], [0])), land=False)


def test_cli_takes_products_and_class_tables() -> None:
    import argparse

    from xcsmoe.sampling.cli import add_commands, landcover_source
    from xcsmoe.sampling.stac_product import StacCategoricalRaster

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "sample",
            "majortom",
            "--region",
            "170",
            "60",
            "-170",
            "62",
            "--out",
            "x",
            "--landcover",
            "esa-worldcover",
            "--stac-api",
            "http://127.0.0.1:9",
            "--landcover-classes",
            "esa-worldcover",
            "--patience",
            "7",
        ]
    )
    assert args.region == [170.0, 60.0, -170.0, 62.0] and args.patience == 7
    product = landcover_source(args)
    assert isinstance(product, StacCategoricalRaster)
    assert product.url == "http://127.0.0.1:9" and product.water == {80}
    plain = parser.parse_args(["sample", "items", "a.json", "--out", "x"])
    assert landcover_source(plain) is None and plain.generations == 400
