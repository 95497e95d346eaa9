"""``xcsmoe catalog ...`` subcommands: ``build``, ``serve``, ``search`` and ``providers``."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from xcsmoe.cli import percentage, port_number, positive_float, positive_int


def _build(args: argparse.Namespace) -> int:
    from xcsmoe.stac.sample_catalog import build_example_catalog, example_catalog

    if args.out is None:
        print(example_catalog().self_href)
    else:
        print(build_example_catalog(args.out, overwrite=args.force))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from xcsmoe.stac.sample_catalog import example_catalog
    from xcsmoe.stac.search import open_static
    from xcsmoe.stac.serve import serve_stac

    catalog = example_catalog() if args.catalog is None else open_static(args.catalog)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on kill too
    with serve_stac(catalog, host=args.host, port=args.port) as url:
        print(f"STAC API at {url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def _search(args: argparse.Namespace) -> int:
    from xcsmoe.stac.sample_catalog import example_catalog
    from xcsmoe.stac.search import search

    items = search(
        args.source or example_catalog(),
        collections=args.collections,
        bbox=args.bbox,
        datetime=args.datetime,
        max_cloud_cover=args.max_cloud_cover,
        max_items=args.max_items,
        timeout=args.timeout,
    )
    for item in items:
        print(f"{item.collection_id}\t{item.id}\t{item.datetime}")
    return 0


def _providers(_args: argparse.Namespace) -> int:
    from xcsmoe.stac.providers import list_providers, provider_config

    for name in list_providers():
        config = provider_config(name)
        for cid, c in config.collections.items():
            flag = "" if c.usable else "  (not usable: see notes)"
            print(f"{name}\t{cid}\t{c.sensor}\t{c.units}{flag}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``catalog build|serve|search|providers`` on the top-level parser."""
    catalog = subparsers.add_parser("catalog", help="sample STAC catalog, search, local STAC API")
    sub = catalog.add_subparsers(dest="catalog_command", required=True)

    build = sub.add_parser("build", help="write the offline S1/S2 sample catalog")
    build.add_argument("--out", default=None, help="folder (default: the user cache)")
    build.add_argument("--force", action="store_true", help="rebuild an existing catalog")
    build.set_defaults(run=_build)

    serve = sub.add_parser("serve", help="serve a static catalog as a STAC API (rustac)")
    serve.add_argument("--catalog", default=None, help="catalog path (default: the sample)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=None, help="default: a free port")
    serve.set_defaults(run=_serve)

    find = sub.add_parser("search", help="list matching items (id, collection, time)")
    find.add_argument("source", nargs="?", default=None,
                      help="API URL, provider name or catalog path (default: the sample)")  # fmt: skip
    find.add_argument("--collections", nargs="+", default=None)
    find.add_argument("--bbox", nargs=4, type=float, default=None, metavar=("W", "S", "E", "N"))
    find.add_argument("--datetime", default=None, help="e.g. 2017-06-01/2017-06-30")
    find.add_argument("--max-cloud-cover", type=percentage, default=None)
    find.add_argument("--max-items", type=positive_int, default=None)
    find.add_argument("--timeout", type=positive_float, default=10.0)
    find.set_defaults(run=_search)

    providers = sub.add_parser("providers", help="list provider collection configurations")
    providers.set_defaults(run=_providers)
