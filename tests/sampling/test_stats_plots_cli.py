"""Table II statistics, maps, the ``xcsmoe sample`` command and the workflow files."""

from __future__ import annotations

import argparse
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from xcsmoe.errors import InputError
from xcsmoe.sampling.fitness import haversine_km
from xcsmoe.sampling.plots import plot_selection
from xcsmoe.sampling.stats import format_statistics, selection_statistics, spread_statistics


def _frame(lon, lat, climate, landcover) -> gpd.GeoDataFrame:
    frame = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(len(lon))],
            "lon": lon,
            "lat": lat,
            "climate": climate,
            "landcover": landcover,
        }
    )
    frame["stratum"] = frame["climate"] + " | " + frame["landcover"]
    return gpd.GeoDataFrame(
        frame, geometry=gpd.points_from_xy(frame.lon, frame.lat), crs="EPSG:4326"
    )


def test_table_ii_on_a_hand_checked_set() -> None:
    # four points on the equator at 0, 1, 3, 10 degrees east
    frame = _frame(
        [0.0, 1.0, 3.0, 10.0],
        [0.0] * 4,
        ["Af", "Af", "Af", "Aw"],
        ["Forest", "Forest", "Crop", "Crop"],
    )
    table = selection_statistics(frame)["selection"]
    degree = haversine_km(0, 0, 1, 0)
    pairs = np.array([1, 3, 10, 2, 9, 7]) * degree
    assert table["tiles"] == 4
    assert (
        table["tiles per climate zone (mean)"] == 2 and table["tiles per climate zone (std)"] == 1
    )
    assert table["tiles per joint stratum (mean)"] == pytest.approx(4 / 3)
    assert table["average distance [km]"] == pytest.approx(pairs.mean(), rel=1e-6)
    assert table["minimum distance [km]"] == pytest.approx(degree, rel=1e-6)
    assert table["average nearest-neighbour distance [km]"] == pytest.approx(
        np.mean([1, 1, 2, 7]) * degree, rel=1e-6
    )
    # only "Af | Forest" has two samples: its distances are those of that stratum
    assert table["minimum distance within strata [km]"] == pytest.approx(degree, rel=1e-6)
    text = format_statistics(selection_statistics({"a": frame, "b": frame}))
    assert "tiles per climate zone" in text and "2 ± 1" in text and "(std)" not in text


def test_sampled_average_distance_is_close_to_exact() -> None:
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-180, 180, 3000), rng.uniform(-60, 60, 3000)
    exact = spread_statistics(lon, lat)["average"]
    sampled = spread_statistics(lon, lat, exact_limit=100, pair_samples=400_000)["average"]
    assert sampled == pytest.approx(exact, rel=0.01)


def test_statistics_need_descriptors() -> None:
    frame = _frame([0.0, 1.0], [0.0, 0.0], ["Af", "Af"], ["x", "x"]).drop(columns="stratum")
    with pytest.raises(InputError, match="add_descriptors"):
        selection_statistics(frame)


def test_plot_writes_a_png(tmp_path) -> None:
    frame = _frame([0.0, 50.0, -60.0], [10.0, 20.0, -5.0], ["Af", "Aw", "Af"], ["x", "y", "x"])
    figure = plot_selection({"one": frame, "two": frame}, tmp_path / "map.png", title="t")
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == 2 and "3 samples, 2 strata" in figure.axes[0].get_title()


def test_sample_items_command_writes_everything(tmp_path) -> None:
    from xcsmoe.sampling.cli import add_commands

    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-8, 30, 400), rng.uniform(36, 60, 400)  # Europe, mostly land
    features = [
        {
            "type": "Feature",
            "id": f"i{k}",
            "bbox": [x - 0.05, y - 0.05, x + 0.05, y + 0.05],
            "geometry": None,
            "properties": {},
        }
        for k, (x, y) in enumerate(zip(lon, lat, strict=True))
    ]
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "sample",
            "items",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--per-stratum",
            "5",
            "--generations",
            "5",
            "--population",
            "6",
        ]
    )
    assert args.run(args) == 0
    out = tmp_path / "out"
    genetic = gpd.read_parquet(out / "genetic.parquet")
    assert genetic.crs.to_epsg() == 4326 and {"climate", "landcover", "stratum"} <= set(
        genetic.columns
    )
    assert genetic["stratum"].value_counts().max() == 5
    table = pd.read_csv(out / "table_ii.csv", index_col=0)
    assert (
        list(table.columns) == ["archive", "random", "genetic"]
        and table.loc["tiles", "archive"] <= 400
    )
    run = json.loads((out / "run.json").read_text())
    assert run["genetic"]["method"] == "genetic" and "genetic selection" in run["timings"]
    assert (out / "map.png").stat().st_size > 10_000
