"""Retrieval: exact and FAISS search, uni- and cross-modal, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from xcsmoe.errors import InputError
from xcsmoe.evaluation.retrieval import evaluate_retrieval, retrieve


def test_own_embedding_ranks_first(sample_features):
    for modality in ("s1", "s2"):
        result = retrieve(sample_features, sample_features, k=3, modality=modality)
        assert result.method == "exact"
        assert list(result.ids[:, 0]) == list(sample_features["sample"].values)
        np.testing.assert_allclose(result.scores[:, 0], 1.0, atol=1e-5)
        assert (np.diff(result.scores, axis=1) <= 1e-6).all()  # best first


def test_cross_modal_retrieval_on_the_sample_pairs(sample_features):
    result = retrieve(sample_features, sample_features, k=6, modality="s1->s2")
    assert result.indices.shape == (6, 6)
    assert sorted(result.indices[0]) == list(range(6))  # every S2 item ranked once
    scores = evaluate_retrieval(
        sample_features, sample_features, 3, modality="s2->s1", exclude_self=True
    )
    assert set(scores) == {"precision", "recall", "f1", "map"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    own = retrieve(sample_features, sample_features, k=5, modality="s1->s2", exclude_self=True)
    assert not (own.ids == sample_features["sample"].values[:, None]).any()


def _clustered(n: int, d: int, queries: int, seed: int = 0):
    """Random vectors around random centres: the neighbourhood structure embeddings have."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(n // 50, 1), d), dtype=np.float32)
    archive = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal(
        (n, d), dtype=np.float32
    )
    q = centres[rng.integers(0, len(centres), queries)] + 0.5 * rng.standard_normal(
        (queries, d), dtype=np.float32
    )
    return q, archive


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(approx, exact, strict=True)])
    )


def test_faiss_ivf_agrees_with_exact_search():
    pytest.importorskip("faiss")
    queries, archive = _clustered(20_000, 128, 200)
    exact = retrieve(queries, archive, k=10, method="exact")
    approx = retrieve(queries, archive, k=10, method="faiss", index="ivf")
    assert approx.method == "faiss-ivf"
    assert _recall(approx.indices, exact.indices) >= 0.99
    flat = retrieve(queries, archive, k=10, method="faiss", index="flat")
    assert _recall(flat.indices, exact.indices) >= 0.999
    np.testing.assert_allclose(flat.scores, exact.scores, atol=1e-4)


@pytest.mark.slow
def test_faiss_ivf_agrees_with_exact_search_on_100k_768d():
    pytest.importorskip("faiss")
    queries, archive = _clustered(100_000, 768, 500)
    exact = retrieve(queries, archive, k=10, method="exact")
    approx = retrieve(queries, archive, k=10, method="faiss", index="ivf")
    assert _recall(approx.indices, exact.indices) >= 0.99


def test_retrieval_bad_inputs(sample_features, tmp_path, sample_set):
    from xcsmoe.evaluation.features import encode_features

    archive = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    with pytest.raises(InputError, match=r"k: expected an integer in \[1, 5\]"):
        retrieve(archive[:2], archive, k=6)
    with pytest.raises(InputError, match="archive: expected at least one vector"):
        retrieve(archive[:2], archive[:0], k=1)
    with pytest.raises(InputError, match="embeddings of the archive's size 8"):
        retrieve(np.ones((2, 16), np.float32), archive, k=1)
    with pytest.raises(InputError, match="k"):
        retrieve(sample_features, sample_features, k=6, modality="s2", exclude_self=True)
    other = encode_features(
        sample_set.isel(sample=slice(0, 2)), tmp_path / "other.zarr", model="csmoe_tiny",
        weights="random", seed=3, sensors="s2", progress=False,
    )  # fmt: skip
    with pytest.raises(InputError, match="feature store from another model"):
        retrieve(other, sample_features, k=1, modality="s2")
