"""Benchmark: the global Major TOM recipe at full scale (Minor TOM-style selection).

Prints the archive size, the number of joint strata, wall time and peak memory for the
archive, the descriptors and the GA selection, GA vs random on every Table II statistic,
and whether the targets hold: whole run < 10 minutes and < 4 GiB (this process plus the
Dask workers), GA above random on average and minimum distance.

    python benchmarks/sampling.py --workers 2 --out runs/bench_sampling
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

from xcsmoe.sampling.stats import format_statistics

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "global_majortom.py"
MINUTES_TARGET, GIB_TARGET = 10.0, 4.0


def _recipe():
    spec = importlib.util.spec_from_file_location("global_majortom", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-stratum", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_sampling")
    args = parser.parse_args()

    started = time.perf_counter()
    comparison, report = _recipe().run(
        args.out, per_stratum=args.per_stratum, seed=args.seed, workers=args.workers
    )
    wall = time.perf_counter() - started
    timings = report["timings"]
    peak_gib = max(t["peak_rss_mib"] + t["workers_peak_rss_mib"] for t in timings.values()) / 1024

    print(f"machine: {os.cpu_count()} CPUs, Dask workers: {args.workers}")
    print(
        f"grid cells generated: {report['grid']['grid_cells']:,} (water dropped: {report['grid']['water']:,})"
    )
    print(
        f"archive size: {report['archive_size']:,} land cells "
        f"(descriptor drops: {report['descriptors']['dropped']:,})"
    )
    print(
        f"joint strata: {report['strata']} ({report['strata_sampled']} larger than {args.per_stratum})"
    )
    print()
    print(f"{'stage':<36} {'wall s':>8} {'peak RSS MiB':>13} {'workers MiB':>12}")
    for name, timing in timings.items():
        print(
            f"{name:<36} {timing['seconds']:>8.1f} {timing['peak_rss_mib']:>13.0f} "
            f"{timing['workers_peak_rss_mib']:>12.0f}"
        )
    print(f"{'whole run':<36} {wall:>8.1f} {peak_gib * 1024:>13.0f}  (process + workers)")
    print()
    print("Table II (archive, random stratified, genetic):")
    print(format_statistics(comparison.table))
    print()
    table = comparison.table
    print(f"{'GA vs random':<56} {'random':>10} {'genetic':>10} {'Δ %':>7}")
    for statistic in table.index:
        rnd, ga = table.loc[statistic, "random"], table.loc[statistic, "genetic"]
        change = 100 * (ga / rnd - 1) if rnd else float("nan")
        print(f"{statistic:<56} {rnd:>10.1f} {ga:>10.1f} {change:>+7.1f}")
    print()
    checks = {
        f"whole run < {MINUTES_TARGET:.0f} min": wall < 60 * MINUTES_TARGET,
        f"peak memory < {GIB_TARGET:.0f} GiB": peak_gib < GIB_TARGET,
        "GA > random: average distance within strata": table.loc[
            "average distance within strata [km]", "genetic"
        ]
        > table.loc["average distance within strata [km]", "random"],
        "GA > random: minimum distance within strata": table.loc[
            "minimum distance within strata [km]", "genetic"
        ]
        > table.loc["minimum distance within strata [km]", "random"],
        "GA > random: average distance (all pairs)": table.loc["average distance [km]", "genetic"]
        > table.loc["average distance [km]", "random"],
        "GA ≥ random: minimum distance (all pairs)": table.loc["minimum distance [km]", "genetic"]
        >= table.loc["minimum distance [km]", "random"],
    }
    for name, ok in checks.items():
        print(f"[{'PASS' if ok else 'FAIL'}] {name}")
    print(f"outputs: {', '.join(comparison.files.values())}")


if __name__ == "__main__":
    main()
