"""Per-stratum genetic algorithm (deap) that spreads a fixed number of samples out.

An individual is a binary mask over the stratum's candidates. Its fitness is the pair
``(min(log(1 + d_min), log(1 + d_floor)), F)`` compared lexicographically, where ``F`` is
:func:`xcsmoe.sampling.fitness.spread_score` of the selected samples, ``d_min`` their
minimum distance and ``d_floor`` the minimum distance of the greedy farthest-point
selection (:func:`greedy_farthest_point`): the GA maximises the entropy-based spread
among selections that keep greedy's separation, and otherwise climbs back to it. With
``min_distance_floor=False`` the fitness is ``F`` alone.

The initial population holds the greedy farthest-point selection (``greedy_seed``) and
random ones. Each generation applies tournament selection, two-point crossover and a
swap mutation (a selected sample moves to one of its ``neighbours`` nearest unselected
candidates, or anywhere when ``neighbours`` is 0), then the paper's adaptive constraint
(prune at random above ``target + tolerance``, augment at random below
``target − tolerance``), and keeps the best individual (elitism, deap ``HallOfFame``).
So the result is never worse than the greedy selection on the fitness.

Stopping: after ``generations``; earlier when the best fitness has not improved for
``patience`` generations (convergence); earlier when ``max_seconds`` have passed. The
first two are deterministic: the same seed gives the same result in any process or
thread (one ``numpy.random.Generator`` per stratum drives every operator; deap's own
operators would use the global ``random`` module). A wall-clock budget is NOT
deterministic: how many generations fit depends on the machine and its load. The log
records the generations run and why the run stopped; rerunning with
``generations=<that count>`` and no budget reproduces the result.

Large strata: the GA runs on at most ``max_candidates`` candidates (plus the greedy
selection's samples), one drawn at random per occupied cell of a 3-D grid on the unit
sphere whose cell size is tuned so that about ``max_candidates`` cells are occupied.
This keeps the stratum's geographic extent (not its density) and makes a precomputed
``log(1 + d)`` matrix affordable (2148² float64 ≈ 35 MiB). Candidates are ordered along
a Z-order curve so that crossover swaps regions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from deap import base, creator, tools

from xcsmoe.errors import ConfigError, expected
from xcsmoe.sampling.fitness import log_distance_matrix, spread_terms_from_log

__all__ = [
    "GAConfig",
    "candidate_pool",
    "evolve",
    "greedy_farthest_point",
    "select_stratum",
]

if not hasattr(creator, "SpreadFitness2"):
    creator.create("SpreadFitness2", base.Fitness, weights=(1.0, 1.0))
if not hasattr(creator, "SampleMask2"):
    creator.create("SampleMask2", np.ndarray, fitness=creator.SpreadFitness2)


@dataclass(frozen=True)
class GAConfig:
    """Genetic-algorithm settings.

    The paper's numbers for these settings did not survive; the defaults are ours:
    ``population`` 40 individuals, at most ``generations`` 400, stop after ``patience``
    60 generations without improvement (None: never), optionally capped by
    ``max_seconds`` per stratum (not deterministic, see the module docstring);
    tournament selection of size ``tournament`` 3, two-point crossover applied to a pair
    with probability ``crossover_rate`` 0.6, swap mutation applied to an individual with
    probability ``mutation_probability`` 0.9, elitism of 1. ``greedy_seed`` puts the
    greedy farthest-point selection in the initial population; ``min_distance_floor``
    ranks selections by ``min(d_min, greedy's d_min)`` first (see the module docstring).

    ``mutation_rate`` is the per-candidate move probability; None means ``1 / n`` for a
    stratum of ``n`` candidates (one move per mutated individual on average, at least
    one). ``neighbours``: how many nearest unselected candidates a moved sample may jump
    to (0: any). ``tolerance`` is the half-width of the adaptive constraint's band
    around the target; the default 0 makes every selection exactly ``target`` (the
    paper allows a small band, e.g. 2 of 100).
    """

    population: int = 40
    generations: int = 400
    patience: int | None = 60
    max_seconds: float | None = None
    crossover_rate: float = 0.6
    mutation_probability: float = 0.9
    mutation_rate: float | None = None
    neighbours: int = 8
    tournament: int = 3
    tolerance: int = 0
    max_candidates: int = 2048
    greedy_seed: bool = True
    min_distance_floor: bool = True

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
            "neighbours": (self.neighbours >= 0, "an integer ≥ 0"),
        }
        for name, (ok, wanted) in checks.items():
            if not ok:
                raise ConfigError(expected(name, wanted, getattr(self, name)))
        if self.patience is not None and self.patience < 1:
            raise ConfigError(expected("patience", "an integer ≥ 1 or None", self.patience))
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


def greedy_farthest_point(lon: np.ndarray, lat: np.ndarray, target: int) -> np.ndarray:
    """Indices of ``target`` samples picked by greedy farthest-point traversal.

    Starts from the sample farthest from the stratum's mean direction, then repeatedly
    adds the sample whose great-circle distance to the nearest pick is largest (ties to
    the lower index). Deterministic; ``O(n · target)``.
    """
    xyz = _unit_vectors(np.asarray(lon, float), np.asarray(lat, float))
    n = len(xyz)
    target = min(int(target), n)
    mean = xyz.mean(axis=0)
    first = int(np.argmin(xyz @ mean)) if np.linalg.norm(mean) > 1e-12 else 0
    picks = np.empty(target, dtype=np.int64)
    picks[0] = first
    nearest = np.linalg.norm(xyz - xyz[first], axis=1)
    for step in range(1, target):
        picks[step] = int(np.argmax(nearest))
        np.minimum(nearest, np.linalg.norm(xyz - xyz[picks[step]], axis=1), out=nearest)
    return picks


# --------------------------------------------------------------------------- operators
def _min_log(log_d: np.ndarray, chosen: np.ndarray) -> float:
    block = log_d[np.ix_(chosen, chosen)]
    return float((block + np.diag(np.full(len(chosen), np.inf))).min()) if len(chosen) > 1 else 0.0


def _neighbour_table(log_d: np.ndarray, count: int) -> np.ndarray:
    """``(n, count)`` nearest other candidates of each candidate (closest first)."""
    count = min(count, log_d.shape[0] - 1)
    masked = log_d + np.diag(np.full(log_d.shape[0], np.inf))
    near = np.argpartition(masked, count - 1, axis=1)[:, :count]
    order = np.take_along_axis(masked, near, axis=1).argsort(axis=1, kind="stable")
    return np.take_along_axis(near, order, axis=1)


def _toolbox(
    log_d: np.ndarray,
    target: int,
    tolerance: int,
    config: GAConfig,
    rng: np.random.Generator,
    *,
    floor: float | None,
) -> base.Toolbox:
    n = log_d.shape[0]
    rate = config.mutation_rate if config.mutation_rate is not None else 1.0 / n
    table = _neighbour_table(log_d, config.neighbours) if config.neighbours else None

    def individual(chosen: np.ndarray | None = None) -> Any:
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, target, replace=False) if chosen is None else chosen] = True
        return creator.SampleMask2(mask)

    def evaluate(mask: np.ndarray) -> tuple[float, float]:
        chosen = np.flatnonzero(mask)
        score, smallest = spread_terms_from_log(log_d[np.ix_(chosen, chosen)])
        return (0.0 if floor is None else min(smallest, floor), score)

    def mate(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start, stop = np.sort(rng.choice(n + 1, 2, replace=False))
        segment = a[start:stop].copy()
        a[start:stop] = b[start:stop]
        b[start:stop] = segment
        return a, b

    def mutate(mask: np.ndarray) -> tuple[np.ndarray]:
        selected = np.flatnonzero(mask)
        moves = min(max(1, rng.binomial(n, rate)), len(selected))
        for source in rng.choice(selected, moves, replace=False):
            if table is not None:
                free = table[source][~mask[table[source]]]
            else:
                free = np.flatnonzero(~mask)
            if len(free):
                mask[source] = False
                mask[free[rng.integers(len(free))]] = True
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
        ranks = _ranks(population)
        winners = picks[np.arange(k), ranks[picks].argmax(axis=1)]
        return [population[i] for i in winners]

    toolbox = base.Toolbox()
    toolbox.register("individual", individual)
    for name, func in {
        "evaluate": evaluate,
        "mate": mate,
        "mutate": mutate,
        "repair": repair,
        "select": select,
    }.items():
        toolbox.register(name, func)
    return toolbox


def _clone(individual: Any) -> Any:
    """A copy of an individual and its fitness (deap's deepcopy is far slower)."""
    copy = individual.copy()  # an ndarray copy keeps the class, not the fitness
    copy.fitness = creator.SpreadFitness2(individual.fitness.values)
    return copy


def _ranks(population: list) -> np.ndarray:
    """Rank of each individual by its (lexicographic) fitness, 0 = worst."""
    keys = np.array([ind.fitness.values for ind in population], dtype=float)
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    ranks = np.empty(len(population), dtype=np.int64)
    ranks[order] = np.arange(len(population))
    return ranks


def evolve(
    log_d: np.ndarray,
    target: int,
    *,
    config: GAConfig,
    rng: np.random.Generator,
    seeds: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, dict]:
    """Run the GA on a ``(n, n)`` ``log(1 + d)`` matrix; best mask's indices and a log.

    ``seeds``: index arrays put into the initial population (e.g. the greedy
    selection); the first one also sets the minimum-distance floor when
    ``config.min_distance_floor``.
    """
    tolerance = min(config.tolerance, target - 1)
    seeds = [np.asarray(s) for s in (seeds or []) if len(s) == target]
    floor = _min_log(log_d, seeds[0]) if seeds and config.min_distance_floor else None
    toolbox = _toolbox(log_d, target, tolerance, config, rng, floor=floor)
    started = time.perf_counter()
    population = [toolbox.individual(s) for s in seeds[: config.population]]
    randoms = [toolbox.individual() for _ in range(config.population - len(population))]
    population += randoms
    for ind in population:
        ind.fitness.values = toolbox.evaluate(ind)
    best = tools.HallOfFame(1, similar=np.array_equal)
    best.update(population)
    seeded = {
        "fitness_random_mean": float(np.mean([i.fitness.values[1] for i in randoms]))
        if randoms
        else float("nan"),
        "fitness_initial_best": float(best[0].fitness.values[1]),
    }
    if seeds:
        seeded["fitness_greedy"] = float(population[0].fitness.values[1])
    generation, stopped, stale = 0, "generations", 0
    for generation in range(1, config.generations + 1):
        if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
            generation, stopped = generation - 1, "max_seconds"
            break
        previous = best[0].fitness.values
        offspring = [_clone(ind) for ind in toolbox.select(population, len(population))]
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
        offspring[int(np.argmin(_ranks(offspring)))] = _clone(best[0])
        population = offspring
        best.update(population)
        stale = stale + 1 if best[0].fitness.values <= previous else 0
        if config.patience is not None and stale >= config.patience:
            stopped = "converged"
            break
    chosen = np.flatnonzero(best[0])
    log = {
        "generations": generation,
        "stopped": stopped,
        "seconds": round(time.perf_counter() - started, 4),
        **seeded,
        "fitness": float(best[0].fitness.values[1]),
        "min_distance_km": float(np.expm1(_min_log(log_d, chosen))),
    }
    if floor is not None:
        log["min_distance_floor_km"] = float(np.expm1(floor))
    return chosen, log


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
    greedy = greedy_farthest_point(lon, lat, target) if config.greedy_seed else None
    pool = candidate_pool(lon, lat, limit=config.max_candidates, rng=rng)
    if greedy is not None:
        pool = np.union1d(pool, greedy)
    pool = pool[_zorder(lon[pool], lat[pool])]
    seeds = None
    if greedy is not None:
        position = np.empty(n, dtype=np.int64)
        position[pool] = np.arange(len(pool))
        seeds = [position[greedy]]
    chosen, log = evolve(
        log_distance_matrix(lon[pool], lat[pool]), target, config=config, rng=rng, seeds=seeds
    )
    return np.sort(pool[chosen]), {"kept_whole": False, "size": n, "candidates": len(pool), **log}
