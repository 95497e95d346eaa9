"""The paper's Table II for any selection (or the whole archive).

Distances are great-circle (Haversine) distances in km on a sphere of radius
6371.0088 km. Rows:

- ``tiles``; ``tiles per climate zone`` / ``per land-cover class`` / ``per joint
  stratum``: mean and std of the counts over the classes present;
- ``average distance``: mean over all pairs of samples — exact (chunked) up to
  ``exact_limit`` samples, else the mean over ``pair_samples`` uniformly drawn pairs
  ``i ≠ j`` (an unbiased estimate);
- ``minimum distance`` and ``average nearest-neighbour distance``: over the whole set,
  exact (k-d tree on unit vectors, whose chord order equals great-circle order);
- ``... within strata``: the same three spread statistics computed inside each joint
  stratum with ≥ 2 samples and averaged over strata (what the per-stratum GA optimises).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from xcsmoe.errors import InputError, expected
from xcsmoe.sampling.fitness import EARTH_RADIUS_KM

__all__ = ["format_statistics", "selection_statistics", "spread_statistics"]

_CHUNK = 2048


def _unit(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lon_r, lat_r = np.radians(lon), np.radians(lat)
    return np.stack(
        [np.cos(lat_r) * np.cos(lon_r), np.cos(lat_r) * np.sin(lon_r), np.sin(lat_r)], 1
    )


def _chord_to_km(chord: np.ndarray) -> np.ndarray:
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0.0, 1.0))


def _mean_pairwise(
    xyz: np.ndarray, *, exact_limit: int, pair_samples: int, rng: np.random.Generator
) -> float:
    n = len(xyz)
    if n <= exact_limit:
        total = 0.0
        for start in range(0, n, _CHUNK):
            block = xyz[start : start + _CHUNK]
            chord = np.sqrt(np.maximum(2.0 - 2.0 * (block @ xyz.T), 0.0))
            total += float(_chord_to_km(chord).sum())  # the diagonal adds ~0
        return total / (n * (n - 1))
    i = rng.integers(0, n, pair_samples)
    j = (i + rng.integers(1, n, pair_samples)) % n  # uniform over j ≠ i
    return float(_chord_to_km(np.linalg.norm(xyz[i] - xyz[j], axis=1)).mean())


def _nearest_km(xyz: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    chord, _ = cKDTree(xyz).query(xyz, k=2)
    return _chord_to_km(chord[:, 1])


def spread_statistics(
    lon: np.ndarray,
    lat: np.ndarray,
    *,
    exact_limit: int = 10_000,
    pair_samples: int = 1_000_000,
    seed: int = 0,
) -> dict[str, float]:
    """Average pairwise, minimum and average nearest-neighbour distance (km)."""
    xyz = _unit(np.asarray(lon, float), np.asarray(lat, float))
    if len(xyz) < 2:
        return {"average": np.nan, "minimum": np.nan, "nearest": np.nan}
    rng = np.random.default_rng(seed)
    nearest = _nearest_km(xyz)
    return {
        "average": _mean_pairwise(xyz, exact_limit=exact_limit, pair_samples=pair_samples, rng=rng),
        "minimum": float(nearest.min()),
        "nearest": float(nearest.mean()),
    }


def _column(frame: Any, *, exact_limit: int, pair_samples: int, seed: int) -> dict[str, float]:
    missing = {"lon", "lat", "climate", "landcover", "stratum"} - set(frame.columns)
    if missing:
        raise InputError(
            expected(
                "selection",
                "columns lon, lat, climate, landcover, stratum",
                f"missing {sorted(missing)}",
                "Run add_descriptors first.",
            )
        )
    row: dict[str, float] = {"tiles": float(len(frame))}
    for label, column in (
        ("climate zone", "climate"),
        ("land-cover class", "landcover"),
        ("joint stratum", "stratum"),
    ):
        counts = frame[column].astype(str).value_counts()
        row[f"tiles per {label} (mean)"] = float(counts.mean())
        row[f"tiles per {label} (std)"] = float(counts.std(ddof=0))
    options = {"exact_limit": exact_limit, "pair_samples": pair_samples, "seed": seed}
    whole = spread_statistics(frame["lon"].to_numpy(), frame["lat"].to_numpy(), **options)
    row["average distance [km]"] = whole["average"]
    row["minimum distance [km]"] = whole["minimum"]
    row["average nearest-neighbour distance [km]"] = whole["nearest"]
    per = [
        spread_statistics(g["lon"].to_numpy(), g["lat"].to_numpy(), **options)
        for _, g in frame.groupby(frame["stratum"].astype(str), sort=True)
        if len(g) >= 2
    ]
    for key, label in (
        ("average", "average distance"),
        ("minimum", "minimum distance"),
        ("nearest", "average nearest-neighbour distance"),
    ):
        row[f"{label} within strata [km]"] = (
            float(np.mean([p[key] for p in per])) if per else np.nan
        )
    return row


def selection_statistics(
    selections: Any,
    *,
    exact_limit: int = 10_000,
    pair_samples: int = 1_000_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Table II: one column per selection, one row per statistic (see module docstring).

    ``selections``: a GeoDataFrame (with descriptors) or a mapping name → GeoDataFrame,
    e.g. ``{"archive": archive, "random": rnd, "genetic": ga}`` for a side-by-side table.
    """
    if not isinstance(selections, Mapping):
        selections = {"selection": selections}
    if not selections:
        raise InputError(expected("selections", "at least one selection", "an empty mapping"))
    columns = {
        str(name): _column(frame, exact_limit=exact_limit, pair_samples=pair_samples, seed=seed)
        for name, frame in selections.items()
    }
    table = pd.DataFrame(columns)
    table.index.name = "statistic"
    return table


def format_statistics(table: pd.DataFrame) -> str:
    """Text rendering of a Table II frame with ``mean ± std`` rows merged."""
    lines: list[tuple[str, list[str]]] = []
    for statistic in table.index:
        if statistic.endswith("(std)"):
            continue
        values = table.loc[statistic]
        if statistic.endswith("(mean)"):
            std = table.loc[statistic.replace("(mean)", "(std)")]
            cells = [f"{m:,.0f} ± {s:,.0f}" for m, s in zip(values, std, strict=True)]
            statistic = statistic.replace(" (mean)", "")
        elif statistic == "tiles":
            cells = [f"{v:,.0f}" for v in values]
        else:
            cells = [f"{v:,.1f}" for v in values]
        lines.append((statistic, cells))
    width = max(len(name) for name, _ in lines)
    widths = [
        max(len(str(c)), *(len(cells[i]) for _, cells in lines))
        for i, c in enumerate(table.columns)
    ]
    header = " | ".join(
        [" " * width, *(str(c).rjust(w) for c, w in zip(table.columns, widths, strict=True))]
    )
    rows = [
        " | ".join([name.ljust(width), *(c.rjust(w) for c, w in zip(cells, widths, strict=True))])
        for name, cells in lines
    ]
    return "\n".join([header, "-" * len(header), *rows])
