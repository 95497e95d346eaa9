"""Command-line entry point: ``xcsmoe [--debug] <command> ...``.

Each area of the package owns its subcommands in a ``cli`` module exposing
``add_commands(subparsers)``; this file assembles them and owns what every command
shares: argument types that refuse impossible values, and plain user errors. A user
error (a bad argument, or any :class:`~xcsmoe.errors.XcsmoeError`) prints one line
``xcsmoe: error: ...`` naming the argument by its flag and exits with status 2; the
traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from xcsmoe.errors import XcsmoeError

__all__ = [
    "build_parser",
    "cli_message",
    "main",
    "non_negative_int",
    "percentage",
    "pixel_pair",
    "port_number",
    "positive_float",
    "positive_int",
]

_COMMAND_MODULES = (
    "xcsmoe.model.cli",
    "xcsmoe.stac.cli",
    "xcsmoe.embedding.cli",
    "xcsmoe.sampling.cli",
    "xcsmoe.pretraining.train_cli",
    "xcsmoe.pretraining.cli",
    "xcsmoe.evaluation.cli",
    "xcsmoe.demo.cli",
)

# Python keyword of the library -> destination of the flag that sets it on the CLI.
_PYTHON_NAMES = {"n_workers": "workers", "client": "scheduler", "source": "stac"}
_FLAGS = "_cli_flags"


class UsageError(Exception):
    """A command line argparse could not accept (caught by :func:`main`)."""


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line, raised instead of printed."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ------------------------------------------------------------------ argument types


def _number(kind: Callable[[str], Any], name: str, ok: Callable[[Any], bool]) -> Callable:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}")
        return value

    parse.__name__ = name.replace(" ", "_")
    return parse


positive_int = _number(int, "a positive integer", lambda v: v >= 1)
non_negative_int = _number(int, "an integer >= 0", lambda v: v >= 0)
positive_float = _number(float, "a positive number", lambda v: 0 < v < float("inf"))
percentage = _number(float, "a percentage in [0, 100]", lambda v: 0 <= v <= 100)
port_number = _number(int, "a TCP port in [1, 65535]", lambda v: 1 <= v <= 65535)


def pixel_pair(text: str) -> int | tuple[int, int]:
    """``"512"`` → 512, ``"512,256"`` → (512, 256): positive pixel counts (y, x)."""
    parts = text.split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values, default=0) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive pixel count N or NY,NX, got {text!r}"
        )
    return values[0] if len(values) == 1 else values


# ------------------------------------------------------------------ messages


def cli_message(message: str, flags: Mapping[str, str]) -> str:
    """One-line ``message`` with the library's keywords replaced by the command's flags.

    ``flags`` maps an argparse destination to its option (``{"overwrite":
    "--overwrite"}``). ``overwrite=True`` → ``--overwrite``, ``normalise=False`` →
    ``--no-normalise``, ``n_workers=1`` → ``--workers 1``, and a leading ``window:`` →
    ``--window:``.
    """
    message = " ".join(str(message).split())

    def flag(name: str) -> str | None:
        return flags.get(_PYTHON_NAMES.get(name, name)) or flags.get(name)

    def keyword(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        option = flag(name)
        if option is None:
            return match.group(0)
        if value == "True":
            return option
        if value == "False":
            negative = flags.get(f"no-{option.removeprefix('--')}")
            return negative or match.group(0)
        return f"{option} {value.strip(chr(34) + chr(39))}"

    message = re.sub(
        r"\b([a-z][a-z0-9_]*)=(True|False|\"[^\"]*\"|'[^']*'|[\w.:/+-]+)", keyword, message
    )
    lead = re.match(r"([a-z][a-z0-9_]*):", message)
    if lead and flag(lead.group(1)) and flag(lead.group(1)).startswith("--"):
        message = f"{flag(lead.group(1))}:{message[lead.end() :]}"
    return message


def _flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    flags: dict[str, str] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs:
            flags[action.dest] = longs[0]
            for option in longs[1:]:
                if option.startswith("--no-"):
                    flags[f"no-{longs[0].removeprefix('--')}"] = option
        elif not action.option_strings and action.dest not in ("help", argparse.SUPPRESS):
            flags[action.dest] = action.dest.upper()
    return flags


def _annotate(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command its flag table, for :func:`cli_message`."""
    parser.set_defaults(**{_FLAGS: _flags_of(parser)})
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _annotate(sub)


# ------------------------------------------------------------------ entry point


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="xcsmoe", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        module.add_commands(subparsers)
    _annotate(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``xcsmoe`` with ``argv``; returns the exit status (2 on a user error)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        return _fail(str(error))
    try:
        return int(args.run(args) or 0)
    except XcsmoeError as error:
        if args.debug:
            raise
        return _fail(cli_message(str(error), getattr(args, _FLAGS, {})))
    except KeyboardInterrupt:
        print("xcsmoe: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    print(f"xcsmoe: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
