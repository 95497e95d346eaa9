"""``xcsmoe pretrain RECIPE [--resume] [--force]``: run a pretraining recipe.

Launch on several GPUs or machines with ``torchrun`` (or ``srun`` under SLURM), e.g.
``torchrun --nproc_per_node 4 -m xcsmoe.cli pretrain recipes/pretrain_sample.yaml``;
Lightning's DDP strategy picks the ranks up from the launcher's environment.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "pretrain", help="pretrain CSMoE on a patch store as a recipe file describes"
    )
    run.add_argument("recipe", help="recipe file (.yaml or .toml), see recipes/")
    run.add_argument(
        "--resume", action="store_true", help="continue the run in the recipe's output folder"
    )
    run.add_argument(
        "--force", action="store_true", help="resume although the recipe changed since the start"
    )
    run.add_argument("--no-progress", dest="progress", action="store_false")
    run.set_defaults(run=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    from xcsmoe.pretraining.train import pretrain

    result = pretrain(args.recipe, resume=args.resume, force=args.force, progress=args.progress)
    if result.encoder is not None:
        print(
            f"{result.output}: {result.steps} steps; encoder {result.encoder}; "
            f"checkpoint {result.checkpoint}; loss curve {result.loss_curve}"
        )
    return 0
