"""What the demo measures, random against pretrained weights, with xcsmoe.evaluation.

The evaluation set is the patch store itself: the patches the model was pretrained on
(**in-sample**; the held-out validation split has only a few patches). Each patch keeps
the BigEarthNet labels of its source tile.

* **Pair retrieval** (S1→S2, S2→S1): the S1 [CLS] of a patch queries the S2 [CLS] of every
  patch (:func:`xcsmoe.retrieve`, cosine); a hit is the same patch's other sensor. Top-1
  and top-k hit rates; chance is 1/N and k/N.
* **Land-cover retrieval** (S1→S2): F1@10 (fewer with fewer than 11 patches) with
  multi-label relevance over the tile labels, the query's own pair left out
  (:func:`xcsmoe.evaluate_retrieval`).
* **Expert balance**: per Soft MoE layer and sensor, over every valid token of the sample
  cubes (:func:`xcsmoe.expert_usage`), the normalised entropy ``H(p) / log(E)`` of two
  distributions over the ``E`` experts: the mean share of combine weight each expert
  receives (``share``; what the pretraining's expert-usage loss keeps even), and the share
  of tokens each expert dominates (``dominant``; low when one expert wins most tokens).
  1 = all experts used equally, 0 = one expert takes everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from xcsmoe.demo.settings import DemoSettings
from xcsmoe.demo.steps import embed_options, model_patch

__all__ = [
    "BALANCE_TASKS",
    "LANDCOVER_K",
    "MODALITIES",
    "balance_rows",
    "encode",
    "expert_balance",
    "expert_usages",
    "landcover_f1",
    "normalised_entropy",
    "pair_hits",
    "patch_samples",
    "retrieval_rows",
]

MODALITIES = ("s1->s2", "s2->s1")
LANDCOVER_K = 10


def patch_samples(store: Path, labels: dict[str, list[str]]) -> xr.Dataset:
    """The patch store as a multi-label sample set (:func:`xcsmoe.read_generic`):
    ``labels`` maps an S2 item id to its BigEarthNet labels; ``split`` train/valid."""
    from xcsmoe.evaluation.datasets import read_generic
    from xcsmoe.evaluation.readers import BIGEARTHNET_CLASSES, bigearthnet19

    with xr.open_zarr(store) as ds:
        items = [str(i) for i in ds["item_s2"].values]
        split = np.where(np.asarray(ds["split"].values) == 1, "valid", "train")
    table = pd.DataFrame(
        {
            "sample": [str(i) for i in range(len(items))],
            "labels": [bigearthnet19(labels[item]) for item in items],
            "split": split,
        }
    )
    return read_generic(
        store, table, task="multilabel", classes=BIGEARTHNET_CLASSES, dataset="demo patches"
    )


def encode(
    samples: xr.Dataset, store: Path, *, weights: str, settings: DemoSettings, progress: bool
) -> xr.Dataset:
    """[CLS] features of ``samples`` (resized to the model's ``img_size`` as in training)."""
    from xcsmoe.evaluation.features import encode_features

    return encode_features(
        samples, store, model=settings.model, weights=weights, seed=settings.seed,
        sensors=("s1", "s2"), device="cpu", overwrite=True, progress=progress,
    )  # fmt: skip


def pair_hits(features: xr.Dataset, modality: str, k: int) -> tuple[float, float]:
    """Share of queries whose own pair is the top-1, and within the top ``k``."""
    from xcsmoe.evaluation.retrieval import retrieve

    result = retrieve(features, features, k, modality=modality, cls_mode="raw")
    own = np.arange(result.indices.shape[0])[:, None]
    hits = result.indices == own
    return float(hits[:, 0].mean()), float(hits.any(axis=1).mean())


def landcover_f1(features: xr.Dataset, modality: str, k: int = LANDCOVER_K) -> float:
    """F1@k over the tile labels, each query's own pair excluded."""
    from xcsmoe.evaluation.retrieval import evaluate_retrieval

    scores = evaluate_retrieval(
        features, features, k, modality=modality, cls_mode="raw", exclude_self=True
    )
    return float(scores["f1"])


def retrieval_rows(features: dict[str, xr.Dataset], k: int) -> list[dict[str, Any]]:
    """Table rows (percent) of pair and land-cover retrieval for every weights label."""
    n = next(iter(features.values())).sizes["sample"]
    rows = []
    for modality in MODALITIES:
        task = f"{modality.upper().replace('->', '→')} pair retrieval"
        hits = {label: pair_hits(f, modality, k) for label, f in features.items()}
        rows.append(_row(task, "top-1 hit", {a: h[0] for a, h in hits.items()}, 1 / n))
        rows.append(_row(task, f"top-{k} hit", {a: h[1] for a, h in hits.items()}, k / n))
    k_labels = min(LANDCOVER_K, n - 1)  # the own pair is left out of the archive
    f1 = {label: landcover_f1(f, "s1->s2", k_labels) for label, f in features.items()}
    rows.append(_row("S1→S2 land-cover retrieval", f"F1@{k_labels}", f1, None))
    return rows


def expert_usages(
    cubes: Sequence[xr.Dataset], *, weights: str, settings: DemoSettings
) -> dict[tuple[str, int], list[xr.DataArray]]:
    """Lazy :func:`xcsmoe.expert_usage` of every cube, per (sensor, Soft MoE layer)."""
    from xcsmoe.embedding.api import expert_usage
    from xcsmoe.embedding.checks import moe_layers
    from xcsmoe.model.registry import model_config

    layers = moe_layers(model_config(settings.model))
    options = embed_options(settings, weights)
    return {
        (sensor, layer): [
            expert_usage(cube, model_patch(settings), sensor=sensor, layer=layer, **options)
            for cube in cubes
        ]
        for sensor in ("s1", "s2")
        for layer in range(layers)
    }


def expert_balance(usages: Sequence[xr.DataArray]) -> dict[str, float]:
    """``{"share": …, "dominant": …}`` normalised entropies (module doc) over every valid
    token of ``usages`` (:func:`xcsmoe.expert_usage` results of one layer)."""
    shares = [
        np.asarray(u.transpose(..., "expert").values).reshape(-1, u.sizes["expert"]) for u in usages
    ]
    tokens = np.concatenate(shares)
    tokens = tokens[np.isfinite(tokens).all(axis=1)]
    experts = tokens.shape[1]
    dominant = np.bincount(tokens.argmax(axis=1), minlength=experts)
    return {
        "share": normalised_entropy(tokens.mean(axis=0)),
        "dominant": normalised_entropy(dominant.astype(np.float64)),
    }


def normalised_entropy(weights: np.ndarray) -> float:
    """``H(p) / log(len(p))`` of ``p = weights / weights.sum()``, in [0, 1]."""
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum() / np.log(p.size))


BALANCE_TASKS = {
    "share": "expert balance (combine share)",
    "dominant": "expert balance (dominant expert)",
}


def balance_rows(
    balance: dict[str, dict[tuple[str, int], dict[str, float]]], settings: DemoSettings
) -> list[dict[str, Any]]:
    """Table rows (percent) of both expert balances per layer for every weights label."""
    from xcsmoe.embedding.export import layer_name

    rows = []
    for kind, task in BALANCE_TASKS.items():
        for sensor, layer in sorted(next(iter(balance.values()))):
            name = layer_name(layer, sensor=sensor, model=settings.model)
            if not name.startswith(sensor.upper()):
                name = f"{name} ({sensor.upper()} tokens)"
            values = {label: scores[(sensor, layer)][kind] for label, scores in balance.items()}
            rows.append(_row(task, name, values, None))
    return rows


def _row(task: str, metric: str, values: dict[str, float], chance: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"task": task, "metric": metric}
    row.update({label: 100.0 * value for label, value in values.items()})
    row["chance"] = None if chance is None else 100.0 * chance
    return row
