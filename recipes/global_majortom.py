"""Recipe: a "Minor TOM"-style pretraining selection from the global Major TOM grid.

Major TOM grid cells (10 km) over land → Köppen–Geiger climate zone + MODIS IGBP land
cover per cell centre → 100 samples per joint stratum by the genetic algorithm and at
random → GeoParquet of both selections, Table II side by side, and maps.

    python recipes/global_majortom.py --out runs/minor_tom --workers 2
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xcsmoe.sampling.archive import majortom_archive
from xcsmoe.sampling.descriptors import add_descriptors
from xcsmoe.sampling.stats import format_statistics
from xcsmoe.sampling.workflow import Comparison, compare_selections, stage


def run(
    out_dir: str | Path,
    *,
    region: Any = None,
    spacing_km: float = 10.0,
    per_stratum: int = 100,
    seed: int = 0,
    workers: int = 2,
    archive_statistics: bool = True,
    **ga_settings: Any,
) -> tuple[Comparison, dict[str, Any]]:
    """Run the recipe; returns the comparison and a report (sizes, timings)."""
    timings: dict[str, dict[str, float]] = {}
    with stage(timings, "archive (Major TOM grid over land)"):
        archive = majortom_archive(region, spacing_km=spacing_km)
    with stage(timings, "descriptors"):
        described = add_descriptors(archive)
    client = None
    if workers > 1:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0")
        client = Client(cluster)
    try:
        comparison = compare_selections(
            described,
            out_dir=out_dir,
            per_stratum=per_stratum,
            seed=seed,
            client=client,
            archive_statistics=archive_statistics,
            timings=timings,
            **ga_settings,
        )
    finally:
        if client is not None:
            client.close()
            cluster.close()
    report = {
        "grid": archive.attrs["summary"],
        "descriptors": described.attrs["summary"]["descriptors"],
        "archive_size": len(described),
        "strata": int(described["stratum"].nunique()),
        "strata_sampled": comparison.genetic.attrs["selection"]["strata"]
        - comparison.genetic.attrs["selection"]["kept_whole"],
        "timings": timings,
    }
    return comparison, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/minor_tom")
    parser.add_argument("--per-stratum", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generations", type=int, default=150)
    parser.add_argument("--region", type=float, nargs=4, default=None, metavar=("W", "S", "E", "N"))
    args = parser.parse_args()
    comparison, report = run(
        args.out,
        region=tuple(args.region) if args.region else None,
        per_stratum=args.per_stratum,
        seed=args.seed,
        workers=args.workers,
        generations=args.generations,
    )
    print(f"archive: {report['archive_size']:,} samples in {report['strata']} joint strata")
    print(format_statistics(comparison.table))
    for name, timing in report["timings"].items():
        print(f"{name:<40} {timing['seconds']:>8.1f} s  peak {timing['peak_rss_mib']:>7.0f} MiB")
    print("\n".join(f"wrote {path}" for path in comparison.files.values()))


if __name__ == "__main__":
    main()
