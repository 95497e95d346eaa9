"""Public names, the top-level CLI, and the global recipe on a small region."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import xcsmoe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "global_majortom.py"


@pytest.mark.parametrize(
    "name",
    [
        "archive_from_items",
        "majortom_archive",
        "add_descriptors",
        "select_genetic",
        "select_random",
        "selection_statistics",
        "plot_selection",
    ],
)
def test_public_names_resolve(name: str) -> None:
    assert callable(getattr(xcsmoe, name))


def test_sample_command_is_registered() -> None:
    from xcsmoe.cli import build_parser

    args = build_parser().parse_args(
        ["sample", "majortom", "--region", "0", "44", "1", "45", "--out", "x"]
    )
    assert args.region == [0.0, 44.0, 1.0, 45.0] and callable(args.run)


def test_global_recipe_on_a_small_region(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("global_majortom", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    comparison, report = recipe.run(
        tmp_path,
        region=(-5.0, 42.0, 3.0, 46.0),
        per_stratum=20,
        workers=1,
        generations=10,
        population=8,
    )
    assert report["archive_size"] > 1500 and report["strata"] > 10
    assert {"archive (Major TOM grid over land)", "descriptors", "genetic selection"} <= set(
        report["timings"]
    )
    assert len(comparison.genetic) == len(comparison.random)
    assert (tmp_path / "genetic.parquet").exists() and (tmp_path / "map.png").exists()
