"""Haversine distances and the entropy-based spread score the genetic algorithm maximises.

Spread score of a set ``S`` of ``k ≥ 2`` samples, with ``d_ij`` the Haversine
(great-circle) distance in km on a sphere of radius 6371.0088 km::

    F(S) = H_nn(S) + H_pair(S)
    H_nn(S)   = 2/k          Σ_i     log(1 + min_{j≠i} d_ij)  +  log(k − 1)
    H_pair(S) = 1/(k(k−1))   Σ_{i≠j} log(1 + d_ij)

``H_nn`` is, up to an additive constant, the Kozachenko–Leonenko nearest-neighbour
estimate of the differential (Shannon) entropy of the selection's spatial distribution
on the 2-D surface: it is largest when the samples cover their region evenly, the
``log(k − 1)`` term makes it independent of the set size (so the GA's tolerance band
does not favour smaller sets), and the logarithm punishes near-duplicates hard, which
lifts the minimum and nearest-neighbour distances. ``H_pair`` is the mean logarithmic pairwise distance (the
negative logarithmic energy of the point set), an entropy-like spread term that lifts the
average distance without letting a few far outliers dominate. The ``1 +`` (1 km) keeps
coincident samples finite. Both terms are in log-km, so neither needs a weight.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EARTH_RADIUS_KM",
    "haversine_km",
    "log_distance_matrix",
    "pairwise_km",
    "spread_score",
    "spread_score_from_log",
    "spread_terms_from_log",
]

EARTH_RADIUS_KM = 6371.0088


def haversine_km(
    lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray
) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasting)."""
    lon1, lat1, lon2, lat2 = (
        np.radians(np.asarray(v, dtype=float)) for v in (lon1, lat1, lon2, lat2)
    )
    h = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def pairwise_km(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Full ``(n, n)`` great-circle distance matrix in km (zero diagonal).

    Computed from unit-vector chords, ``2 R asin(|x_i − x_j| / 2)`` — the same
    great-circle distance as :func:`haversine_km`, with one matrix product instead of
    ``n²`` trigonometric evaluations.
    """
    lon_r, lat_r = np.radians(np.asarray(lon, float)), np.radians(np.asarray(lat, float))
    xyz = np.stack(
        [np.cos(lat_r) * np.cos(lon_r), np.cos(lat_r) * np.sin(lon_r), np.sin(lat_r)], axis=1
    )
    chord = np.sqrt(np.maximum(2.0 - 2.0 * (xyz @ xyz.T), 0.0))
    distance = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(chord / 2, 1.0))
    np.fill_diagonal(distance, 0.0)
    return distance


def log_distance_matrix(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """``log(1 + d_ij)`` (float64), the precomputed table the GA indexes into."""
    return np.log1p(pairwise_km(lon, lat))


def spread_terms_from_log(block: np.ndarray) -> tuple[float, float]:
    """``F`` and the minimum off-diagonal ``log(1 + d)`` of a ``(k, k)`` block.

    Overwrites the block's diagonal (pass a copy to keep it).
    """
    k = block.shape[0]
    if k < 2:
        return 0.0, 0.0
    pair = float(block.sum() - np.trace(block)) / (k * (k - 1))
    np.fill_diagonal(block, np.inf)
    nearest = block.min(axis=1)
    return 2.0 * float(nearest.mean()) + float(np.log(k - 1)) + pair, float(nearest.min())


def spread_score_from_log(log_d: np.ndarray) -> float:
    """``F`` of the module docstring from a selection's ``(k, k)`` ``log(1 + d)`` block."""
    return spread_terms_from_log(np.array(log_d, dtype=float))[0]


def spread_score(lon: np.ndarray, lat: np.ndarray) -> float:
    """``F`` of the module docstring for samples at ``lon``/``lat`` (degrees)."""
    return spread_score_from_log(np.log1p(pairwise_km(lon, lat)))
