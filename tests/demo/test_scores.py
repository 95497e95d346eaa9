"""The demo's measures and table on small, hand-checked inputs, and one regression:
expert-usage graphs of several layers computed together must not merge."""

from __future__ import annotations

import math

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xcsmoe.demo.report import markdown_table, results_table
from xcsmoe.demo.scores import expert_balance, normalised_entropy


def test_normalised_entropy_spans_zero_to_one():
    assert normalised_entropy(np.ones(4)) == pytest.approx(1.0)
    assert normalised_entropy(np.array([5.0, 0, 0, 0])) == pytest.approx(0.0)
    two_of_four = normalised_entropy(np.array([1.0, 1.0, 0, 0]))
    assert two_of_four == pytest.approx(math.log(2) / math.log(4))


def test_expert_balance_of_shares_and_of_dominant_experts():
    # four valid tokens, one without data; every token leans to expert 0
    shares = np.array([[0.4, 0.2, 0.2, 0.2]] * 4 + [[np.nan] * 4], dtype=np.float32).reshape(
        1, 5, 4
    )
    usage = xr.DataArray(shares.transpose(2, 0, 1), dims=("expert", "y", "x"))
    balance = expert_balance([usage])
    assert balance["dominant"] == pytest.approx(0.0)  # expert 0 wins every token
    expected = normalised_entropy(np.array([0.4, 0.2, 0.2, 0.2]))
    assert balance["share"] == pytest.approx(expected, rel=1e-6)
    assert 0.9 < balance["share"] < 1.0


def test_results_table_keeps_both_columns_and_blanks_undefined_chance():
    rows = [
        {"task": "S1→S2 pair retrieval", "metric": "top-1 hit", "random": 1.85,
         "pretrained": 22.2, "chance": 1.85},
        {"task": "expert balance (combine share)", "metric": "S2 block 1 of 2",
         "random": 99.8, "pretrained": 99.1, "chance": None},
    ]  # fmt: skip
    table = results_table(rows, ("random", "pretrained"))
    assert list(table.columns) == ["task", "metric", "random", "pretrained", "chance"]
    lines = markdown_table(table).splitlines()
    assert lines[0] == "| task | metric | random | pretrained | chance |"
    assert lines[2] == "| S1→S2 pair retrieval | top-1 hit | 1.9 | 22.2 | 1.9 |"
    assert lines[3].endswith("| 99.8 | 99.1 |  |")
    assert pd.isna(table.loc[1, "chance"])


def test_expert_usage_of_several_layers_computed_together_matches_one_by_one(sample_items):
    import xcsmoe

    cube = xcsmoe.load_cube([sample_items["s2"][0]], [sample_items["s1"][0]], chunks=-1)
    options = {"model": "csmoe_tiny", "weights": "random", "window": 64, "device": "cpu"}
    first = xcsmoe.expert_usage(cube, 16, sensor="s2", layer=0, **options)
    last = xcsmoe.expert_usage(cube, 16, sensor="s1", layer=-1, **options)
    together = dask.compute(first, last, scheduler="sync")
    alone = [first.compute(scheduler="sync"), last.compute(scheduler="sync")]
    for joint, single in zip(together, alone, strict=True):
        np.testing.assert_array_equal(joint.values, single.values)
    assert not np.allclose(alone[0].values, alone[1].values, equal_nan=True)
