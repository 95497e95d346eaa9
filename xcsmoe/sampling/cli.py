"""``xcsmoe sample ...``: descriptor-driven GA vs random selection from the command line.

``xcsmoe sample majortom --out DIR`` — Major TOM grid over land (globe or ``--region``,
``W S E N`` with ``W > E`` across the antimeridian);
``xcsmoe sample items FILE... --out DIR`` — STAC items (Item / ItemCollection JSON, or a
static catalog's ``catalog.json``).

Land cover: ``--landcover`` takes a raster path/URL, ``modis_igbp`` (the offline default)
or a STAC product configured in ``catalogs/`` (``esa-worldcover``, the paper's; ``--stac-api``
points it at another STAC API); ``--landcover-classes`` a class table (shipped name or a
JSON/YAML/CSV file with names, water and nodata codes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from xcsmoe.cli import non_negative_int, positive_float, positive_int

__all__ = ["add_commands", "read_items"]


def read_items(paths: list[str]) -> list[Any]:
    """STAC items from Item / FeatureCollection JSON files or static catalogs."""
    import pystac

    items: list[Any] = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if isinstance(data, list):  # a plain JSON list of Item dicts
            items.extend(data)
            continue
        kind = data.get("type")
        if kind in ("Catalog", "Collection"):
            items.extend(pystac.read_file(path).get_items(recursive=True))
        elif kind == "FeatureCollection":
            items.extend(data.get("features", []))
        else:
            items.append(data)
    return items


def _client(workers: int) -> Any:
    if workers <= 1:
        return None
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0")
    return Client(cluster)


def landcover_source(args: argparse.Namespace) -> Any:
    """The land-cover product the arguments name (a STAC product opened on ``--stac-api``)."""
    if args.landcover is None or args.stac_api is None:
        return args.landcover
    from xcsmoe.sampling.stac_product import stac_product

    return stac_product(args.landcover, url=args.stac_api)


def _run(archive: Any, args: argparse.Namespace) -> int:
    from xcsmoe.sampling.descriptors import add_descriptors
    from xcsmoe.sampling.stats import format_statistics
    from xcsmoe.sampling.workflow import compare_selections

    described = add_descriptors(
        archive,
        climate=args.climate,
        landcover=args.landcover_raster,
        method=args.method,
        climate_classes=args.climate_classes,
        landcover_classes=args.landcover_classes,
    )
    print(
        f"archive: {len(archive):,} samples; described: {len(described):,} "
        f"({described.attrs['summary']['descriptors']['dropped']:,} dropped)"
    )
    settings = {
        "generations": args.generations,
        "population": args.population,
        "patience": args.patience,
    }
    if args.max_seconds is not None:
        settings["max_seconds"] = args.max_seconds
    client = _client(args.workers)
    try:
        result = compare_selections(
            described,
            out_dir=args.out,
            per_stratum=args.per_stratum,
            seed=args.seed,
            client=client,
            progress=print,
            **settings,
        )
    finally:
        if client is not None:
            client.close()
            client.cluster.close()
    print(format_statistics(result.table))
    print("\n".join(f"wrote {path}" for path in result.files.values()))
    return 0


def _majortom(args: argparse.Namespace) -> int:
    from xcsmoe.sampling.archive import majortom_archive

    region = tuple(args.region) if args.region else None
    args.landcover_raster = landcover_source(args)
    archive = majortom_archive(
        region,
        spacing_km=args.spacing_km,
        landcover=args.landcover_raster,
        landcover_classes=args.landcover_classes,
    )
    return _run(archive, args)


def _items(args: argparse.Namespace) -> int:
    from xcsmoe.sampling.archive import archive_from_items

    args.landcover_raster = landcover_source(args)
    return _run(archive_from_items(read_items(args.paths), on_invalid=args.on_invalid), args)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--per-stratum", type=positive_int, default=100)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--generations", type=positive_int, default=400)
    parser.add_argument("--population", type=positive_int, default=40)
    parser.add_argument(
        "--patience",
        type=positive_int,
        default=60,
        help="stop a stratum after this many generations without improvement",
    )
    parser.add_argument(
        "--max-seconds",
        type=positive_float,
        default=None,
        help="GA wall-clock budget per stratum (results then depend on machine speed)",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=1, help="Dask workers (1: in-process)"
    )
    parser.add_argument("--method", choices=("centre", "majority"), default="centre")
    parser.add_argument("--climate", default=None, help="climate raster (default Köppen–Geiger)")
    parser.add_argument(
        "--climate-classes", default=None, help="class table of --climate (name or file)"
    )
    parser.add_argument(
        "--landcover",
        default=None,
        help="land cover: raster path/URL, modis_igbp (default) or a STAC product (esa-worldcover)",
    )
    parser.add_argument(
        "--landcover-classes",
        default=None,
        help="class table of --landcover: shipped name (modis-igbp, esa-worldcover) or a "
        "JSON/YAML/CSV file with classes, water and nodata codes",
    )
    parser.add_argument(
        "--stac-api", default=None, help="STAC API URL for a --landcover STAC product"
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``sample majortom`` and ``sample items`` on the top-level parser."""
    sample = subparsers.add_parser("sample", help="descriptor-driven GA vs random sampling")
    sub = sample.add_subparsers(dest="sample_command", required=True)
    grid = sub.add_parser("majortom", help="Major TOM grid cells over land")
    grid.add_argument("--region", type=float, nargs=4, metavar=("W", "S", "E", "N"), default=None)
    grid.add_argument("--spacing-km", type=positive_float, default=10.0)
    _common(grid)
    grid.set_defaults(run=_majortom)
    items = sub.add_parser("items", help="STAC items from JSON files or a static catalog")
    items.add_argument("paths", nargs="+", help="Item/ItemCollection JSON or catalog.json")
    items.add_argument("--on-invalid", choices=("raise", "drop"), default="drop")
    _common(items)
    items.set_defaults(run=_items)
