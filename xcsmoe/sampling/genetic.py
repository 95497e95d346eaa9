"""Per-stratum genetic algorithm (deap) that spreads a fixed number of samples out.

An individual is a binary mask over the stratum's candidates; its fitness is
:func:`xcsmoe.sampling.fitness.spread_score` of the selected samples. Each generation
applies tournament selection, two-point crossover and bit-flip mutation, then the
adaptive constraint (prune at random above ``target + tolerance``, augment at random
below ``target − tolerance``), and keeps the best individual (elitism, deap
``HallOfFame``). The run stops after ``generations`` or ``max_seconds``.

Large strata: the GA runs on at most ``max_candidates`` candidates, one drawn at random
per occupied cell of a 3-D grid on the unit sphere whose cell size is tuned so that about
``max_candidates`` cells are occupied. This keeps the stratum's geographic extent (not
its density) and makes a precomputed ``log(1 + d)`` matrix affordable (2048² float32 =
16 MiB). Candidates are ordered along a Z-order curve so that crossover swaps regions.

The operators draw from one ``numpy.random.Generator`` per stratum (deap's own operators
use the global ``random`` module and loop in Python per bit), so a seed reproduces a run
in any process or thread.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from deap import base, creator, tools

from xcsmoe.errors import ConfigError, expected
from xcsmoe.sampling.fitness import log_distance_matrix, spread_score_from_log

__all__ = ["GAConfig", "candidate_pool", "evolve", "select_stratum"]

if not hasattr(creator, "SpreadFitness"):
    creator.create("SpreadFitness", base.Fitness, weights=(1.0,))
if not hasattr(creator, "SampleMask"):
    creator.create("SampleMask", np.ndarray, fitness=creator.SpreadFitness)


@dataclass(frozen=True)
class GAConfig:
    """Genetic-algorithm settings.

    The paper's numbers for these settings did not survive; the defaults are ours:
    ``population`` 40 individuals, ``generations`` 150 (optionally capped by
    ``max_seconds`` per stratum), tournament selection of size ``tournament`` 3, two-point
    crossover applied to a pair with probability ``crossover_rate`` 0.6, bit-flip mutation
    applied to an individual with probability ``mutation_probability`` 0.9, elitism of 1.
    They reach most of the attainable fitness gain within a fraction of a second per
    stratum, which keeps a global run (≈ 230 sampled strata) to about two minutes.

    ``mutation_rate`` is the per-bit flip probability; None means ``1 / n`` for a stratum
    of ``n`` candidates (one flip per mutated individual on average). ``tolerance`` is the
    half-width of the adaptive constraint's band around the target; the default 0 makes
    every selection exactly ``target`` (the paper allows a small band, e.g. 2 of 100).
    """

    population: int = 40
    generations: int = 150
    max_seconds: float | None = None
    crossover_rate: float = 0.6
    mutation_probability: float = 0.9
    mutation_rate: float | None = None
    tournament: int = 3
    tolerance: int = 0
    max_candidates: int = 2048

    def __post_init__(self) -> None:
        checks = {
            "population": (self.population >= 2, "an integer ≥ 2"),
            "generations": (self.generations >= 0, "an integer ≥ 0"),
            "crossover_rate": (0.0 <= self.crossover_rate <= 1.0, "a probability in [0, 1]"),
            "mutation_probability": (
                0.0 <= self.mutation_probability <= 1.0,
                "a probability in [0, 1]",
            ),
            "tournament": (self.tournament >= 1, "an integer ≥ 1"),
            "max_candidates": (self.max_candidates >= 2, "an integer ≥ 2"),
        }
        for name, (ok, wanted) in checks.items():
            if not ok:
                raise ConfigError(expected(name, wanted, getattr(self, name)))
        if self.mutation_rate is not None and not 0.0 < self.mutation_rate <= 1.0:
            raise ConfigError(
                expected("mutation_rate", "a probability in (0, 1]", self.mutation_rate)
            )
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(
                expected("max_seconds", "a positive number or None", self.max_seconds)
            )
        if self.tolerance < 0:
            raise ConfigError(expected("tolerance", "a non-negative count", self.tolerance))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- candidates
def _unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lon_r, lat_r = np.radians(lon), np.radians(lat)
    return np.stack(
        [np.cos(lat_r) * np.cos(lon_r), np.cos(lat_r) * np.sin(lon_r), np.sin(lat_r)], 1
    )


def _occupied(xyz: np.ndarray, size: float) -> np.ndarray:
    """Cell number (0..m-1) of each unit vector on a cubic grid of edge ``size``."""
    side = int(np.ceil(2.0 / size)) + 2
    ijk = np.floor((xyz + 1.0) / size).astype(np.int64)
    key = (ijk[:, 0] * side + ijk[:, 1]) * side + ijk[:, 2]
    return np.unique(key, return_inverse=True)[1].ravel()


def candidate_pool(
    lon: np.ndarray, lat: np.ndarray, *, limit: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of at most ``limit`` spatially thinned candidates (all when ``n ≤ limit``)."""
    n = len(lon)
    if n <= limit:
        return np.arange(n)
    xyz = _unit_vectors(lon, lat)
    low, high = 1e-5, 2.0  # cell edge on the unit sphere (1e-5 ≈ 64 m on the Earth)
    cells = _occupied(xyz, high)
    for _ in range(18):
        middle = np.sqrt(low * high)
        trial = _occupied(xyz, middle)
        if trial.max() + 1 >= limit:
            low = middle
        else:
            high, cells = middle, trial
    order = rng.permutation(n)
    _, first = np.unique(cells[order], return_index=True)
    picked = order[first]
    if len(picked) < limit:  # top up at random from the rest
        rest = np.setdiff1d(np.arange(n), picked)
        picked = np.concatenate([picked, rng.choice(rest, limit - len(picked), replace=False)])
    return np.sort(picked)


def _zorder(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Permutation along a Z-order (Morton) curve of a 1024 × 1024 lon/lat grid."""
    x = np.clip(((lon + 180.0) / 360.0 * 1024).astype(np.int64), 0, 1023)
    y = np.clip(((lat + 90.0) / 180.0 * 1024).astype(np.int64), 0, 1023)
    code = np.zeros_like(x)
    for bit in range(10):
        code |= ((x >> bit) & 1) << (2 * bit) | ((y >> bit) & 1) << (2 * bit + 1)
    return np.argsort(code, kind="stable")


# --------------------------------------------------------------------------- operators
def _toolbox(
    log_d: np.ndarray, target: int, tolerance: int, config: GAConfig, rng: np.random.Generator
) -> base.Toolbox:
    n = log_d.shape[0]
    flip = config.mutation_rate if config.mutation_rate is not None else 1.0 / n

    def individual() -> Any:
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, target, replace=False)] = True
        return creator.SampleMask(mask)

    def evaluate(mask: np.ndarray) -> tuple[float]:
        chosen = np.flatnonzero(mask)
        return (spread_score_from_log(log_d[np.ix_(chosen, chosen)]),)

    def mate(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start, stop = np.sort(rng.choice(n + 1, 2, replace=False))
        segment = a[start:stop].copy()
        a[start:stop] = b[start:stop]
        b[start:stop] = segment
        return a, b

    def mutate(mask: np.ndarray) -> tuple[np.ndarray]:
        count = max(1, rng.binomial(n, flip))
        where = rng.choice(n, count, replace=False)
        mask[where] = ~mask[where]
        return (mask,)

    def repair(mask: np.ndarray) -> bool:
        size = int(mask.sum())
        if size > target + tolerance:
            mask[rng.choice(np.flatnonzero(mask), size - target - tolerance, replace=False)] = False
        elif size < target - tolerance:
            free = np.flatnonzero(~mask)
            mask[rng.choice(free, target - tolerance - size, replace=False)] = True
        else:
            return False
        return True

    def select(population: list, k: int) -> list:
        picks = rng.integers(0, len(population), size=(k, config.tournament))
        scores = np.array([ind.fitness.values[0] for ind in population])
        winners = picks[np.arange(k), scores[picks].argmax(axis=1)]
        return [population[i] for i in winners]

    toolbox = base.Toolbox()
    toolbox.register("individual", individual)
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)
    for name, func in {
        "evaluate": evaluate,
        "mate": mate,
        "mutate": mutate,
        "repair": repair,
        "select": select,
    }.items():
        toolbox.register(name, func)
    return toolbox


def evolve(
    log_d: np.ndarray, target: int, *, config: GAConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """Run the GA on a ``(n, n)`` ``log(1 + d)`` matrix; best mask's indices and a log."""
    tolerance = min(config.tolerance, target - 1)
    toolbox = _toolbox(log_d, target, tolerance, config, rng)
    started = time.perf_counter()
    population = toolbox.population(n=config.population)
    for ind in population:
        ind.fitness.values = toolbox.evaluate(ind)
    best = tools.HallOfFame(1, similar=np.array_equal)
    best.update(population)
    initial = max(ind.fitness.values[0] for ind in population)
    mean_random = float(np.mean([ind.fitness.values[0] for ind in population]))
    generation = 0
    for generation in range(1, config.generations + 1):
        if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
            generation -= 1
            break
        offspring = [toolbox.clone(ind) for ind in toolbox.select(population, len(population))]
        for a, b in zip(offspring[::2], offspring[1::2], strict=False):
            if rng.random() < config.crossover_rate:
                toolbox.mate(a, b)
                del a.fitness.values, b.fitness.values
        for ind in offspring:
            if rng.random() < config.mutation_probability:
                toolbox.mutate(ind)
                del ind.fitness.values
            if toolbox.repair(ind) and ind.fitness.valid:
                del ind.fitness.values
        for ind in offspring:
            if not ind.fitness.valid:
                ind.fitness.values = toolbox.evaluate(ind)
        offspring[int(np.argmin([ind.fitness.values[0] for ind in offspring]))] = toolbox.clone(
            best[0]
        )
        population = offspring
        best.update(population)
    log = {
        "generations": generation,
        "seconds": round(time.perf_counter() - started, 4),
        "fitness_random_mean": mean_random,
        "fitness_initial_best": float(initial),
        "fitness": float(best[0].fitness.values[0]),
    }
    return np.flatnonzero(best[0]), log


def select_stratum(
    lon: np.ndarray,
    lat: np.ndarray,
    target: int,
    *,
    config: GAConfig,
    seed: np.random.SeedSequence | int,
) -> tuple[np.ndarray, dict]:
    """Indices (into ``lon``/``lat``) of the GA's selection for one stratum, and a log.

    A stratum with at most ``target`` samples is kept whole (log ``{"kept_whole": True}``).
    """
    n = len(lon)
    if n <= target:
        return np.arange(n), {"kept_whole": True, "size": n}
    rng = np.random.default_rng(seed)
    pool = candidate_pool(lon, lat, limit=config.max_candidates, rng=rng)
    pool = pool[_zorder(lon[pool], lat[pool])]
    chosen, log = evolve(log_distance_matrix(lon[pool], lat[pool]), target, config=config, rng=rng)
    return np.sort(pool[chosen]), {"kept_whole": False, "size": n, "candidates": len(pool), **log}
