"""GeoParquet rows per window and PCA pictures of token embeddings."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

import xcsmoe
from xcsmoe.embedding.export import cls_table, pca_rgb


@pytest.fixture
def emb(cube):
    return cube.csmoe.embed(
        patch=16, model="csmoe_tiny", weights="random", window=64, normalise=False
    ).compute()


def test_geoparquet_has_one_row_per_valid_window(emb, tmp_path):
    path = xcsmoe.cls_to_geoparquet(emb, tmp_path / "cls.parquet")
    table = gpd.read_parquet(path)
    assert len(table) == emb.sizes["time"] * emb.sizes["cls_y"] * emb.sizes["cls_x"]
    assert table.crs.to_epsg() == 4326
    assert {"unique_id", "timestamp", "embedding", "utm_footprint", "pixel_bbox"} <= set(table)
    assert table.unique_id.is_unique
    first = table.iloc[0]
    np.testing.assert_array_equal(np.asarray(first.embedding), emb.cls.values[0, :, 0, 0])
    assert list(first.pixel_bbox) == [0, 0, 64, 64]
    # the first window is the cube's top-left 640 m square (cube origin 600000, 5101200)
    footprint = gpd.GeoSeries.from_wkt([first.utm_footprint]).iloc[0]
    assert footprint.equals(box(600_000, 5_101_200 - 640, 600_640, 5_101_200))
    assert -180 <= first.centre_lon <= 180 and 40 < first.centre_lat < 50


def test_windows_below_min_valid_are_left_out(emb):
    rows = len(cls_table(emb))
    emb = emb.copy(deep=True)
    emb["valid_fraction"][0, 0, 0] = 0.0
    assert len(cls_table(emb)) == rows - 1
    assert len(cls_table(emb, min_valid=1.0)) == 0


def test_pca_png(emb, tmp_path):
    rgb = pca_rgb(emb.tokens.isel(time=0))
    assert rgb.shape == (emb.sizes["y"], emb.sizes["x"], 3)
    assert np.nanmin(rgb) >= 0 and np.nanmax(rgb) <= 1 and np.nanstd(rgb) > 0.05
    path = xcsmoe.plot_embedding_pca(emb, tmp_path / "pca.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
