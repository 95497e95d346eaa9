"""Content-based image retrieval over stored features, by cosine similarity.

:func:`retrieve` searches an archive for each query's ``k`` most similar items:

* ``method="exact"`` — brute force on torch (L2-normalised vectors, matrix products in
  query batches of bounded memory, ``topk``); the default up to :data:`EXACT_LIMIT`
  archive vectors;
* ``method="faiss"`` — a FAISS index (faiss-cpu, or faiss-gpu when installed):
  ``index="ivf"`` (inverted lists, ``nlist ≈ √N``, ``nprobe = max(8, nlist/16)``),
  ``"hnsw"`` (graph, ``M=32``), or ``"flat"`` (exact, BLAS); the default above the limit.

Approximate indexes rely on neighbourhood structure. On embeddings (clustered) IVF at
the default settings finds ≥ 99 % of the exact top 10; on isotropic Gaussian noise no
approximate index does (every distance is nearly the same), so prefer ``"flat"`` there.

Queries and archive are feature stores (:mod:`xcsmoe.evaluation.features`) or arrays.
With stores, ``modality="s1->s2"`` takes S1 features of the queries and S2 features of
the archive (``"s2"`` ≡ ``"s2->s2"``); both stores must come from the same model.
:func:`evaluate_retrieval` scores the results with the multi-label metrics of
:func:`xcsmoe.evaluation.metrics.retrieval_scores`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from xcsmoe.errors import ConfigError, InputError, expected

__all__ = ["EXACT_LIMIT", "RetrievalResult", "evaluate_retrieval", "retrieve"]

EXACT_LIMIT = 1_000_000
"""Largest archive searched exactly on torch by ``method="auto"``."""
_BATCH_ELEMENTS = 1 << 26  # query-batch x archive similarities held at once (256 MiB)


@dataclass(frozen=True)
class RetrievalResult:
    """Top-k of every query: ``indices`` (Q, k) into the archive, ``scores`` (Q, k) cosine
    similarities, best first; ``ids`` (Q, k) archive sample ids when the archive is a store."""

    indices: np.ndarray
    scores: np.ndarray
    method: str
    ids: np.ndarray | None = None


def retrieve(
    queries: xr.Dataset | np.ndarray | torch.Tensor,
    archive: xr.Dataset | np.ndarray | torch.Tensor,
    k: int = 10,
    *,
    modality: str | None = None,
    cls_mode: str = "auto",
    method: str = "auto",
    index: str = "ivf",
    nlist: int | None = None,
    nprobe: int | None = None,
    ef_search: int = 256,
    exclude_self: bool = False,
    device: str = "cpu",
    seed: int = 0,
) -> RetrievalResult:
    """The ``k`` archive items most cosine-similar to each query (module doc).

    ``exclude_self`` drops, for each query, the archive item with the same sample id
    (stores) or the same row (arrays of equal length) — a query from the archive itself.
    """
    if method not in ("auto", "exact", "faiss"):
        raise ConfigError(expected("method", '"auto", "exact" or "faiss"', method))
    if index not in ("ivf", "hnsw", "flat"):
        raise ConfigError(expected("index", '"ivf", "hnsw" or "flat"', index))
    q, a, q_ids, a_ids = _vectors(queries, archive, modality, cls_mode)
    if a.shape[0] == 0:
        raise InputError(
            expected("archive", "at least one vector", 0, "Encode some samples first.")
        )
    if q.shape[0] == 0:
        raise InputError(expected("queries", "at least one vector", 0))
    if q.shape[1] != a.shape[1]:
        raise InputError(
            expected(
                "queries",
                f"embeddings of the archive's size {a.shape[1]}",
                q.shape[1],
                "Use features of the same model and sensors for both.",
            )
        )
    extra = 1 if exclude_self else 0
    if (
        isinstance(k, bool)
        or not isinstance(k, (int, np.integer))
        or k < 1
        or k + extra > a.shape[0]
    ):
        raise InputError(
            expected(
                "k",
                f"an integer in [1, {a.shape[0] - extra}] (the archive has {a.shape[0]} vectors)",
                k,
            )
        )
    chosen = method if method != "auto" else ("exact" if a.shape[0] <= EXACT_LIMIT else "faiss")
    q, a = _normalised(q), _normalised(a)
    if chosen == "exact":
        scores, indices = _exact(q, a, k + extra, device)
    else:
        scores, indices = _faiss(
            q, a, k + extra, index=index, nlist=nlist, nprobe=nprobe, ef_search=ef_search, seed=seed
        )
    if exclude_self:
        scores, indices = _drop_self(scores, indices, q_ids, a_ids, k)
    ids = np.asarray(a_ids)[indices] if a_ids is not None else None
    return RetrievalResult(
        indices=indices,
        scores=scores,
        method=chosen if chosen == "exact" else f"faiss-{index}",
        ids=ids,
    )


def evaluate_retrieval(
    queries: xr.Dataset,
    archive: xr.Dataset,
    k: int = 10,
    *,
    modality: str = "s2->s2",
    **kwargs: Any,
) -> dict[str, float]:
    """Retrieve and score with multi-label relevance: ``precision``, ``recall``, ``f1``,
    ``map`` at ``k`` (fractions), for multi-label feature stores."""
    from xcsmoe.evaluation.metrics import retrieval_scores

    for name, store in (("queries", queries), ("archive", archive)):
        if not isinstance(store, xr.Dataset) or store.attrs.get("task") != "multilabel":
            raise InputError(
                expected(
                    name,
                    "a multi-label feature store",
                    getattr(store, "attrs", {}).get("task", type(store).__name__),
                )
            )
    result = retrieve(queries, archive, k, modality=modality, **kwargs)
    retrieved = archive["labels"].values[result.indices]
    return retrieval_scores(queries["labels"].values, retrieved)


# ----------------------------------------------------------------------------- helpers


def _vectors(
    queries: Any, archive: Any, modality: str | None, cls_mode: str
) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    stores = [isinstance(x, xr.Dataset) for x in (queries, archive)]
    if any(stores) and not all(stores):
        raise InputError(
            expected(
                "queries/archive",
                "two feature stores or two arrays",
                tuple(type(x).__name__ for x in (queries, archive)),
            )
        )
    if not all(stores):
        if modality is not None:
            raise ConfigError(
                expected(
                    "modality",
                    "None for plain arrays (pick the sensor's features yourself)",
                    modality,
                )
            )
        q, a = _matrix(queries, "queries"), _matrix(archive, "archive")
        return q, a, None, None
    from xcsmoe.evaluation.features import check_same_model, feature_vectors

    check_same_model(queries, archive)
    source, target = _modality(modality or "s2")
    q = feature_vectors(queries, cls_mode, sensors=source)
    a = feature_vectors(archive, cls_mode, sensors=target)
    return q, a, queries["sample"].values, archive["sample"].values


def _modality(modality: str) -> tuple[str, str]:
    parts = modality.replace("→", "->").split("->")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or any(p not in ("s1", "s2") for p in parts):
        raise ConfigError(expected("modality", '"s1", "s2", "s1->s2" or "s2->s1"', modality))
    return parts[0], parts[1]


def _matrix(values: Any, name: str) -> np.ndarray:
    array = (
        values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    )
    if array.ndim == 1 and name == "queries":
        array = array[None]
    if array.ndim != 2:
        raise InputError(expected(name, "a (count, embedding) matrix", array.shape))
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(expected(name, "numeric vectors", array.dtype))
    return np.ascontiguousarray(array, dtype=np.float32)


def _normalised(x: np.ndarray) -> np.ndarray:
    if not np.isfinite(x).all():
        raise InputError(
            expected(
                "features",
                "finite values",
                "NaN or inf",
                "Drop windows without valid pixels first.",
            )
        )
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norm, np.float32(1e-12)), dtype=np.float32)


def _exact(q: np.ndarray, a: np.ndarray, k: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    dev = torch.device(device)
    archive = torch.from_numpy(a).to(dev)
    step = max(1, _BATCH_ELEMENTS // a.shape[0])
    scores, indices = [], []
    with torch.inference_mode():
        for start in range(0, q.shape[0], step):
            sims = torch.from_numpy(q[start : start + step]).to(dev) @ archive.T
            top = sims.topk(k, dim=1)
            scores.append(top.values.cpu().numpy())
            indices.append(top.indices.cpu().numpy())
    return np.concatenate(scores), np.concatenate(indices).astype(np.int64)


def _faiss(
    q: np.ndarray,
    a: np.ndarray,
    k: int,
    *,
    index: str,
    nlist: int | None,
    nprobe: int | None,
    ef_search: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    try:
        import faiss
    except ImportError as error:
        raise ConfigError(
            expected(
                "method",
                '"exact" (faiss is not installed)',
                "faiss",
                "pip install 'xcsmoe[eval]' (faiss-cpu).",
            )
        ) from error
    n, d = a.shape
    if index == "flat":
        searcher = faiss.IndexFlatIP(d)
    elif index == "hnsw":
        searcher = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        searcher.hnsw.efSearch = max(ef_search, k)
    else:
        lists = nlist or max(1, round(math.sqrt(n)))
        if lists > n:
            raise ConfigError(expected("nlist", f"at most the archive size {n}", lists))
        searcher = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = a if n <= 40 * lists else a[np.sort(rng.choice(n, 40 * lists, replace=False))]
        searcher.cp.seed = seed
        searcher.train(train)
        searcher.nprobe = min(lists, nprobe or max(8, lists // 16))
    searcher.add(a)
    scores, indices = searcher.search(q, k)
    return scores.astype(np.float32), indices.astype(np.int64)


def _drop_self(
    scores: np.ndarray, indices: np.ndarray, q_ids: Any, a_ids: Any, k: int
) -> tuple[np.ndarray, np.ndarray]:
    if q_ids is not None:
        same = np.asarray(a_ids)[indices] == np.asarray(q_ids)[:, None]
    else:
        same = indices == np.arange(indices.shape[0])[:, None]
    keep = np.argsort(same, axis=1, kind="stable")[:, :k]  # non-self items first, order kept
    return np.take_along_axis(scores, keep, 1), np.take_along_axis(indices, keep, 1)
