"""Command-line entry point: ``xcsmoe <command> ...``.

Each area of the package owns its subcommands in a ``cli`` module exposing
``add_commands(subparsers)``; this file only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMAND_MODULES = (
    "xcsmoe.model.cli",
    "xcsmoe.stac.cli",
    "xcsmoe.embedding.cli",
    "xcsmoe.sampling.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xcsmoe", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
