"""``xcsmoe sample-job`` and ``xcsmoe embed``: the embedding commands."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(subparsers: Any) -> None:
    job = subparsers.add_parser(
        "sample-job",
        help="embed the bundled real S1+S2 sample catalog to Zarr, maps and GeoParquet",
    )
    job.add_argument("--out", default="sample-output", help="output directory")
    job.add_argument("--model", default="csmoe_p16")
    job.add_argument("--weights", default="random", help='checkpoint path, or "random"')
    job.add_argument("--window", type=int, default=112, help="window in pixels (multiple of P)")
    job.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    job.set_defaults(run=_run_sample_job)

    embed = subparsers.add_parser(
        "embed", help="search a STAC API or static catalog, load S1/S2 and embed to Zarr"
    )
    embed.add_argument("store", help="output Zarr store (resumed if it holds the same job)")
    embed.add_argument("--stac", required=True, help="STAC API URL or static catalog path")
    embed.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"))
    embed.add_argument("--datetime", default=None)
    embed.add_argument("--s2-collection", default=None)
    embed.add_argument("--s1-collection", default=None)
    embed.add_argument("--model", default=None, help="default csmoe_p{patch}")
    embed.add_argument("--patch", type=int, default=16)
    embed.add_argument("--window", type=int, default=None)
    embed.add_argument("--weights", required=True, help='checkpoint path, or "random"')
    embed.add_argument("--scheduler", default=None, help="Dask scheduler address")
    embed.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    embed.add_argument("--overwrite", action="store_true")
    embed.set_defaults(run=_run_embed)


def _run_sample_job(args: argparse.Namespace) -> int:
    from xcsmoe.embedding.sample_job import run_sample_job

    run_sample_job(
        args.out, model=args.model, weights=args.weights, window=args.window, n_workers=args.workers
    )
    return 0


def _run_embed(args: argparse.Namespace) -> int:
    from xcsmoe.embedding.batch import embed_to_zarr
    from xcsmoe.stac.load import load_cube
    from xcsmoe.stac.search import search

    query = {"bbox": args.bbox, "datetime": args.datetime}
    s2 = search(args.stac, collections=[args.s2_collection], **query) if args.s2_collection else []
    s1 = search(args.stac, collections=[args.s1_collection], **query) if args.s1_collection else []
    cube = load_cube(list(s2), list(s1), bbox=args.bbox)
    report = embed_to_zarr(
        cube, args.store, patch=args.patch, client=args.scheduler, n_workers=args.workers,
        model=args.model, weights=args.weights, window=args.window, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"{report.store}: {report.computed} regions computed, {report.skipped} resumed")
    return 0
