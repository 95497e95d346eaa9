"""``xcsmoe model ...`` subcommands: ``list`` and ``figures``."""

from __future__ import annotations

import argparse

PAPER_FIGURES: dict[str, tuple[float, float]] = {
    # name: (params in M, GFLOPs as the paper counts them = GMACs), S2 image, paper Table I/IV
    "csmoe_p14": (271.0, 13.40),
    "csmoe_p16": (271.0, 10.11),
    "csmoe_p28": (275.0, 3.67),
    "csmoe_p32": (277.0, 2.92),
    "csmae_p15": (87.0, 5.64),
}


def figures_table(names: list[str], sensor: str = "s2") -> str:
    """A text table of our figures beside the paper's (where it reports them)."""
    from xcsmoe.model.figures import model_figures

    head = (
        f"{'model':<11} {'img':>4} {'params M':>9} {'paper':>6} {'Δ%':>6} "
        f"{'GMACs':>7} {'paper':>6} {'Δ%':>6} {'C2C':>7} {'torch GFLOPs':>13}"
    )
    lines = [head, "-" * len(head)]
    for name in names:
        f = model_figures(name, sensor=sensor)
        paper = PAPER_FIGURES.get(name) if sensor == "s2" else None
        if paper:
            dp = 100 * (f.params_m / paper[0] - 1)
            dm = 100 * (f.gmacs / paper[1] - 1)
            ref = f"{paper[0]:>6.0f} {dp:>+6.2f} {f.gmacs:>7.3f} {paper[1]:>6.2f} {dm:>+6.2f}"
        else:
            ref = f"{'-':>6} {'-':>6} {f.gmacs:>7.3f} {'-':>6} {'-':>6}"
        lines.append(
            f"{name:<11} {f.img_size:>4} {f.params_m:>9.2f} {ref} {f.c2c:>7.2f} {f.torch_gflops:>13.3f}"
        )
    return "\n".join(lines)


def _figures(args: argparse.Namespace) -> int:
    from xcsmoe.model.registry import list_models

    names = args.names or [n for n in PAPER_FIGURES if n in list_models()]
    print(figures_table(names, sensor=args.sensor))
    return 0


def _list(_args: argparse.Namespace) -> int:
    from xcsmoe.model.registry import list_models

    print("\n".join(list_models()))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``model list`` and ``model figures`` on the top-level parser."""
    model = subparsers.add_parser("model", help="CSMoE model variants and their figures")
    sub = model.add_subparsers(dest="model_command", required=True)
    listing = sub.add_parser("list", help="registered model names")
    listing.set_defaults(run=_list)
    figures = sub.add_parser("figures", help="parameters, GMACs and C2C ratio per variant")
    figures.add_argument("names", nargs="*", help="registry names (default: the paper's five)")
    figures.add_argument("--sensor", choices=("s1", "s2"), default="s2")
    figures.set_defaults(run=_figures)
