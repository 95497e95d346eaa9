"""``xcsmoe evaluate RECIPE`` end to end on the sample catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from xcsmoe.cli import main
from xcsmoe.errors import ConfigError
from xcsmoe.evaluation.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def test_sample_recipe_parses():
    recipe = load_recipe(REPO / "recipes" / "evaluate_sample.yaml")
    assert [m.label for m in recipe.models] == ["random", "pretrained"]
    assert recipe.linear_probe.epochs == 50 and recipe.linear_probe.cls_mode == "raw"
    assert recipe.models[1].weights.endswith("runs/pretrain-sample/encoder.safetensors")


def test_evaluate_reports_random_and_pretrained_side_by_side(tmp_path, sample_catalog, capsys):
    from xcsmoe.model.checkpoint import save_checkpoint
    from xcsmoe.model.registry import create_model

    torch.manual_seed(1)  # stands in for the pretraining run's encoder (same format)
    weights = save_checkpoint(create_model("csmoe_tiny"), tmp_path / "encoder.safetensors")
    recipe = yaml.safe_load((REPO / "recipes" / "evaluate_sample.yaml").read_text())
    recipe["dataset"]["path"] = str(Path(sample_catalog.self_href).parent)
    recipe["output"] = str(tmp_path / "out")
    recipe["models"][1]["weights"] = str(weights)
    recipe["linear_probe"]["epochs"] = 5
    recipe["retrieval"]["modalities"] = ["s2", "s1->s2"]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["evaluate", str(path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "random" in printed and "pretrained" in printed and "mAP_micro" in printed
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table.columns) == ["task", "metric", "random", "pretrained"]
    assert {"linear probe (raw)", "retrieval s2->s2", "retrieval s1->s2"} <= set(table["task"])
    assert table[["random", "pretrained"]].notna().all().all()
    assert not table["random"].equals(table["pretrained"])  # two different encoders
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["units"] == "percent" and len(payload["results"]) == len(table)
    assert (tmp_path / "out" / "features" / "pretrained.zarr" / "zarr.json").is_file()


def test_bad_recipes_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"kind": "mnist"}, "models": [], "output": "x"}))
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xcsmoe: error: dataset.kind") and err.count("\n") == 1
    path.write_text(
        yaml.safe_dump(
            {
                "dataset": {"kind": "sample_catalog"},
                "output": "x",
                "models": [{"name": "csmoe_tiny", "weights": str(tmp_path / "none.safetensors")}],
            }
        )
    )
    assert main(["evaluate", str(path)]) == 2
    assert "weights" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="labels"):
        load_recipe_from(
            {
                "dataset": {"kind": "sample_catalog"},
                "output": "x",
                "models": [
                    {"name": "a", "weights": "random", "label": "x"},
                    {"name": "b", "weights": "random", "label": "x"},
                ],
            }
        )


def load_recipe_from(data):
    from xcsmoe.evaluation.recipe import recipe_from_dict

    return recipe_from_dict(data)
