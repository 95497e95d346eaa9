"""Benchmark: the global Major TOM recipe at full scale, and GA vs greedy on European strata.

1. European run (Major TOM 10 km over ``--europe`` W S E N): on the three largest joint
   strata, the GA with its default settings against greedy farthest-point — fitness,
   minimum, nearest-neighbour and average distance — and whether GA ≥ greedy on fitness
   and on minimum distance.
2. Global run: archive size, joint strata, wall time and peak memory for the archive,
   the descriptors and the selections; Table II for archive, random, greedy and GA (the
   paper's rows, headed by the products used); and whether the targets hold: whole run
   < 10 minutes and < 4 GiB (this process plus the Dask workers), GA above random on
   the within-strata distances.

    python benchmarks/sampling.py --workers 2 --out runs/bench_sampling
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

from tqdm import tqdm

from xcsmoe.sampling.archive import majortom_archive
from xcsmoe.sampling.descriptors import add_descriptors
from xcsmoe.sampling.fitness import spread_score
from xcsmoe.sampling.genetic import GAConfig, greedy_farthest_point, select_stratum
from xcsmoe.sampling.select import stratum_seed
from xcsmoe.sampling.stats import format_statistics, spread_statistics

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "global_majortom.py"
MINUTES_TARGET, GIB_TARGET = 10.0, 4.0
EUROPE = (-10.0, 35.0, 30.0, 60.0)


def _recipe():
    spec = importlib.util.spec_from_file_location("global_majortom", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def europe_ga_vs_greedy(
    region: tuple[float, ...], *, per_stratum: int, seed: int, strata: int = 3
) -> list[dict]:
    """GA (default settings) vs greedy farthest-point on the largest strata of a region."""
    archive = add_descriptors(majortom_archive(region))
    rows = []
    for name in tqdm(archive["stratum"].value_counts().index[:strata], desc="European strata"):
        group = archive[archive["stratum"] == name]
        lon, lat = group["lon"].to_numpy(), group["lat"].to_numpy()
        greedy = greedy_farthest_point(lon, lat, per_stratum)
        chosen, log = select_stratum(
            lon, lat, per_stratum, config=GAConfig(), seed=stratum_seed(seed, str(name))
        )
        row = {"stratum": str(name), "size": len(group), "generations": log["generations"]}
        row["stopped"], row["seconds"] = log["stopped"], log["seconds"]
        for label, picks in (("greedy", greedy), ("genetic", chosen)):
            stats = spread_statistics(lon[picks], lat[picks])
            row[f"{label} fitness"] = spread_score(lon[picks], lat[picks])
            row[f"{label} min km"] = stats["minimum"]
            row[f"{label} nn km"] = stats["nearest"]
            row[f"{label} avg km"] = stats["average"]
        rows.append(row)
    return rows


def _print_europe(rows: list[dict]) -> dict[str, bool]:
    print(
        f"{'stratum':<28} {'cells':>6} {'':>8} {'fitness':>8} {'min km':>8} {'NN km':>8} "
        f"{'avg km':>8}"
    )
    checks = {}
    for row in rows:
        for label in ("greedy", "genetic"):
            print(
                f"{row['stratum'] if label == 'greedy' else '':<28} "
                f"{row['size'] if label == 'greedy' else '':>6} {label:>8} "
                f"{row[f'{label} fitness']:>8.3f} {row[f'{label} min km']:>8.1f} "
                f"{row[f'{label} nn km']:>8.1f} {row[f'{label} avg km']:>8.0f}"
            )
        print(
            f"{'':<28} {'':>6} {'GA run':>8} {row['generations']} generations "
            f"({row['stopped']}), {row['seconds']:.1f} s"
        )
        checks[f"{row['stratum']}: GA ≥ greedy fitness"] = (
            row["genetic fitness"] >= row["greedy fitness"]
        )
        checks[f"{row['stratum']}: GA ≥ greedy minimum distance"] = row["genetic min km"] >= row[
            "greedy min km"
        ] * (1 - 1e-9)
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-stratum", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_sampling")
    parser.add_argument(
        "--europe", type=float, nargs=4, default=EUROPE, metavar=("W", "S", "E", "N")
    )
    parser.add_argument("--skip-global", action="store_true", help="only the European check")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPUs, Dask workers: {args.workers}")
    print(f"\n1. GA vs greedy farthest-point, three largest strata of Major TOM over {args.europe}")
    checks = _print_europe(
        europe_ga_vs_greedy(tuple(args.europe), per_stratum=args.per_stratum, seed=args.seed)
    )
    if not args.skip_global:
        checks.update(_global(args))
    print()
    for name, ok in checks.items():
        print(f"[{'PASS' if ok else 'FAIL'}] {name}")


def _global(args: argparse.Namespace) -> dict[str, bool]:
    print("\n2. Global run (Major TOM 10 km over land)")
    started = time.perf_counter()
    comparison, report = _recipe().run(
        args.out,
        per_stratum=args.per_stratum,
        seed=args.seed,
        workers=args.workers,
        greedy=True,
    )
    wall = time.perf_counter() - started
    timings = report["timings"]
    peak_gib = max(t["peak_rss_mib"] + t["workers_peak_rss_mib"] for t in timings.values()) / 1024
    grid = report["grid"]
    print(f"grid cells generated: {grid['grid_cells']:,} (water dropped: {grid['water']:,})")
    print(
        f"archive size: {report['archive_size']:,} land cells "
        f"(descriptor drops: {report['descriptors']['dropped']:,})"
    )
    print(
        f"joint strata: {report['strata']} ({report['strata_sampled']} larger than "
        f"{args.per_stratum})"
    )
    print(f"\n{'stage':<36} {'wall s':>8} {'peak RSS MiB':>13} {'workers MiB':>12}")
    for name, timing in timings.items():
        print(
            f"{name:<36} {timing['seconds']:>8.1f} {timing['peak_rss_mib']:>13.0f} "
            f"{timing['workers_peak_rss_mib']:>12.0f}"
        )
    print(f"{'whole run':<36} {wall:>8.1f} {peak_gib * 1024:>13.0f}  (process + workers)")
    logs = comparison.genetic.attrs["strata_log"].values()
    stops = {}
    for log in logs:
        if not log.get("kept_whole"):
            stops[log["stopped"]] = stops.get(log["stopped"], 0) + 1
    print(f"GA stops per sampled stratum: {stops}")
    print("\nTable II (archive, random stratified, greedy farthest-point, genetic):")
    print(format_statistics(comparison.table))
    table = comparison.table
    print(f"\n{'statistic':<56} {'random':>10} {'greedy':>10} {'genetic':>10} {'GA/rnd %':>9}")
    for statistic in table.index:
        rnd, greedy, ga = (table.loc[statistic, c] for c in ("random", "greedy", "genetic"))
        change = 100 * (ga / rnd - 1) if rnd else float("nan")
        print(f"{statistic:<56} {rnd:>10.1f} {greedy:>10.1f} {ga:>10.1f} {change:>+9.1f}")
    within = "average distance within strata [km]"
    print(f"outputs: {', '.join(comparison.files.values())}")
    return {
        f"whole run < {MINUTES_TARGET:.0f} min": wall < 60 * MINUTES_TARGET,
        f"peak memory < {GIB_TARGET:.0f} GiB": peak_gib < GIB_TARGET,
        "GA > random: average distance within strata": table.loc[within, "genetic"]
        > table.loc[within, "random"],
        "GA > random: minimum distance within strata": table.loc[
            "minimum distance within strata [km]", "genetic"
        ]
        > table.loc["minimum distance within strata [km]", "random"],
        "GA ≥ greedy: minimum distance within strata": table.loc[
            "minimum distance within strata [km]", "genetic"
        ]
        >= table.loc["minimum distance within strata [km]", "greedy"] * (1 - 1e-9),
        "GA > random: average distance (all pairs)": table.loc["average distance [km]", "genetic"]
        > table.loc["average distance [km]", "random"],
    }


if __name__ == "__main__":
    main()
