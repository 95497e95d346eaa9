"""Recipe: a "Minor TOM"-style pretraining selection from the global Major TOM grid.

Major TOM grid cells (10 km) over land → Köppen–Geiger climate zone + land cover per
cell centre (MODIS IGBP 2019 shipped with xcsmoe, the offline default; the paper's ESA
WorldCover with ``--landcover esa-worldcover``, see ``recipes/paper_worldcover.py``) →
100 samples per joint stratum by the genetic algorithm, at random and (``--greedy``) by
greedy farthest-point → GeoParquet of the selections, Table II side by side (headed by
the products used), and maps.

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
    greedy: bool = False,
    landcover: Any = None,
    landcover_classes: Any = None,
    **ga_settings: Any,
) -> tuple[Comparison, dict[str, Any]]:
    """Run the recipe; returns the comparison and a report (sizes, products, timings).

    ``landcover`` / ``landcover_classes``: see
    :func:`~xcsmoe.sampling.descriptors.add_descriptors` (default MODIS IGBP).
    """
    from xcsmoe.sampling.rasters import as_raster

    timings: dict[str, dict[str, float]] = {}
    product = as_raster(landcover, default="landcover", classes=landcover_classes)
    with stage(timings, "archive (Major TOM grid over land)"):
        archive = majortom_archive(region, spacing_km=spacing_km, landcover=product)
    with stage(timings, "descriptors"):
        described = add_descriptors(archive, landcover=product)
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
            greedy=greedy,
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
    parser.add_argument("--generations", type=int, default=400)
    parser.add_argument("--region", type=float, nargs=4, default=None, metavar=("W", "S", "E", "N"))
    parser.add_argument("--greedy", action="store_true", help="also the greedy baseline")
    parser.add_argument("--landcover", default=None, help="product name or raster path")
    args = parser.parse_args()
    comparison, report = run(
        args.out,
        region=tuple(args.region) if args.region else None,
        per_stratum=args.per_stratum,
        seed=args.seed,
        workers=args.workers,
        generations=args.generations,
        greedy=args.greedy,
        landcover=args.landcover,
    )
    print(f"archive: {report['archive_size']:,} samples in {report['strata']} joint strata")
    print(format_statistics(comparison.table))
    for name, timing in report["timings"].items():
        print(f"{name:<40} {timing['seconds']:>8.1f} s  peak {timing['peak_rss_mib']:>7.0f} MiB")
    print("\n".join(f"wrote {path}" for path in comparison.files.values()))


if __name__ == "__main__":
    main()
