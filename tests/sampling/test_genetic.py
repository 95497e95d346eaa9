"""The GA against greedy farthest-point on real strata, its stops, seeds and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from xcsmoe.errors import InputError, SamplingError
from xcsmoe.sampling.archive import majortom_archive
from xcsmoe.sampling.descriptors import add_descriptors
from xcsmoe.sampling.fitness import pairwise_km, spread_score
from xcsmoe.sampling.genetic import GAConfig, greedy_farthest_point, select_stratum
from xcsmoe.sampling.select import select_genetic, select_greedy, select_random, stratum_seed
from xcsmoe.sampling.stats import selection_statistics, spread_statistics


@pytest.fixture(scope="module")
def archive():
    """Major TOM cells (10 km) over south-west France and northern Spain, described."""
    return add_descriptors(majortom_archive((-5.0, 42.0, 3.0, 46.0)))


def _stratum(archive, rank: int = 0) -> tuple[str, np.ndarray, np.ndarray]:
    name = archive["stratum"].value_counts().index[rank]
    rows = archive[archive["stratum"] == name]
    return str(name), rows["lon"].to_numpy(), rows["lat"].to_numpy()


def test_greedy_farthest_point_is_a_2_approximation_of_the_spread() -> None:
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-10, 10, 400), rng.uniform(40, 50, 400)
    picks = greedy_farthest_point(lon, lat, 20)
    assert len(np.unique(picks)) == 20
    np.testing.assert_array_equal(picks, greedy_farthest_point(lon, lat, 20))  # no seed needed
    distances = pairwise_km(lon, lat)
    covering = distances[:, picks].min(axis=1).max()  # every sample is this close to a pick
    chosen = distances[np.ix_(picks, picks)] + np.diag(np.full(20, np.inf))
    assert chosen.min() >= covering - 1e-6  # farthest-point packing ≥ covering radius


def test_ga_beats_greedy_on_a_real_stratum(archive) -> None:
    name, lon, lat = _stratum(archive)
    assert len(lon) > 300
    greedy = greedy_farthest_point(lon, lat, 30)
    chosen, log = select_stratum(
        lon, lat, 30, config=GAConfig(generations=50), seed=stratum_seed(0, name)
    )
    assert len(chosen) == 30
    ga_score, greedy_score = (
        spread_score(lon[chosen], lat[chosen]),
        spread_score(lon[greedy], lat[greedy]),
    )
    assert ga_score > greedy_score
    assert log["fitness"] == pytest.approx(ga_score) and log["fitness_greedy"] == pytest.approx(
        greedy_score
    )
    ga_min = spread_statistics(lon[chosen], lat[chosen])["minimum"]
    greedy_min = spread_statistics(lon[greedy], lat[greedy])["minimum"]
    assert ga_min >= greedy_min * (1 - 1e-9)
    assert log["fitness_greedy"] > log["fitness_random_mean"]


def test_convergence_stop_and_budget_are_logged(archive) -> None:
    name, lon, lat = _stratum(archive, rank=1)
    seed = stratum_seed(0, name)
    _, log = select_stratum(
        lon, lat, 20, config=GAConfig(generations=10_000, patience=5), seed=seed
    )
    assert log["stopped"] == "converged" and log["generations"] < 10_000
    _, capped = select_stratum(lon, lat, 20, config=GAConfig(generations=3), seed=seed)
    assert capped["stopped"] == "generations" and capped["generations"] == 3
    budget = GAConfig(generations=1_000_000, patience=None, max_seconds=0.2)
    chosen, timed = select_stratum(lon, lat, 20, config=budget, seed=seed)
    assert timed["stopped"] == "max_seconds" and timed["generations"] > 0
    # replaying the recorded generation count without a budget gives the same selection
    replay = GAConfig(generations=timed["generations"], patience=None)
    np.testing.assert_array_equal(chosen, select_stratum(lon, lat, 20, config=replay, seed=seed)[0])


def test_same_seed_same_selection_and_flags(archive) -> None:
    settings = {"per_stratum": 100, "generations": 15, "population": 10}
    first = select_genetic(archive, seed=5, **settings)
    again = select_genetic(archive, seed=5, **settings)
    assert first["sample_id"].tolist() == again["sample_id"].tolist()
    assert first.attrs["selection"]["deterministic"] is True
    budget = select_genetic(archive, seed=5, max_seconds=0.05, **settings)
    assert budget.attrs["selection"]["budget_cut"] >= 0
    assert budget.attrs["selection"]["deterministic"] == (
        budget.attrs["selection"]["budget_cut"] == 0
    )


def test_table_ii_greedy_vs_ga_vs_random(archive) -> None:
    ga = select_genetic(archive, per_stratum=60, seed=0, generations=20, population=10)
    table = selection_statistics(
        {
            "archive": archive,
            "random": select_random(archive, per_stratum=60, seed=0),
            "greedy": select_greedy(archive, per_stratum=60),
            "genetic": ga,
        }
    )
    minimum = table.loc["minimum distance within strata [km]"]
    assert minimum["genetic"] >= minimum["greedy"] * (1 - 1e-9) > minimum["random"]
    nearest = table.loc["average nearest-neighbour distance within strata [km]"]
    assert nearest["greedy"] > nearest["random"] and nearest["genetic"] > nearest["random"]
    assert table.loc["tiles", "genetic"] == table.loc["tiles", "greedy"]
    assert "MODIS" in table.attrs["products"]["land cover"]


def test_bad_coordinates_and_degenerate_targets_fail_early(archive) -> None:
    broken = archive.copy()
    broken.loc[broken.index[3], "lon"] = np.nan
    for call in (
        lambda: select_genetic(broken, per_stratum=5),
        lambda: select_random(broken, per_stratum=5),
        lambda: selection_statistics(broken),
        lambda: add_descriptors(broken[["sample_id", "lon", "lat", "geometry"]]),
        lambda: spread_statistics(broken["lon"], broken["lat"]),
    ):
        with pytest.raises(InputError, match="NaN"):
            call()
    outside = archive.copy()
    outside.loc[outside.index[0], "lat"] = 91.0
    with pytest.raises(InputError, match="out-of-range"):
        select_genetic(outside, per_stratum=5)
    largest = int(archive["stratum"].value_counts().max())
    with pytest.raises(SamplingError, match=f"largest stratum's {largest}"):
        select_genetic(archive, per_stratum=largest)
    with pytest.raises(SamplingError, match="kept whole"):
        select_random(archive, per_stratum=len(archive) - 1)
    assert len(select_random(archive, per_stratum=largest - 1)) < len(archive)


@pytest.mark.slow
def test_defaults_beat_greedy_on_the_three_largest_european_strata() -> None:
    europe = add_descriptors(majortom_archive((-10.0, 35.0, 30.0, 60.0)))
    for name in europe["stratum"].value_counts().index[:3]:
        rows = europe[europe["stratum"] == name]
        lon, lat = rows["lon"].to_numpy(), rows["lat"].to_numpy()
        assert len(lon) > 3000
        greedy = greedy_farthest_point(lon, lat, 100)
        chosen, _ = select_stratum(lon, lat, 100, config=GAConfig(), seed=stratum_seed(0, name))
        assert spread_score(lon[chosen], lat[chosen]) > spread_score(lon[greedy], lat[greedy])
        assert spread_statistics(lon[chosen], lat[chosen])["minimum"] >= spread_statistics(
            lon[greedy], lat[greedy]
        )["minimum"] * (1 - 1e-9)
