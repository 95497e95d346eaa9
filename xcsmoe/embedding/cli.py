"""``xcsmoe embed``: the embedding command (the whole sample run is ``xcsmoe demo``)."""

from __future__ import annotations

import argparse
from typing import Any

from xcsmoe.cli import non_negative_int, pixel_pair, positive_int

SAMPLE = "sample"  # --stac name of the bundled sample catalog
WEIGHTS_HELP = 'checkpoint path, https URL (#sha256=HEX to verify), registered name, or "random"'


def add_commands(subparsers: Any) -> None:
    embed = subparsers.add_parser(
        "embed", help="search a STAC API or static catalog, load S1/S2 and embed to Zarr"
    )
    embed.add_argument("store", help="output Zarr store (resumed if it holds the same job)")
    embed.add_argument(
        "--stac",
        required=True,
        help=f'STAC API URL, provider name, static catalog path, or "{SAMPLE}" (the bundled '
        "sample catalog)",
    )
    embed.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"))
    embed.add_argument("--datetime", default=None)
    embed.add_argument(
        "--crs", default=None, help='output CRS of the cube ("EPSG:32633", or "utm")'
    )
    embed.add_argument(
        "--s2-collection", default=None, help="default: the provider's S2 collection"
    )
    embed.add_argument(
        "--s1-collection", default=None, help="default: the provider's S1 collection"
    )
    embed.add_argument("--model", default=None, help="default csmoe_p{patch}")
    embed.add_argument("--patch", type=positive_int, default=16)
    embed.add_argument("--window", type=positive_int, default=None, help="pixels, multiple of P")
    embed.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    embed.add_argument("--seed", type=non_negative_int, default=0, help='seed of "random"')
    embed.add_argument("--sensors", choices=("auto", "s1", "s2", "s1+s2"), default="auto")
    embed.add_argument("--edge", choices=("pad", "drop"), default="pad")
    embed.add_argument(
        "--chunks", type=pixel_pair, default=None, help="pixels per dask chunk: N or NY,NX"
    )
    embed.add_argument(
        "--batch-size", type=positive_int, default=None, help="windows per pass (CPU 8, GPU 64)"
    )
    embed.add_argument("--device", default="auto", help='"auto", "cpu", "cuda:0", ...')
    embed.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="compute precision; auto: bf16 on CUDA and CPUs with native bf16, else float32",
    )
    embed.add_argument(
        "--compile",
        action="store_true",
        help="run the encoder through torch.compile (compiled once per worker)",
    )
    embed.add_argument(
        "--normalise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="standardise raw values first (default: yes)",
    )
    embed.add_argument("--output", nargs="+", choices=("cls", "tokens"), default=None)
    embed.add_argument("--scheduler", default=None, help="Dask scheduler address")
    embed.add_argument("--workers", type=positive_int, default=2, help="LocalCluster workers")
    embed.add_argument("--overwrite", action="store_true", help="replace a store of another job")
    embed.add_argument("--no-progress", dest="progress", action="store_false")
    embed.set_defaults(run=_run_embed)


def default_collections(stac: str) -> tuple[str | None, str | None]:
    """``(s2, s1)`` collection ids that the provider configuration behind ``stac`` names.

    ``stac`` may be a provider name, a provider's API URL, ``"sample"`` or a static
    catalog (its collections are looked up in every provider configuration).
    """
    from xcsmoe.stac.providers import list_providers, provider_config

    configs = [provider_config(name) for name in list_providers()]
    if stac in list_providers():
        chosen = [provider_config(stac)]
    elif stac.startswith(("http://", "https://")):
        chosen = [c for c in configs if c.url and c.url.rstrip("/") == stac.rstrip("/")]
    else:
        chosen = [_static_provider(stac, configs)]
    picked: dict[str, str | None] = {"s2": None, "s1": None}
    for config in (c for c in chosen if c is not None):
        for cid, collection in config.collections.items():
            if collection.usable and picked.get(collection.sensor, "") is None:
                picked[collection.sensor] = cid
    return picked["s2"], picked["s1"]


def _static_provider(path: str, configs: list[Any]) -> Any:
    from xcsmoe.stac.search import open_static

    ids = {child.id for child in open_static(path).get_children()}
    matching = [c for c in configs if ids & set(c.collections)]
    return matching[0] if matching else None


def _source(stac: str) -> Any:
    if stac == SAMPLE:
        from xcsmoe.stac.sample_catalog import example_catalog

        return example_catalog()
    return stac


def _run_embed(args: argparse.Namespace) -> int:
    from xcsmoe.cluster import check_cluster_args
    from xcsmoe.embedding.api import OUTPUTS
    from xcsmoe.embedding.batch import embed_to_zarr
    from xcsmoe.errors import ConfigError, expected
    from xcsmoe.stac.load import load_cube
    from xcsmoe.stac.search import search

    check_cluster_args(args.scheduler, args.workers)
    s2_default, s1_default = default_collections(args.stac)
    s2_id = args.s2_collection or (s2_default if args.sensors in ("auto", "s2", "s1+s2") else None)
    s1_id = args.s1_collection or (s1_default if args.sensors in ("auto", "s1", "s1+s2") else None)
    if not (s2_id or s1_id):
        raise ConfigError(
            expected(
                "stac",
                "a source whose provider configuration names S1/S2 collections",
                args.stac,
                "Pass --s2-collection and/or --s1-collection.",
            )
        )
    source = _source(args.stac)
    query = {"bbox": args.bbox, "datetime": args.datetime}
    s2 = list(search(source, collections=[s2_id], **query)) if s2_id else []
    s1 = list(search(source, collections=[s1_id], **query)) if s1_id else []
    cube = load_cube(s2, s1, bbox=args.bbox, crs=args.crs)
    report = embed_to_zarr(
        cube, args.store, patch=args.patch, client=args.scheduler, n_workers=args.workers,
        output=tuple(args.output or OUTPUTS), overwrite=args.overwrite, progress=args.progress,
        model=args.model, weights=args.weights, window=args.window, seed=args.seed,
        sensors=args.sensors, edge=args.edge, chunks=args.chunks, batch_size=args.batch_size,
        device=args.device, dtype=args.dtype, compile=args.compile, normalise=args.normalise,
    )  # fmt: skip
    print(f"{report.store}: {report.computed} regions computed, {report.skipped} resumed")
    return 0
