"""``xcsmoe evaluate RECIPE``: probes and retrievals of a recipe, as a results table."""

from __future__ import annotations

from typing import Any


def add_commands(subparsers: Any) -> None:
    command = subparsers.add_parser(
        "evaluate",
        help="encode a labelled dataset once per model, run the recipe's probes and "
        "retrievals, print and write the results table (CSV/JSON)",
    )
    command.add_argument(
        "recipe", help="evaluation recipe (YAML), e.g. recipes/evaluate_sample.yaml"
    )
    command.add_argument(
        "--out", default=None, help="results folder (default: the recipe's output)"
    )
    command.add_argument("--no-progress", action="store_true", help="hide progress bars")
    command.set_defaults(run=_run)


def _run(args: Any) -> int:
    import dataclasses
    from pathlib import Path

    from xcsmoe.evaluation.recipe import load_recipe
    from xcsmoe.evaluation.report import format_results
    from xcsmoe.evaluation.run import evaluate

    recipe = load_recipe(args.recipe)
    if args.out:
        recipe = dataclasses.replace(recipe, output=Path(args.out).resolve())
    table = evaluate(recipe, progress=not args.no_progress)
    print(format_results(table))
    print(f"written: {recipe.output / 'results.csv'}, {recipe.output / 'results.json'}")
    return 0
