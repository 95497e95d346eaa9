"""``evaluate(recipe)``: every model of a recipe through the same probes and retrievals.

Metadata → plan → execution: the recipe is parsed and checked, the dataset read once,
each model's weights checked; then per model the features are encoded once into
``<output>/features/<label>.zarr`` (resumed when already there) and every probe and
retrieval reads them. The results table has one row per (task, metric) and one column
per model label (scores in %), written as ``results.csv`` and ``results.json``.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from xcsmoe.errors import ConfigError, expected
from xcsmoe.evaluation.recipe import EvalRecipe, ModelEntry, load_recipe

__all__ = ["evaluate", "read_dataset"]


def evaluate(recipe: EvalRecipe | str | PathLike[str], *, progress: bool = True) -> pd.DataFrame:
    """Run ``recipe`` (a path or an :class:`EvalRecipe`); returns the results table and
    writes it to ``recipe.output`` as CSV and JSON."""
    from xcsmoe.evaluation.report import write_results

    recipe = recipe if isinstance(recipe, EvalRecipe) else load_recipe(recipe)
    models, skipped = _usable_models(recipe.models)
    if not models:
        raise ConfigError(
            expected(
                "models",
                "at least one model whose weights exist",
                [m.weights for m in recipe.models],
            )
        )
    samples = read_dataset(recipe.dataset)
    rows: list[dict[str, Any]] = []
    for entry in models:
        features = _features(recipe, entry, samples, progress)
        for task, metric, value in _scores(recipe, features):
            rows.append(
                {"task": task, "metric": metric, "model": entry.label, "value": 100.0 * value}
            )
    table = pd.DataFrame(rows).pivot(index=["task", "metric"], columns="model", values="value")
    table = table[[m.label for m in models]].reset_index()
    table.attrs["skipped"] = [m.label for m in skipped]
    table.attrs["dataset"] = samples.attrs.get("dataset", "")
    table.attrs["samples"] = int(samples.sizes["sample"])
    write_results(table, recipe.output)
    return table


def read_dataset(spec: dict[str, Any]) -> xr.Dataset:
    """The sample set a recipe's ``dataset`` entry names."""
    from xcsmoe.evaluation import readers

    kind, limit = spec["kind"], spec.get("limit")
    if kind == "sample_catalog":
        return readers.read_sample_catalog(spec.get("path"))
    _require(spec, "path")
    if kind == "eurosat_ms":
        return readers.read_eurosat_ms(spec["path"], limit=limit)
    if kind == "bigearthnet":
        _require(spec, "metadata")
        return readers.read_bigearthnet(
            spec["path"], spec["metadata"], task=spec.get("task", "multilabel"), limit=limit
        )
    if kind == "geobench":
        from xcsmoe.evaluation.geobench import read_geobench

        return read_geobench(spec["path"], partition=spec.get("partition", "default"), limit=limit)
    from xcsmoe.evaluation.datasets import read_generic

    _require(spec, "labels")
    return read_generic(spec["path"], spec["labels"], task=spec.get("task", "multiclass"))


def _require(spec: dict[str, Any], key: str) -> None:
    if not spec.get(key):
        raise ConfigError(expected(f"dataset.{key}", f"a value for kind {spec['kind']!r}", None))


def _usable_models(entries: tuple[ModelEntry, ...]) -> tuple[list[ModelEntry], list[ModelEntry]]:
    from xcsmoe.embedding.runtime import model_spec
    from xcsmoe.model.hub import is_remote

    usable, skipped = [], []
    for entry in entries:
        if (
            entry.weights != "random"
            and not is_remote(entry.weights)  # a URL or name is downloaded, never skipped
            and not Path(entry.weights).is_file()
            and entry.if_missing == "skip"
        ):
            skipped.append(entry)
            continue
        model_spec(entry.name, entry.weights, seed=entry.seed)  # raises on a bad name or path
        usable.append(entry)
    return usable, skipped


def _features(
    recipe: EvalRecipe, entry: ModelEntry, samples: xr.Dataset, progress: bool
) -> xr.Dataset:
    from xcsmoe.evaluation.features import encode_features

    layers = recipe.segmentation_layers if recipe.segmentation is not None else ()
    return encode_features(
        samples, Path(recipe.output) / "features" / f"{entry.label}.zarr", model=entry.name,
        weights=entry.weights, seed=entry.seed, sensors=recipe.sensors, layers=layers,
        image_size=recipe.image_size, batch_size=recipe.batch_size, device=recipe.device,
        progress=progress,
    )  # fmt: skip


def _scores(recipe: EvalRecipe, features: xr.Dataset) -> list[tuple[str, str, float]]:
    from xcsmoe.evaluation.probe import linear_probe
    from xcsmoe.evaluation.retrieval import evaluate_retrieval
    from xcsmoe.evaluation.segmentation import segmentation_probe

    out = []
    task = features.attrs["task"]
    if recipe.linear_probe is not None and task in ("multilabel", "multiclass"):
        train, test = recipe.probe_splits
        result = linear_probe(
            features, recipe.linear_probe, train_split=train, eval_split=test, device=recipe.device
        )
        out.append((f"linear probe ({recipe.linear_probe.cls_mode})", result.metric, result.value))
    if recipe.segmentation is not None and task == "segmentation":
        train, test = recipe.probe_splits
        result = segmentation_probe(
            features, recipe.segmentation, train_split=train, eval_split=test, device=recipe.device
        )
        out.append(("segmentation probe (UPerNet)", result["metric"], result["value"]))
    settings = recipe.retrieval
    if settings is not None and task == "multilabel":
        queries = _split(features, settings.query_split)
        archive = _split(features, settings.archive_split)
        for modality in settings.modalities:
            scores = evaluate_retrieval(
                queries, archive, settings.k, modality=modality, cls_mode=settings.cls_mode,
                method=settings.method, exclude_self=settings.exclude_self,
            )  # fmt: skip
            name = modality if "->" in modality else f"{modality}->{modality}"
            for metric in ("f1", "precision", "recall", "map"):
                out.append((f"retrieval {name}", f"{metric}@{settings.k}", scores[metric]))
    return out


def _split(features: xr.Dataset, split: str) -> xr.Dataset:
    if split == "all":
        return features
    from xcsmoe.evaluation.features import splits_of

    splits = splits_of(features)
    chosen = features.isel(sample=splits == split)
    if chosen.sizes["sample"] == 0:
        raise ConfigError(
            expected("retrieval split", f"a split with samples among {sorted(set(splits))}", split)
        )
    return chosen
