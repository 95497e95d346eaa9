"""Evaluation metrics: thin wrappers over torchmetrics, with the paper's conventions.

* :func:`micro_average_precision` — mAPμ of multi-label classification;
* :func:`average_accuracy` — AA of multi-class classification (mean per-class recall);
* :func:`mean_iou` — mIoU of semantic segmentation (mean over classes);
* :func:`retrieval_scores` — precision@k, recall@k, F1@k and mAP@k of multi-label
  content-based image retrieval.

Retrieval with multi-label relevance follows CSMAE's evaluation (the baseline CSMoE is
compared with): for a query with label set Q and a retrieved image with label set R,
``precision = |Q ∩ R| / |R|`` and ``recall = |Q ∩ R| / |Q|``; both are averaged over the
top k and then over the queries, and ``F1@k`` is the harmonic mean of those two averages.
``mAP@k`` treats an image as relevant when it shares at least one label with the query
and averages, over the queries, torchmetrics' average precision of the top k.
All scores are fractions in [0, 1]; the results tables show them in %.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from xcsmoe.errors import InputError, expected

__all__ = ["average_accuracy", "mean_iou", "micro_average_precision", "retrieval_scores"]


def micro_average_precision(scores: Any, labels: Any) -> float:
    """mAPμ: average precision over every (sample, class) decision pooled together.

    Args:
        scores: (N, C) logits or probabilities.
        labels: (N, C) multi-hot {0, 1}.
    """
    from torchmetrics.functional.classification import multilabel_average_precision

    preds, target = _pair(scores, labels, "labels", ndim=2)
    return float(
        multilabel_average_precision(
            preds.float(), target.long(), num_labels=preds.shape[1], average="micro"
        )
    )


def average_accuracy(scores: Any, labels: Any, num_classes: int | None = None) -> float:
    """AA: recall of each class, averaged over the classes present in ``labels``.

    Args:
        scores: (N, C) logits, or (N,) predicted class indices.
        labels: (N,) class indices.
    """
    from torchmetrics.functional.classification import multiclass_recall

    preds, target = _as_tensor(scores, "scores"), _as_tensor(labels, "labels").long()
    num_classes = num_classes or (preds.shape[1] if preds.dim() == 2 else int(target.max()) + 1)
    if preds.dim() == 2:
        preds = preds.argmax(dim=1)
    _check_rows(preds, target, "labels")
    per_class = multiclass_recall(
        preds.long(), target, num_classes=num_classes, average="none", validate_args=False
    )
    present = torch.bincount(target, minlength=num_classes) > 0
    return float(per_class[present].mean())


def mean_iou(pred: Any, target: Any, num_classes: int, *, ignore_index: int | None = -1) -> float:
    """mIoU: intersection over union per class, averaged over the classes that occur in
    ``target`` or ``pred`` (pixels equal to ``ignore_index`` in ``target`` are skipped).

    Args:
        pred: (N, H, W) predicted class indices, or (N, C, H, W) logits.
        target: (N, H, W) class indices.
    """
    from torchmetrics.functional.classification import multiclass_jaccard_index

    pred, target = _as_tensor(pred, "pred"), _as_tensor(target, "target").long()
    if pred.dim() == 4:
        pred = pred.argmax(dim=1)
    if pred.shape != target.shape:
        raise InputError(expected("target", f"shape {tuple(pred.shape)}", tuple(target.shape)))
    keep = target != ignore_index if ignore_index is not None else torch.ones_like(target).bool()
    pred, target = pred.long()[keep], target[keep]
    if target.numel() == 0:
        raise InputError(expected("target", "at least one labelled pixel", "none"))
    per_class = multiclass_jaccard_index(
        pred, target, num_classes=num_classes, average="none", validate_args=False
    )
    seen = torch.bincount(target, minlength=num_classes) + torch.bincount(
        pred, minlength=num_classes
    )
    seen = seen > 0
    return float(per_class[seen].mean())


def retrieval_scores(query_labels: Any, retrieved_labels: Any) -> dict[str, float]:
    """Multi-label retrieval scores of ranked results (see the module docstring).

    Args:
        query_labels: (Q, C) multi-hot labels of the queries.
        retrieved_labels: (Q, k, C) multi-hot labels of each query's top k, best first.

    Returns:
        ``{"precision": …, "recall": …, "f1": …, "map": …}`` at that k.
    """
    from torchmetrics.functional.retrieval import retrieval_average_precision

    q = _as_tensor(query_labels, "query_labels").bool()
    r = _as_tensor(retrieved_labels, "retrieved_labels").bool()
    if q.dim() != 2 or r.dim() != 3 or r.shape[0] != q.shape[0] or r.shape[2] != q.shape[1]:
        raise InputError(
            expected(
                "retrieved_labels",
                f"shape (Q={q.shape[0]}, k, C={q.shape[-1]}) for query_labels {tuple(q.shape)}",
                tuple(r.shape),
            )
        )
    if q.shape[0] == 0 or r.shape[1] == 0:
        raise InputError(
            expected("retrieved_labels", "at least one query and k >= 1", tuple(r.shape))
        )
    common = (q[:, None, :] & r).sum(-1).double()  # (Q, k)
    r_size = r.sum(-1).double().clamp(min=1)
    q_size = q.sum(-1, keepdim=True).double().clamp(min=1)
    precision = float((common / r_size).mean())
    recall = float((common / q_size).mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    k = r.shape[1]
    rank_scores = torch.arange(k, 0, -1, dtype=torch.float32)  # positive: best first
    relevant = common > 0
    ap = [float(retrieval_average_precision(rank_scores, rel, top_k=k)) for rel in relevant]
    return {"precision": precision, "recall": recall, "f1": f1, "map": float(np.mean(ap))}


# ----------------------------------------------------------------------------- helpers


def _as_tensor(values: Any, name: str) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError) as error:
        raise InputError(expected(name, "an array", type(values).__name__)) from error


def _check_rows(a: Tensor, b: Tensor, name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise InputError(
            expected(name, f"{a.shape[0]} rows (one per sample)", b.shape[0], "Align the labels.")
        )


def _pair(scores: Any, labels: Any, name: str, *, ndim: int) -> tuple[Tensor, Tensor]:
    preds, target = _as_tensor(scores, "scores"), _as_tensor(labels, name)
    if preds.dim() != ndim or preds.shape != target.shape:
        raise InputError(expected(name, f"shape {tuple(preds.shape)}", tuple(target.shape)))
    return preds, target
