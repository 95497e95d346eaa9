"""``xcsmoe demo``: the whole system on the bundled real sample (see :mod:`xcsmoe.demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from xcsmoe.cli import non_negative_int, positive_float, positive_int


def add_commands(subparsers: Any) -> None:
    from xcsmoe.demo.settings import DemoSettings

    defaults = DemoSettings.__dataclass_fields__
    demo = subparsers.add_parser(
        "demo",
        help="serve and search the real S1+S2 sample over STAC, build a patch store, "
        "pretrain csmoe_tiny briefly (cached), embed to Zarr, compare random and "
        "pretrained weights; writes maps, GeoParquet and a results table",
    )
    demo.add_argument("--out", default="demo-output", help="output folder (default: %(default)s)")
    demo.add_argument(
        "--figures", default=None, metavar="DIR",
        help="also copy the PNGs and results.md here (e.g. docs/images/demo)",
    )  # fmt: skip
    demo.add_argument("--model", default=defaults["model"].default, help="CSMoE variant")
    demo.add_argument(
        "--steps", type=positive_int, default=defaults["steps"].default,
        help="pretraining steps (default: %(default)s)",
    )  # fmt: skip
    demo.add_argument(
        "--batch-size", type=positive_int, default=defaults["batch_size"].default,
        help="patches per step (default: %(default)s)",
    )  # fmt: skip
    demo.add_argument(
        "--patch-size", type=positive_int, default=defaults["patch_size"].default,
        help="patch side in 10 m pixels (default: %(default)s)",
    )  # fmt: skip
    demo.add_argument("--lr", type=positive_float, default=defaults["lr"].default)
    demo.add_argument("--seed", type=non_negative_int, default=defaults["seed"].default)
    demo.add_argument(
        "--workers", type=positive_int, default=defaults["workers"].default,
        help="Dask LocalCluster processes (default: %(default)s)",
    )  # fmt: skip
    demo.add_argument(
        "--no-cache", dest="use_cache", action="store_false",
        help="pretrain again instead of reusing (or storing) the cached result",
    )  # fmt: skip
    demo.add_argument("--no-progress", dest="progress", action="store_false")
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from xcsmoe.demo.run import run_demo
    from xcsmoe.demo.settings import DemoSettings

    settings = DemoSettings(
        model=args.model, steps=args.steps, batch_size=args.batch_size,
        patch_size=args.patch_size, lr=args.lr, seed=args.seed, workers=args.workers,
    )  # fmt: skip
    run_demo(
        args.out, settings=settings, use_cache=args.use_cache, figures=args.figures,
        progress=args.progress,
    )  # fmt: skip
    return 0
