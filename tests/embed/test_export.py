"""GeoParquet rows per window and PCA pictures of token embeddings."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

import xcsmoe
from xcsmoe.embedding.export import (
    NO_DATA_COLOUR,
    cls_table,
    expert_usage_figure,
    layer_name,
    pca_rgb,
    plot_expert_usage,
)


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
    assert (table.utm_crs == "EPSG:32633").all()  # Major TOM's convention, not WKT
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


def test_padded_edge_windows_are_clipped_to_the_data(emb, tmp_path):
    """120 x 200 px cut into 64 px windows: the last row holds 56 px, the last column 8."""
    table = gpd.read_parquet(xcsmoe.cls_to_geoparquet(emb, tmp_path / "cls.parquet"))
    first = table[table.timestamp == table.timestamp.min()]
    last = first.iloc[-1]  # bottom-right window
    assert list(last.pixel_bbox) == [192, 64, 200, 120]
    footprint = gpd.GeoSeries.from_wkt([last.utm_footprint]).iloc[0]
    assert footprint.equals(box(601_920, 5_100_000, 602_000, 5_100_560))
    assert last.valid_fraction == pytest.approx(8 * 56 / 64**2)
    footprints = gpd.GeoSeries.from_wkt(first.utm_footprint)
    assert footprints.union_all().area == pytest.approx(1200 * 2000)  # exactly the cube


@pytest.fixture(scope="module")
def usage():
    from tests.embed.conftest import synthetic_cube

    cube = synthetic_cube(128, 128, 1, chunks=None)
    for name in cube.data_vars:  # the top-left 64 px window holds no data
        cube[name][:, :64, :64] = np.nan
    return xcsmoe.expert_usage(
        cube, 16, sensor="s2", layer=-1, model="csmoe_tiny", weights="random", window=64,
        normalise=False, device="cpu",
    ).compute()  # fmt: skip


def test_expert_usage_map(usage, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    experts = usage.sizes["expert"]
    fig = expert_usage_figure(usage, title="synthetic")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"expert {i}" for i in range(experts)] + ["no data"]
    handles = ax.get_legend().legend_handles
    colours = [tuple(h.get_facecolor()) for h in handles]
    assert len(set(colours)) == experts + 1 and colours[-1] == to_rgba(NO_DATA_COLOUR)
    assert ax.get_title() == "synthetic\ndominant S2 expert, shared block 1 of 1"
    assert ax.get_xlabel() == "x [m, EPSG:32633]" and ax.get_ylabel() == "y [m, EPSG:32633]"
    image = ax.get_images()[0]
    left, right, bottom, top = image.get_extent()
    assert (left, right, bottom, top) == (600_000, 601_280, 5_100_000, 5_101_280)
    rgba = image.to_rgba(image.get_array())
    no_data = usage.dominant_expert.isel(time=0).values == -1
    assert no_data.sum() == 16 and no_data[:4, :4].all()  # the 4 x 4 tokens of that window
    np.testing.assert_allclose(rgba[no_data], [to_rgba(NO_DATA_COLOUR)] * 16, atol=1e-6)
    assert not np.isclose(rgba[~no_data], to_rgba(NO_DATA_COLOUR)).all(axis=1).any()
    plt.close(fig)
    png = plot_expert_usage(usage, tmp_path / "experts.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layers_are_named_like_a_person_would():
    # csmoe_tiny: 2 modality-specific layers and 1 shared; csmoe_p16: 4 and 2
    assert layer_name(0, sensor="s2", model="csmoe_tiny") == "S2 block 1 of 2"
    assert layer_name(-1, sensor="s1", model="csmoe_tiny") == "shared block 1 of 1"
    assert layer_name(-1, sensor="s2", model="csmoe_p16") == "shared block 2 of 2"
    assert layer_name(3, sensor="s1", model="csmoe_p16") == "S1 block 4 of 4"
