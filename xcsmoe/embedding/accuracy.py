"""How far a reduced compute precision moves embeddings, measured on real imagery.

* :func:`vector_agreement` — per-vector cosine and relative L2 of ``cls`` and ``tokens``
  of two embeddings of the same cube (e.g. bf16 autocast against float32);
* :func:`ranking_agreement` — how much S1→S2 cross-modal retrieval rankings change:
  Kendall τ of the gallery scores per query, overlap of the top-k lists, top-1 agreement;
* :func:`sample_agreement` — both, over the six real BigEarthNet S1+S2 pairs of the
  bundled sample catalog (:func:`xcsmoe.example_catalog`).

These numbers back the bound documented in :mod:`xcsmoe.embedding.precision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xcsmoe.errors import InputError, expected

__all__ = ["Agreement", "ranking_agreement", "sample_agreement", "vector_agreement"]


@dataclass(frozen=True)
class Agreement:
    """Lowest cosines of the [CLS] and token vectors, relative L2 over all of them, and
    the retrieval ranking agreement (NaN where not measured)."""

    min_cls_cosine: float
    min_token_cosine: float
    relative_l2: float
    vectors: int
    kendall_tau: float = float("nan")
    top_k_overlap: float = float("nan")
    top1_agreement: float = float("nan")


def _rows(values: xr.DataArray) -> np.ndarray:
    """``(time, embedding, y, x)`` or ``(embedding, y, x)`` → ``(vectors, embedding)``."""
    array = np.moveaxis(
        np.asarray(values.values, dtype=np.float64), values.dims.index("embedding"), -1
    )
    return array.reshape(-1, array.shape[-1])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of ``(N, D)`` arrays, rows with a NaN in ``b`` dropped."""
    keep = ~np.isnan(b).any(axis=1)
    a, b = a[keep], b[keep]
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def vector_agreement(low: xr.Dataset, reference: xr.Dataset) -> Agreement:
    """Cosine of every [CLS] and token vector of ``low`` to ``reference`` (same cube, same
    model), and the relative L2 error over all valid values."""
    cls_low, cls_ref = _rows(low["cls"]), _rows(reference["cls"])
    tok_low, tok_ref = _rows(low["tokens"]), _rows(reference["tokens"])
    if not np.array_equal(np.isnan(cls_low), np.isnan(cls_ref)):
        raise InputError(
            expected(
                "low",
                "an embedding of the same cube as reference (same missing windows)",
                "other missing windows",
            )
        )
    stacked_low = np.concatenate([cls_low, tok_low])
    stacked_ref = np.concatenate([cls_ref, tok_ref])
    valid = ~np.isnan(stacked_ref)
    relative = np.linalg.norm((stacked_low - stacked_ref)[valid]) / np.linalg.norm(
        stacked_ref[valid]
    )
    cls_cos, tok_cos = cosines(cls_low, cls_ref), cosines(tok_low, tok_ref)
    return Agreement(
        min_cls_cosine=float(cls_cos.min()),
        min_token_cosine=float(tok_cos.min()),
        relative_l2=float(relative),
        vectors=len(cls_cos) + len(tok_cos),
    )


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall τ-a of two score vectors of the same items (1: same order)."""
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    n = len(x)
    return float((dx * dy).sum() / (n * (n - 1)))


def ranking_agreement(
    queries: np.ndarray,
    gallery: np.ndarray,
    queries_low: np.ndarray,
    gallery_low: np.ndarray,
    *,
    k: int = 5,
) -> tuple[float, float, float]:
    """Retrieval of ``gallery`` ``(G, D)`` rows by cosine to ``queries`` ``(Q, D)``, at the
    reference and at the reduced precision. Returns the mean Kendall τ of the gallery
    scores per query, the mean share of the reference top-``k`` kept, and the share of
    queries whose top-1 match is unchanged."""

    def scores(q: np.ndarray, g: np.ndarray) -> np.ndarray:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        return q @ g.T

    ref, low = scores(queries, gallery), scores(queries_low, gallery_low)
    k = min(k, ref.shape[1])
    taus = [kendall_tau(r, s) for r, s in zip(ref, low, strict=True)]
    top_ref, top_low = np.argsort(-ref, axis=1)[:, :k], np.argsort(-low, axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_low, strict=True)]
    top1 = np.mean(top_ref[:, 0] == top_low[:, 0])
    return float(np.mean(taus)), float(np.mean(overlap)), float(top1)


def sample_agreement(
    *,
    model: str = "csmoe_tiny",
    weights: str | Path = "random",
    window: int = 64,
    dtype: str = "bfloat16",
    reference: str = "float32",
    compile: bool = False,
    k: int = 5,
    catalog: Any = None,
    device: str = "cpu",
) -> Agreement:
    """Embed the six real S1+S2 sample pairs at ``reference`` and ``dtype`` on ``device``
    (in this process), compare every vector, and S1→S2 retrieval of the [CLS] tokens of all
    windows (S1 [CLS] as queries, S2 [CLS] as gallery). ``catalog``: the sample catalog
    (default :func:`xcsmoe.example_catalog`)."""
    from xcsmoe.embedding.api import embed
    from xcsmoe.stac.load import load_cube
    from xcsmoe.stac.sample_catalog import example_catalog, iter_pairs

    low_parts, ref_parts = [], []
    for s2, s1 in iter_pairs(catalog if catalog is not None else example_catalog()):
        cube = load_cube([s2], [s1])
        common = dict(model=model, weights=weights, window=window, device=device)
        ref_parts.append(embed(cube, dtype=reference, **common).compute())
        low_parts.append(embed(cube, dtype=dtype, compile=compile, **common).compute())
    agreements = [vector_agreement(a, b) for a, b in zip(low_parts, ref_parts, strict=True)]
    per_sensor = [_sensor_cls(part) for part in ref_parts]
    per_sensor_low = [_sensor_cls(part) for part in low_parts]
    queries = np.concatenate([p[0] for p in per_sensor])
    gallery = np.concatenate([p[1] for p in per_sensor])
    tau, overlap, top1 = ranking_agreement(
        queries,
        gallery,
        np.concatenate([p[0] for p in per_sensor_low]),
        np.concatenate([p[1] for p in per_sensor_low]),
        k=k,
    )
    return Agreement(
        min_cls_cosine=min(a.min_cls_cosine for a in agreements),
        min_token_cosine=min(a.min_token_cosine for a in agreements),
        relative_l2=max(a.relative_l2 for a in agreements),
        vectors=sum(a.vectors for a in agreements),
        kendall_tau=tau,
        top_k_overlap=overlap,
        top1_agreement=top1,
    )


def _sensor_cls(embedding: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 [CLS] rows ``(windows, D)`` of an ``s1+s2`` embedding (S1 first)."""
    rows = _rows(embedding["cls"])
    half = rows.shape[1] // 2
    return rows[:, :half], rows[:, half:]
