"""Stratified selection: a fixed number of samples per joint stratum, by GA or at random.

Plan: group the archive by ``stratum`` and derive one seed per stratum from ``seed`` and
the stratum's name (so a stratum's result does not depend on the others or on the order
they run in). Execution: one task per stratum, in this process or on a Dask ``client``.
Strata with at most ``per_stratum`` samples are kept whole.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import Any

import geopandas as gpd
import numpy as np

from xcsmoe.errors import ConfigError, InputError, SamplingError, expected
from xcsmoe.sampling.genetic import GAConfig, greedy_farthest_point, select_stratum
from xcsmoe.sampling.lonlat import check_lonlat

__all__ = ["plan_strata", "select_genetic", "select_greedy", "select_random", "stratum_seed"]


def stratum_seed(seed: int, stratum: str) -> np.random.SeedSequence:
    """Seed of one stratum: stable across processes, runs and Python versions."""
    return np.random.SeedSequence([int(seed), zlib.crc32(str(stratum).encode())])


def plan_strata(
    archive: gpd.GeoDataFrame, *, per_stratum: int, stratum_column: str
) -> dict[str, np.ndarray]:
    """Row positions of each stratum, after checking the archive and the target.

    Refused before any work starts: a missing column, NaN/out-of-range coordinates, a
    non-positive target, and a target at least as large as the largest stratum (every
    stratum would be kept whole: the "selection" would be the archive itself).
    """
    if not isinstance(archive, gpd.GeoDataFrame):
        raise InputError(expected("archive", "a GeoDataFrame", type(archive).__name__))
    if len(archive) == 0:
        raise SamplingError(expected("archive", "at least one sample", "an empty archive"))
    if stratum_column not in archive.columns:
        raise InputError(
            expected(
                "archive",
                f"a {stratum_column!r} column",
                sorted(map(str, archive.columns)),
                "Run add_descriptors(archive) first.",
            )
        )
    if (
        isinstance(per_stratum, bool)
        or not isinstance(per_stratum, (int, np.integer))
        or per_stratum < 1
    ):
        raise ConfigError(expected("per_stratum", "a positive integer", per_stratum))
    missing = {"lon", "lat"} - set(archive.columns)
    if missing:
        raise InputError(expected("archive", "lon and lat columns", f"missing {sorted(missing)}"))
    check_lonlat(archive["lon"].to_numpy(float), archive["lat"].to_numpy(float))
    labels = archive[stratum_column]
    if labels.isna().any():
        raise InputError(
            expected(
                f"archive[{stratum_column!r}]",
                "a stratum for every sample",
                f"{int(labels.isna().sum())} missing",
                "Run add_descriptors on the archive, or drop those samples.",
            )
        )
    codes, names = labels.astype(str).factorize(sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    largest = int(np.diff(bounds).max())
    if per_stratum >= largest:
        raise SamplingError(
            expected(
                "per_stratum",
                f"fewer than the largest stratum's {largest} samples",
                per_stratum,
                f"Every one of the {len(names)} strata would be kept whole and the selection "
                "would be the archive itself; lower per_stratum.",
            )
        )
    return {str(name): order[bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}


def _random_stratum(
    lon: np.ndarray, lat: np.ndarray, target: int, *, seed: Any
) -> tuple[np.ndarray, dict]:
    n = len(lon)
    if n <= target:
        return np.arange(n), {"kept_whole": True, "size": n}
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, target, replace=False)), {"kept_whole": False, "size": n}


def _greedy_stratum(
    lon: np.ndarray, lat: np.ndarray, target: int, *, seed: Any
) -> tuple[np.ndarray, dict]:
    n = len(lon)
    if n <= target:
        return np.arange(n), {"kept_whole": True, "size": n}
    return np.sort(greedy_farthest_point(lon, lat, target)), {"kept_whole": False, "size": n}


def _execute(
    func: Callable[..., tuple[np.ndarray, dict]],
    archive: gpd.GeoDataFrame,
    strata: dict[str, np.ndarray],
    *,
    per_stratum: int,
    seed: int,
    client: Any,
    options: dict[str, Any],
) -> tuple[np.ndarray, dict[str, dict]]:
    lon, lat = archive["lon"].to_numpy(float), archive["lat"].to_numpy(float)
    args = {
        name: (lon[rows], lat[rows], per_stratum, stratum_seed(seed, name))
        for name, rows in strata.items()
    }
    if client is None:
        results = {n: func(a, b, t, seed=s, **options) for n, (a, b, t, s) in args.items()}
    else:  # biggest strata first so the slowest tasks start early
        names = sorted(args, key=lambda n: -len(strata[n]))
        futures = [
            client.submit(func, *args[n][:3], seed=args[n][3], pure=False, **options) for n in names
        ]
        results = dict(zip(names, client.gather(futures), strict=True))
    picked = [strata[name][results[name][0]] for name in strata]
    logs = {name: results[name][1] for name in strata}
    return np.sort(np.concatenate(picked)), logs


def _finish(
    archive: gpd.GeoDataFrame, rows: np.ndarray, logs: dict, meta: dict
) -> gpd.GeoDataFrame:
    out = archive.iloc[rows].copy()
    whole = sum(1 for log in logs.values() if log.get("kept_whole"))
    out.attrs = {
        **archive.attrs,
        "selection": {**meta, "strata": len(logs), "kept_whole": whole, "selected": len(out)},
        "strata_log": logs,
    }
    return out


def select_genetic(
    archive: gpd.GeoDataFrame,
    *,
    per_stratum: int = 100,
    seed: int = 0,
    client: Any = None,
    stratum_column: str = "stratum",
    config: GAConfig | None = None,
    **settings: Any,
) -> gpd.GeoDataFrame:
    """Up to ``per_stratum`` (± the GA tolerance) spread-out samples per joint stratum.

    GA settings come from ``config`` or keyword overrides of
    :class:`~xcsmoe.sampling.genetic.GAConfig` (``population``, ``generations``,
    ``patience``, ``max_seconds`` per stratum, ``crossover_rate``, ``mutation_rate``,
    ``tolerance``, ``max_candidates``, ...). ``client``: a ``dask.distributed.Client`` to
    run strata in parallel. The same ``seed`` gives the same selection unless
    ``max_seconds`` cuts a run short (wall time is not deterministic); per-stratum logs
    (fitness, greedy's fitness, generations run, why it stopped, seconds) are in
    ``result.attrs["strata_log"]`` and ``attrs["selection"]["budget_cut"]`` counts the
    strata the budget stopped.
    """
    try:
        config = GAConfig(**{**(config.to_dict() if config else {}), **settings})
    except TypeError as error:
        raise ConfigError(
            expected("settings", "GAConfig fields", sorted(settings), str(error))
        ) from error
    strata = plan_strata(archive, per_stratum=per_stratum, stratum_column=stratum_column)
    if config.max_candidates <= per_stratum:
        raise ConfigError(
            expected(
                "max_candidates",
                f"more than per_stratum ({per_stratum})",
                config.max_candidates,
                "Raise max_candidates (e.g. 20 × per_stratum).",
            )
        )
    started = time.perf_counter()
    rows, logs = _execute(
        select_stratum,
        archive,
        strata,
        per_stratum=per_stratum,
        seed=seed,
        client=client,
        options={"config": config},
    )
    meta = {
        "method": "genetic",
        "per_stratum": per_stratum,
        "seed": seed,
        "config": config.to_dict(),
        "seconds": round(time.perf_counter() - started, 3),
        "deterministic": not any(log.get("stopped") == "max_seconds" for log in logs.values()),
        "budget_cut": sum(1 for log in logs.values() if log.get("stopped") == "max_seconds"),
    }
    return _finish(archive, rows, logs, meta)


def select_random(
    archive: gpd.GeoDataFrame,
    *,
    per_stratum: int = 100,
    seed: int = 0,
    client: Any = None,
    stratum_column: str = "stratum",
) -> gpd.GeoDataFrame:
    """Exactly ``min(per_stratum, stratum size)`` random samples per joint stratum."""
    strata = plan_strata(archive, per_stratum=per_stratum, stratum_column=stratum_column)
    started = time.perf_counter()
    rows, logs = _execute(
        _random_stratum,
        archive,
        strata,
        per_stratum=per_stratum,
        seed=seed,
        client=client,
        options={},
    )
    meta = {
        "method": "random",
        "per_stratum": per_stratum,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return _finish(archive, rows, logs, meta)


def select_greedy(
    archive: gpd.GeoDataFrame,
    *,
    per_stratum: int = 100,
    client: Any = None,
    stratum_column: str = "stratum",
) -> gpd.GeoDataFrame:
    """``min(per_stratum, stratum size)`` samples per stratum by greedy farthest-point.

    The deterministic baseline the GA starts from (see
    :func:`~xcsmoe.sampling.genetic.greedy_farthest_point`).
    """
    strata = plan_strata(archive, per_stratum=per_stratum, stratum_column=stratum_column)
    started = time.perf_counter()
    rows, logs = _execute(
        _greedy_stratum,
        archive,
        strata,
        per_stratum=per_stratum,
        seed=0,
        client=client,
        options={},
    )
    meta = {
        "method": "greedy farthest-point",
        "per_stratum": per_stratum,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return _finish(archive, rows, logs, meta)
