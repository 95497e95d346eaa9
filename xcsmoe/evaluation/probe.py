"""Linear probing on frozen features (paper §III-C): one linear layer, 50 epochs.

Multi-label sets train with binary cross-entropy and report mAPμ; multi-class sets with
cross-entropy and report average accuracy (AA). The features come from a feature store
(:mod:`xcsmoe.evaluation.features`), loaded into memory once; no image is read.

Runs are seeded: the layer's initialisation and the order of every epoch come from
``seed`` alone, and on CPU the result is bit-for-bit reproducible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from xcsmoe.errors import ConfigError, InputError, expected
from xcsmoe.evaluation.features import CLS_MODES, feature_vectors, splits_of

__all__ = ["ProbeConfig", "ProbeResult", "linear_probe", "train_linear"]


@dataclass(frozen=True)
class ProbeConfig:
    """Hyperparameters of a linear probe.

    ``epochs=50`` is the paper's; its Table III learning rates did not survive the text
    extraction, so ``lr`` and ``batch_size`` are common linear-probe values (set them in
    the recipe). ``cls_mode`` picks the feature (Table V: ``"raw"`` is the paper's choice;
    ``"auto"`` uses the model's own feature: raw [CLS], or fc_norm-pooled for CSMAE).
    """

    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    cls_mode: str = "auto"
    sensors: str = "all"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(expected(name, "a positive integer", value))
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(
                expected(
                    "lr/weight_decay", "lr > 0 and weight_decay >= 0", (self.lr, self.weight_decay)
                )
            )
        if self.cls_mode not in CLS_MODES:
            raise ConfigError(expected("cls_mode", f"one of {CLS_MODES}", self.cls_mode))


@dataclass(frozen=True)
class ProbeResult:
    """Score of a probe: ``metric`` (``"mAP_micro"`` or ``"AA"``) and ``value`` in [0, 1],
    plus the mean training loss of every epoch."""

    metric: str
    value: float
    losses: tuple[float, ...]
    config: dict[str, Any] = field(default_factory=dict)


def linear_probe(
    features: xr.Dataset,
    config: ProbeConfig | None = None,
    *,
    train_split: str | tuple[str, ...] = "train",
    eval_split: str | tuple[str, ...] = "test",
    device: str = "cpu",
    progress: bool = False,
) -> ProbeResult:
    """Train a linear layer on the ``train_split`` features of a store and score it on
    ``eval_split`` (mAPμ for multi-label, AA for multi-class)."""
    from xcsmoe.evaluation.metrics import average_accuracy, micro_average_precision

    config = config or ProbeConfig()
    task = features.attrs.get("task")
    if task not in ("multilabel", "multiclass"):
        raise InputError(expected("features", "a multi-label or multi-class feature store", task))
    x = feature_vectors(features, config.cls_mode, sensors=config.sensors)
    y = features["labels"].values
    train, test = (
        _rows(features, train_split, "train_split"),
        _rows(features, eval_split, "eval_split"),
    )
    classes = len(features.attrs.get("classes") or []) or (
        y.shape[1] if task == "multilabel" else int(y.max()) + 1
    )
    layer, losses = train_linear(
        x[train],
        y[train],
        task=task,
        num_classes=classes,
        config=config,
        device=device,
        progress=progress,
    )
    with torch.inference_mode():
        scores = layer(torch.from_numpy(x[test]).to(device)).cpu()
    if task == "multilabel":
        metric, value = "mAP_micro", micro_average_precision(scores, y[test])
    else:
        metric, value = "AA", average_accuracy(scores, y[test], num_classes=classes)
    return ProbeResult(metric, value, tuple(losses), asdict(config))


def train_linear(
    x: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    num_classes: int,
    config: ProbeConfig,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[nn.Linear, list[float]]:
    """Fit ``nn.Linear(D, num_classes)`` on features ``x`` (N, D) and labels ``y``
    ((N, C) multi-hot or (N,) indices) with AdamW; returns the layer and epoch losses."""
    if x.shape[0] != y.shape[0]:
        raise InputError(
            expected("labels", f"{x.shape[0]} rows (one per feature vector)", y.shape[0])
        )
    if x.shape[0] == 0:
        raise InputError(expected("train split", "at least one sample", 0))
    generator = torch.Generator().manual_seed(config.seed)
    layer = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        bound = 1 / np.sqrt(x.shape[1])
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.zero_()
    layer = layer.to(device)
    optimiser = torch.optim.AdamW(
        layer.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    if task == "multilabel":
        targets = torch.from_numpy(np.asarray(y, dtype=np.float32)).to(device)
        loss_fn = F.binary_cross_entropy_with_logits
    else:
        targets = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
        loss_fn = F.cross_entropy
    losses = []
    for _ in tqdm(range(config.epochs), desc="linear probe", unit="epoch", disable=not progress):
        order = torch.randperm(inputs.shape[0], generator=generator).to(device)
        total = 0.0
        for start in range(0, inputs.shape[0], config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = loss_fn(layer(inputs[batch]), targets[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * batch.numel()
        losses.append(total / inputs.shape[0])
    return layer.eval(), losses


def _rows(features: xr.Dataset, split: str | tuple[str, ...], name: str) -> np.ndarray:
    splits = splits_of(features)
    wanted = (split,) if isinstance(split, str) else tuple(split)
    rows = np.flatnonzero(np.isin(splits, wanted))
    if rows.size == 0:
        raise InputError(expected(name, f"a split with samples among {sorted(set(splits))}", split))
    return rows
