"""Linear and segmentation probes on real features."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from xcsmoe.errors import ConfigError, InputError
from xcsmoe.evaluation.features import feature_vectors
from xcsmoe.evaluation.probe import ProbeConfig, linear_probe


def _with_labels(
    features: xr.Dataset, labels: np.ndarray, task: str, split: list[str]
) -> xr.Dataset:
    dims = ("sample", "class") if task == "multilabel" else ("sample",)
    classes = [
        f"c{i}" for i in range(labels.shape[1] if task == "multilabel" else int(labels.max()) + 1)
    ]
    out = features.drop_vars("labels").assign(labels=(dims, labels))
    out = out.assign_coords(split=("sample", np.asarray(split, dtype=object)))
    return out.assign_attrs(task=task, classes=classes)


def _separable(features: xr.Dataset, outputs: int, seed: int = 0) -> tuple[xr.Dataset, np.ndarray]:
    """12 real feature vectors (S1 and S2 [CLS] of the six pairs, one per row) with labels
    that a hyperplane through their median separates."""
    s1 = features.sel(sensor=["s1"]).assign_coords(
        sample=[f"{s}-s1" for s in features["sample"].values]
    )
    s2 = features.sel(sensor=["s2"]).assign_coords(
        sample=[f"{s}-s2" for s in features["sample"].values]
    )
    stacked = xr.concat(
        [s1.assign_coords(sensor=["x"]), s2.assign_coords(sensor=["x"])], dim="sample"
    )
    x = feature_vectors(stacked, "raw")
    w = np.random.default_rng(seed).standard_normal((x.shape[1], outputs))
    projection = (x - x.mean(0)) @ w
    return stacked, (projection > np.median(projection, axis=0)).astype(np.int64)


def test_linear_probe_learns_a_separable_problem_from_real_features(sample_features):
    stacked, bits = _separable(sample_features, 1)
    data = _with_labels(stacked, bits[:, 0], "multiclass", ["train"] * 12)
    config = ProbeConfig(epochs=100, lr=1e-2, batch_size=6)
    result = linear_probe(data, config, eval_split="train")
    assert result.metric == "AA" and result.value == pytest.approx(1.0)
    assert result.losses[-1] < 0.5 * result.losses[0]
    again = linear_probe(data, config, eval_split="train")
    assert again.losses == result.losses  # seeded: bit-for-bit on CPU


def test_multilabel_probe_reports_micro_map(sample_features):
    stacked, bits = _separable(sample_features, 3, seed=1)
    data = _with_labels(stacked, bits.astype(np.uint8), "multilabel", ["train"] * 12)
    result = linear_probe(data, ProbeConfig(epochs=100, lr=1e-2, batch_size=6), eval_split="train")
    assert result.metric == "mAP_micro" and result.value > 0.95


def test_probe_bad_inputs(sample_features):
    with pytest.raises(InputError, match="eval_split"):
        linear_probe(sample_features, ProbeConfig(epochs=1))  # the sample set has no test split
    with pytest.raises(ConfigError, match="epochs"):
        ProbeConfig(epochs=0)
    with pytest.raises(ConfigError, match="cls_mode"):
        ProbeConfig(cls_mode="norm")


def test_segmentation_probe_overfits_a_real_reference_map(sample_features, real_dir):
    """UPerNet on real token grids learns one real BigEarthNet reference map (four CLC
    classes). The fixture's reference map and the sample's image are different patches,
    so this checks the decoder's capacity to fit, not semantics."""
    import rasterio

    from xcsmoe.evaluation.metrics import mean_iou
    from xcsmoe.evaluation.readers import clc_to_class_map
    from xcsmoe.evaluation.segmentation import SegmentationConfig, segmentation_probe

    path = next((real_dir / "bigearthnet" / "Reference_Maps").glob("*/*/*_reference_map.tif"))
    with rasterio.open(path) as src:
        classes = clc_to_class_map(src.read(1))
    present = np.unique(classes[classes >= 0])
    target = np.searchsorted(present, classes).astype(np.int16)[None]  # 4 classes, 0..3
    one = sample_features.isel(sample=[0]).assign_attrs(classes=[str(c) for c in present])
    result = segmentation_probe(
        one, SegmentationConfig(epochs=40, lr=5e-3, channels=16), labels=target, eval_split="train"
    )
    majority = np.full_like(target, np.bincount(target.ravel()).argmax())
    chance = mean_iou(majority, target, len(present))
    assert result["metric"] == "mIoU"
    assert result["value"] > 0.6 and result["value"] > 3 * chance
    assert result["losses"][-1] < 0.5 * result["losses"][0]
