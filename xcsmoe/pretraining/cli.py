"""``xcsmoe patches``: cut real S1/S2 imagery into a Zarr patch store for pretraining."""

from __future__ import annotations

import argparse
from typing import Any

from xcsmoe.cli import non_negative_int, positive_int

SAMPLE = "sample"  # --items name of the bundled sample catalog


def add_commands(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "patches",
        help="cut S1/S2 tiles into valid patches in a Zarr v3 store (resumable, on Dask)",
    )
    cmd.add_argument(
        "store",
        help="output Zarr store, a folder or a URL such as s3://bucket/patches.zarr (endpoint "
        "and credentials from the backend's environment, e.g. AWS_*; resumed if it holds "
        "the same job)",
    )
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--items", nargs="+", metavar="PATH",
        help=f'STAC Item/ItemCollection JSON files or static catalogs, or "{SAMPLE}"',
    )  # fmt: skip
    source.add_argument("--majortom", metavar="DIR", help="a Major TOM Core S2L2A folder")
    source.add_argument("--ssl4eo", metavar="DIR", help="an SSL4EO-S12 folder (s1/, s2a/)")
    cmd.add_argument(
        "--selection", default=None, help="GeoParquet of a sampling selection (with --items)"
    )
    cmd.add_argument("--patch-size", type=positive_int, default=120, help="pixels per side")
    cmd.add_argument("--model", default=None, help="variant whose patch must divide the size")
    cmd.add_argument(
        "--single-sensor", dest="require_pairs", action="store_false",
        help="also keep patches with only S1 or only S2 (flagged)",
    )  # fmt: skip
    cmd.add_argument("--val-fraction", type=float, default=0.05)
    cmd.add_argument("--seed", type=non_negative_int, default=0)
    cmd.add_argument("--scheduler", default=None, help="Dask scheduler address")
    cmd.add_argument("--workers", type=positive_int, default=2, help="LocalCluster workers")
    cmd.add_argument("--overwrite", action="store_true", help="replace a store of another job")
    cmd.add_argument("--no-progress", dest="progress", action="store_false")
    cmd.set_defaults(run=_run_patches)


def _items(paths: list[str]) -> list[Any]:
    import pystac

    if paths == [SAMPLE]:
        from xcsmoe.stac.sample_catalog import example_catalog

        return list(example_catalog().get_items(recursive=True))
    from xcsmoe.sampling.cli import read_items

    return [
        i if isinstance(i, pystac.Item) else pystac.Item.from_dict(i) for i in read_items(paths)
    ]


def _run_patches(args: argparse.Namespace) -> int:
    from xcsmoe.pretraining.patch_store import build_patch_store
    from xcsmoe.pretraining.readers import majortom_tiles, ssl4eo_tiles

    items = None
    if args.majortom:
        source: Any = majortom_tiles(args.majortom)
    elif args.ssl4eo:
        source = ssl4eo_tiles(args.ssl4eo)
    else:
        source = items = _items(args.items)
    if args.selection:
        import geopandas as gpd

        source = gpd.read_parquet(args.selection)
    report = build_patch_store(
        source, args.store, items=items, patch_size=args.patch_size, model=args.model,
        require_pairs=args.require_pairs, val_fraction=args.val_fraction, seed=args.seed,
        client=args.scheduler, n_workers=args.workers, overwrite=args.overwrite,
        progress=args.progress,
    )  # fmt: skip
    print(
        f"{report.store}: {report.patches} patches from {report.tiles} tiles; discarded "
        f"{report.discarded_partial} partial, {report.discarded_invalid} invalid, "
        f"{report.discarded_unpaired} unpaired; {report.regions_written} of "
        f"{report.regions} regions written"
    )
    return 0
