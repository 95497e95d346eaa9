"""Evaluation recipes: a YAML file → a frozen, validated :class:`EvalRecipe`.

Relative paths are resolved against the recipe's folder; a model's ``weights`` may also be
``random``, an ``https://`` URL (``#sha256=<hex>``) or a registered name. Example
(``recipes/evaluate_sample.yaml``)::

    dataset: {kind: sample_catalog}
    output: ../runs/evaluate-sample
    models:
      - {name: csmoe_tiny, weights: random, label: random}
      - {name: csmoe_tiny, weights: ../runs/pretrain-sample/encoder.safetensors,
         label: pretrained, if_missing: skip}
    linear_probe: {epochs: 50, lr: 1.0e-3, cls_mode: raw, eval_split: train}
    retrieval: {k: 3, modalities: [s1, s2, s1->s2, s2->s1], exclude_self: true}

Dataset kinds: ``sample_catalog``; ``eurosat_ms`` (``path``); ``bigearthnet`` (``path``,
``metadata``, optional ``task``); ``geobench`` (``path``, optional ``partition``);
``generic`` (``path``, ``labels``, ``task``). ``limit`` caps samples per class/split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from xcsmoe.errors import ConfigError, expected
from xcsmoe.evaluation.probe import ProbeConfig
from xcsmoe.evaluation.segmentation import SegmentationConfig

__all__ = ["DATASET_KINDS", "EvalRecipe", "ModelEntry", "load_recipe"]

DATASET_KINDS = ("sample_catalog", "eurosat_ms", "bigearthnet", "geobench", "generic")
_PATH_KEYS = ("path", "metadata", "labels")


@dataclass(frozen=True)
class ModelEntry:
    """One column of the results table: a model variant and its weights."""

    name: str
    weights: str
    label: str
    if_missing: str = "error"  # or "skip": leave the column out when the file is absent
    seed: int = 0


@dataclass(frozen=True)
class RetrievalSettings:
    k: int = 10
    modalities: tuple[str, ...] = ("s1", "s2", "s1->s2", "s2->s1")
    query_split: str = "valid"
    archive_split: str = "test"
    exclude_self: bool = False
    method: str = "auto"
    cls_mode: str = "auto"


@dataclass(frozen=True)
class EvalRecipe:
    """A whole evaluation: data, models, and which probes/retrievals to run."""

    dataset: dict[str, Any]
    models: tuple[ModelEntry, ...]
    output: Path
    linear_probe: ProbeConfig | None = None
    probe_splits: tuple[str, str] = ("train", "test")
    segmentation: SegmentationConfig | None = None
    segmentation_layers: tuple[int, ...] = (0, 1, 2)
    retrieval: RetrievalSettings | None = None
    image_size: int | None = None
    sensors: str = "auto"
    batch_size: int = 32
    device: str = "cpu"
    source: str = field(default="", compare=False)


def load_recipe(path: str | PathLike[str]) -> EvalRecipe:
    """Read and check an evaluation recipe (YAML)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(expected("recipe", "an existing YAML file", str(path)))
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(expected("recipe", "a mapping of settings", type(data).__name__))
    return recipe_from_dict(data, base=path.parent, source=str(path))


def recipe_from_dict(
    data: dict[str, Any], *, base: Path = Path("."), source: str = ""
) -> EvalRecipe:
    known = {f.name for f in dataclasses.fields(EvalRecipe)} - {"source"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(expected("recipe", f"keys among {sorted(known)}", unknown))
    for key in ("dataset", "models", "output"):
        if key not in data:
            raise ConfigError(expected("recipe", f"a {key!r} entry", sorted(data)))
    dataset = dict(data["dataset"] or {})
    if dataset.get("kind") not in DATASET_KINDS:
        raise ConfigError(expected("dataset.kind", f"one of {DATASET_KINDS}", dataset.get("kind")))
    for key in _PATH_KEYS:
        if key in dataset and dataset[key] is not None:
            dataset[key] = str(_resolve(base, dataset[key]))
    models = tuple(_model(m, base, i) for i, m in enumerate(data["models"] or []))
    if not models:
        raise ConfigError(expected("models", "at least one model entry", data["models"]))
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(expected("models[].label", "distinct labels (table columns)", labels))
    probe = data.get("linear_probe")
    splits = ("train", "test")
    if isinstance(probe, dict):
        probe = dict(probe)
        splits = (probe.pop("train_split", "train"), probe.pop("eval_split", "test"))
    seg = data.get("segmentation")
    layers = (0, 1, 2)
    if isinstance(seg, dict):
        seg = dict(seg)
        layers = tuple(seg.pop("layers", layers))
    retrieval = data.get("retrieval")
    if isinstance(retrieval, dict) and "modalities" in retrieval:
        retrieval = {**retrieval, "modalities": tuple(retrieval["modalities"])}
    return EvalRecipe(
        dataset=dataset,
        models=models,
        output=_resolve(base, data["output"]),
        linear_probe=_build(ProbeConfig, probe, "linear_probe"),
        probe_splits=splits,
        segmentation=_build(SegmentationConfig, seg, "segmentation"),
        segmentation_layers=layers,
        retrieval=_build(RetrievalSettings, retrieval, "retrieval"),
        image_size=data.get("image_size"),
        sensors=str(data.get("sensors", "auto")),
        batch_size=int(data.get("batch_size", 32)),
        device=str(data.get("device", "cpu")),
        source=source,
    )


def _model(entry: Any, base: Path, index: int) -> ModelEntry:
    if not isinstance(entry, dict) or "name" not in entry or "weights" not in entry:
        raise ConfigError(expected(f"models[{index}]", "a mapping with name and weights", entry))
    weights = str(entry["weights"])
    from xcsmoe.model.hub import is_remote

    if weights != "random" and not is_remote(weights):  # URLs and registered names stay
        weights = str(_resolve(base, weights))
    if entry.get("if_missing", "error") not in ("error", "skip"):
        raise ConfigError(
            expected(f"models[{index}].if_missing", '"error" or "skip"', entry["if_missing"])
        )
    return ModelEntry(
        name=str(entry["name"]), weights=weights, label=str(entry.get("label", f"{entry['name']}:{index}")),
        if_missing=entry.get("if_missing", "error"), seed=int(entry.get("seed", 0)),
    )  # fmt: skip


def _build(cls: type, values: Any, name: str) -> Any:
    if values is None or values is False:
        return None
    if values is True:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(expected(name, "a mapping of settings, true, or null", values))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(expected(name, f"settings among {sorted(known)}", unknown))
    return cls(**values)


def _resolve(base: Path, value: Any) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
