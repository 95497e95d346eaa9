"""Stratified GA and random selection: sizes, seeds, spread, errors, Dask."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from xcsmoe.errors import ConfigError, InputError, SamplingError
from xcsmoe.sampling.fitness import haversine_km, pairwise_km, spread_score
from xcsmoe.sampling.genetic import GAConfig, candidate_pool
from xcsmoe.sampling.select import select_genetic, select_random
from xcsmoe.sampling.stats import spread_statistics

FAST = {"population": 20, "generations": 40}


def _archive(seed: int = 0) -> gpd.GeoDataFrame:
    """Three strata: 'big' (1500, 90 % in one dense cluster), 'mid' (300), 'tiny' (7)."""
    rng = np.random.default_rng(seed)
    parts = {
        "big": np.concatenate(
            [
                np.column_stack([rng.normal(20, 1.0, 1350), rng.normal(10, 1.0, 1350)]),
                np.column_stack([rng.uniform(-20, 60, 150), rng.uniform(-30, 40, 150)]),
            ]
        ),
        "mid": np.column_stack([rng.uniform(100, 140, 300), rng.uniform(30, 60, 300)]),
        "tiny": np.column_stack([rng.uniform(-70, -60, 7), rng.uniform(-10, 0, 7)]),
    }
    frames = [
        pd.DataFrame({"lon": xy[:, 0], "lat": xy[:, 1], "stratum": name})
        for name, xy in parts.items()
    ]
    frame = pd.concat(frames, ignore_index=True)
    frame["sample_id"] = [f"s{i:05d}" for i in range(len(frame))]
    frame["climate"] = frame["stratum"].map({"big": "BWh", "mid": "Dfb", "tiny": "Af"})
    frame["landcover"] = "Barren"
    return gpd.GeoDataFrame(
        frame, geometry=gpd.points_from_xy(frame.lon, frame.lat), crs="EPSG:4326"
    )


@pytest.fixture(scope="module")
def archive() -> gpd.GeoDataFrame:
    return _archive()


@pytest.fixture(scope="module")
def genetic(archive: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return select_genetic(archive, per_stratum=50, seed=3, **FAST)


def test_haversine_known_distances() -> None:
    assert haversine_km(0, 0, 1, 0) == pytest.approx(111.195, abs=0.01)
    assert haversine_km(0, 0, 180, 0) == pytest.approx(np.pi * 6371.0088)
    assert haversine_km(179.5, 0, -179.5, 0) == pytest.approx(111.195, abs=0.01)  # antimeridian
    matrix = pairwise_km(np.array([0.0, 0.0]), np.array([0.0, 90.0]))
    assert matrix[0, 1] == pytest.approx(np.pi / 2 * 6371.0088) and matrix[0, 0] == 0


def test_fitness_rewards_spread() -> None:
    clustered = spread_score(np.array([0.0, 0.1, 0.2, 10.0]), np.zeros(4))
    spread = spread_score(np.array([0.0, 3.3, 6.6, 10.0]), np.zeros(4))
    assert spread > clustered


def test_strata_sizes_honoured_and_tiny_stratum_kept_whole(archive, genetic) -> None:
    for selection in (genetic, select_random(archive, per_stratum=50, seed=3)):
        counts = selection["stratum"].value_counts()
        assert counts.to_dict() == {"big": 50, "mid": 50, "tiny": 7}
        assert set(selection.loc[selection.stratum == "tiny", "sample_id"]) == set(
            archive.loc[archive.stratum == "tiny", "sample_id"]
        )
        assert selection["sample_id"].is_unique
        assert selection.attrs["selection"]["kept_whole"] == 1
    assert genetic.attrs["strata_log"]["tiny"] == {"kept_whole": True, "size": 7}


def test_tolerance_band(archive) -> None:
    selection = select_genetic(archive, per_stratum=50, seed=1, tolerance=3, **FAST)
    counts = selection["stratum"].value_counts()
    assert 47 <= counts["big"] <= 53 and 47 <= counts["mid"] <= 53 and counts["tiny"] == 7


def test_same_seed_same_selection_other_seed_differs(archive, genetic) -> None:
    again = select_genetic(archive, per_stratum=50, seed=3, **FAST)
    assert again["sample_id"].tolist() == genetic["sample_id"].tolist()
    other = select_genetic(archive, per_stratum=50, seed=4, **FAST)
    assert other["sample_id"].tolist() != genetic["sample_id"].tolist()
    assert (
        select_random(archive, per_stratum=50, seed=3)["sample_id"].tolist()
        == select_random(archive, per_stratum=50, seed=3)["sample_id"].tolist()
    )


def test_genetic_beats_random_on_fitness_and_spread(archive, genetic) -> None:
    rnd = select_random(archive, per_stratum=50, seed=3)
    for stratum in ("big", "mid"):
        ga, rs = genetic[genetic.stratum == stratum], rnd[rnd.stratum == stratum]
        assert spread_score(ga.lon, ga.lat) > spread_score(rs.lon, rs.lat)
        ga_stats, rs_stats = spread_statistics(ga.lon, ga.lat), spread_statistics(rs.lon, rs.lat)
        assert ga_stats["average"] > rs_stats["average"]
        assert ga_stats["minimum"] > rs_stats["minimum"]
        assert ga_stats["nearest"] > rs_stats["nearest"]
    log = genetic.attrs["strata_log"]["big"]
    assert log["fitness"] > log["fitness_initial_best"] > log["fitness_random_mean"]
    assert log["generations"] == FAST["generations"]


def test_time_budget_stops_early(archive) -> None:
    selection = select_genetic(
        archive, per_stratum=50, seed=0, generations=100_000, max_seconds=0.3
    )
    log = selection.attrs["strata_log"]["big"]
    assert log["generations"] < 100_000 and log["seconds"] < 5


def test_candidate_pool_thins_large_strata() -> None:
    rng = np.random.default_rng(0)
    lon, lat = rng.normal(0, 1, 20_000), rng.normal(0, 1, 20_000)
    lon[:100], lat[:100] = rng.uniform(-60, 60, 100), rng.uniform(-60, 60, 100)
    pool = candidate_pool(lon, lat, limit=500, rng=np.random.default_rng(1))
    assert len(pool) == 500 and len(np.unique(pool)) == 500
    assert np.isin(np.arange(100), pool).mean() > 0.5  # the sparse outliers survive thinning
    small = select_genetic(_archive(), per_stratum=30, seed=0, max_candidates=200, **FAST)
    assert small["stratum"].value_counts()["big"] == 30


def test_bad_inputs(archive) -> None:
    with pytest.raises(SamplingError, match="fewer than the largest stratum"):
        select_genetic(archive, per_stratum=len(archive) + 1)
    with pytest.raises(SamplingError, match="empty archive"):
        select_random(archive.iloc[:0], per_stratum=5)
    with pytest.raises(InputError, match="add_descriptors"):
        select_random(archive.drop(columns="stratum"), per_stratum=5)
    with pytest.raises(ConfigError, match="per_stratum"):
        select_random(archive, per_stratum=0)
    with pytest.raises(ConfigError, match="population"):
        select_genetic(archive, per_stratum=5, population=1)
    with pytest.raises(ConfigError, match="GAConfig fields"):
        select_genetic(archive, per_stratum=5, generation=3)
    with pytest.raises(ConfigError, match="more than per_stratum"):
        select_genetic(archive, per_stratum=50, max_candidates=50)
    with pytest.raises(ConfigError, match="mutation_rate"):
        GAConfig(mutation_rate=2.0)


def test_parallel_strata_on_a_local_cluster_match_serial(archive, genetic) -> None:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        parallel = select_genetic(archive, per_stratum=50, seed=3, client=client, **FAST)
        rnd = select_random(archive, per_stratum=50, seed=3, client=client)
        assert len(client.scheduler_info()["workers"]) == 2
    assert parallel["sample_id"].tolist() == genetic["sample_id"].tolist()
    assert (
        rnd["sample_id"].tolist()
        == select_random(archive, per_stratum=50, seed=3)["sample_id"].tolist()
    )
