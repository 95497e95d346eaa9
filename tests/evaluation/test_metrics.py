"""Metrics against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from xcsmoe.errors import InputError
from xcsmoe.evaluation.metrics import (
    average_accuracy,
    mean_iou,
    micro_average_precision,
    retrieval_scores,
)


def test_micro_average_precision_by_hand():
    # Pooled decisions ranked by score: 0.9 (+), 0.8 (-), 0.7 (+), 0.6 (-), 0.3 (+), 0.1 (-).
    # AP = (1/1 + 2/3 + 3/5) / 3 positives.
    scores = np.array([[0.9, 0.8, 0.1], [0.3, 0.7, 0.6]])
    labels = np.array([[1, 0, 0], [1, 1, 0]])
    assert micro_average_precision(scores, labels) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_micro_average_precision_perfect_ranking_is_one():
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    assert micro_average_precision(labels * 2.0 - 1.0, labels) == pytest.approx(1.0)


def test_average_accuracy_is_mean_per_class_recall():
    # class 0: 2/3 right, class 1: 1/1, class 2: 0/2  → (2/3 + 1 + 0) / 3
    labels = np.array([0, 0, 0, 1, 2, 2])
    preds = np.array([0, 0, 1, 1, 0, 1])
    assert average_accuracy(preds, labels, num_classes=3) == pytest.approx((2 / 3 + 1) / 3)
    logits = np.eye(3)[preds]
    assert average_accuracy(logits, labels) == pytest.approx((2 / 3 + 1) / 3)
    # overall accuracy would be 3/6: AA is not it
    assert average_accuracy(preds, labels, num_classes=3) != pytest.approx(0.5)


def test_mean_iou_by_hand_with_ignored_pixels():
    target = np.array([[[0, 0, 1], [1, 2, -1]]])
    pred = np.array([[[0, 1, 1], [1, 2, 0]]])
    # class 0: I=1, U=2 (pred 0 at the ignored pixel does not count); class 1: I=2, U=3;
    # class 2: I=1, U=1
    assert mean_iou(pred, target, 3) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)


def test_retrieval_scores_by_hand():
    query = np.array([[1, 1, 0, 0]])
    retrieved = np.array([[[1, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0]]])
    # pairs: |Q∩R|/|R| = 1, 0, 1/2 → P = 1/2;  |Q∩R|/|Q| = 1/2, 0, 1/2 → R = 1/3
    scores = retrieval_scores(query, retrieved)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    # relevant at ranks 1 and 3: AP@3 = (1/1 + 2/3) / 2
    assert scores["map"] == pytest.approx((1 + 2 / 3) / 2)


def test_retrieval_scores_average_over_queries():
    queries = np.array([[1, 0], [0, 1]])
    retrieved = np.array([[[1, 0], [1, 0]], [[1, 0], [0, 1]]])
    scores = retrieval_scores(queries, retrieved)
    assert scores["precision"] == pytest.approx((1 + 0.5) / 2)
    assert scores["map"] == pytest.approx((1 + 0.5) / 2)


def test_metric_shape_errors():
    with pytest.raises(InputError, match="labels"):
        micro_average_precision(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(InputError, match="retrieved_labels"):
        retrieval_scores(np.zeros((2, 3)), np.zeros((2, 4, 5)))
