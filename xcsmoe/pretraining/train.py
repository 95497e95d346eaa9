"""Run a pretraining recipe with Lightning: :func:`pretrain`.

Plan first (recipe, store, splits, output folder, resume point: all checked before the
trainer starts), then the Lightning ``Trainer`` (DDP when several devices or nodes, bf16
autocast on GPU, fp32 on CPU), then the results of rank 0.

Run folder (``recipe.output``)::

    recipe.json              the recipe the run started with (resume compares against it)
    checkpoints/stepNNNNNNNN.ckpt   every ``checkpoint_every`` steps and at the end, last k
    logs/csv/metrics.csv     every logged value (TensorBoard events in logs/tb when installed)
    loss_curve.png           training (and validation) loss per step
    encoder.safetensors      the encoder for create_model(weights=...) / embed(weights=...)

Checkpoints are written to a temporary file and renamed into place, so a kill or a full
disk never leaves a truncated checkpoint; older ones are deleted only after a new one is
complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from xcsmoe.errors import CheckpointError, ConfigError, expected
from xcsmoe.model.checkpoint import read_checkpoint, save_checkpoint
from xcsmoe.model.config import CSMoEConfig
from xcsmoe.model.registry import model_config
from xcsmoe.pretraining.module import (
    CHECKPOINT_KEY,
    PatchDataModule,
    PretrainModule,
    check_checkpoint_config,
)
from xcsmoe.pretraining.recipe import RESUMABLE_CHANGES, PretrainRecipe, load_recipe

CHECKPOINT_DIR = "checkpoints"
RECIPE_FILE = "recipe.json"
ENCODER_FILE = "encoder.safetensors"
CURVE_FILE = "loss_curve.png"
_STEP_FILE = re.compile(r"^step(\d+)\.ckpt$")

__all__ = ["PretrainResult", "latest_checkpoint", "pretrain"]


@dataclass(frozen=True)
class PretrainResult:
    """What a finished run left in its folder."""

    output: Path
    steps: int
    checkpoint: Path | None
    encoder: Path | None
    loss_curve: Path | None
    metrics: Path | None


# ------------------------------------------------------------------------ checkpoints


class _WriteErrorRecorder:
    """A binary file for ``torch.save`` that keeps the ``OSError`` a write met: torch
    reports a failed write (full disk, file size limit) as an opaque ``RuntimeError``."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.error = handle, None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary sibling, fsync, then rename into place.

    A full disk or a read-only folder raises :class:`CheckpointError` and removes the
    temporary file; earlier checkpoints are untouched."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        recorder = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                recorder = _WriteErrorRecorder(handle)
                torch.save(checkpoint, recorder)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as error:
            cause = error if isinstance(error, OSError) else getattr(recorder, "error", None)
            with contextlib.suppress(OSError):  # a read-only folder refuses this too
                tmp.unlink(missing_ok=True)
            if cause is None:
                raise
            raise CheckpointError(
                expected(
                    "output",
                    "a checkpoint folder with room that xcsmoe can write",
                    f"{cause.strerror or cause} writing {path}",
                    "Free disk space or fix the folder's permissions, then resume with "
                    "--resume (resume=True); the earlier checkpoints are intact.",
                )
            ) from cause


class StepCheckpoint(Callback):
    """Save ``stepNNNNNNNN.ckpt`` every ``every`` steps and at the end; keep the last ``keep``."""

    def __init__(self, folder: Path, *, every: int, keep: int) -> None:
        self.folder, self.every, self.keep = folder, every, keep
        self.last_saved = -1

    def _save(self, trainer: L.Trainer) -> None:
        step = trainer.global_step
        if step == self.last_saved:
            return
        trainer.save_checkpoint(self.folder / f"step{step:08d}.ckpt")
        self.last_saved = step
        if trainer.is_global_zero:
            for old in checkpoints(self.folder)[: -self.keep]:
                old.unlink(missing_ok=True)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)


class RecordRecipe(Callback):
    """Rank 0 writes ``recipe.json`` once every rank is inside ``fit``.

    Every rank checks the output folder first (:func:`resume_point`); a file written
    before a slower rank had looked would be taken for a previous run. The barrier in
    ``setup`` orders the write after all checks.
    """

    def __init__(self, path: Path, fingerprint: dict[str, Any]) -> None:
        self.path, self.fingerprint = path, fingerprint

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        trainer.strategy.barrier("xcsmoe-record-recipe")
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(self.fingerprint, indent=1))


def checkpoints(folder: Path) -> list[Path]:
    """Step checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output: str | PathLike[str]) -> Path | None:
    """The newest step checkpoint of the run in ``output``, if any."""
    found = checkpoints(Path(output) / CHECKPOINT_DIR)
    return found[-1] if found else None


def read_run_checkpoint(path: Path) -> dict[str, Any]:
    """The ``xcsmoe`` entry of a training checkpoint (config, recipe digest)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            expected("checkpoint", "a readable training checkpoint", f"{path} ({error})")
        ) from error
    info = state.get(CHECKPOINT_KEY) if isinstance(state, dict) else None
    if not isinstance(info, dict) or "config" not in info:
        raise CheckpointError(
            expected("checkpoint", "a checkpoint written by xcsmoe pretrain", str(path))
        )
    return info


# ------------------------------------------------------------------------------ plan


def check_output(output: Path) -> None:
    """Create ``output`` and prove it writable, or raise :class:`ConfigError`."""
    probe = output / f".write-test-{uuid.uuid4().hex[:8]}"
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            expected(
                "output",
                "a writable folder",
                f"{output} ({error.strerror or error})",
                "Choose another output folder or fix its permissions / free disk space.",
            )
        ) from error


def resume_point(recipe: PretrainRecipe, *, resume: bool, force: bool) -> Path | None:
    """The checkpoint to resume from (or None); refuses what would lose or mix runs."""
    saved_recipe = recipe.output / RECIPE_FILE
    latest = latest_checkpoint(recipe.output)
    if not resume:
        if latest is not None or saved_recipe.exists():
            raise ConfigError(
                expected(
                    "output",
                    "a folder without a previous run",
                    str(recipe.output),
                    "Pass --resume (resume=True) to continue that run, or choose another output.",
                )
            )
        return None
    if saved_recipe.exists():
        before = json.loads(saved_recipe.read_text())
        now = recipe.fingerprint()
        keys = sorted((set(before) | set(now)) - RESUMABLE_CHANGES)
        changed = [
            f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in keys if before.get(k) != now.get(k)
        ]
        if changed and not force:
            raise ConfigError(
                expected(
                    "recipe",
                    f"the recipe the run in {recipe.output} started with",
                    "; ".join(changed),
                    "Restore those fields, or pass --force (force=True) to resume anyway.",
                )
            )
    if latest is not None:
        info = read_run_checkpoint(latest)
        check_checkpoint_config(info["config"], model_config(recipe.variant), str(latest))
    return latest


def _distributed(recipe: PretrainRecipe) -> dict[str, Any]:
    """Trainer device settings; ``auto`` follows torchrun (LOCAL_WORLD_SIZE) or SLURM."""
    env = os.environ
    devices: Any = recipe.devices
    nodes: Any = recipe.num_nodes
    if devices == "auto":
        local = env.get("LOCAL_WORLD_SIZE") or env.get("SLURM_NTASKS_PER_NODE")
        devices = int(local) if local and local.isdigit() else "auto"
    if nodes == "auto":
        world, local = env.get("WORLD_SIZE"), env.get("LOCAL_WORLD_SIZE")
        if world and local:
            nodes = max(1, int(world) // int(local))
        else:
            nodes = int(env.get("SLURM_NNODES", "1") or 1)
    strategy = recipe.strategy
    if strategy == "auto" and (nodes > 1 or (isinstance(devices, int) and devices > 1)):
        strategy = "ddp"
    accelerator = recipe.accelerator
    precision = recipe.precision
    if precision == "auto":
        precision = auto_precision(accelerator)
    return {
        "accelerator": accelerator,
        "devices": devices,
        "num_nodes": nodes,
        "strategy": strategy,
        "precision": precision,
    }


def auto_precision(accelerator: str) -> str:
    """Lightning precision of ``precision: auto``: ``"bf16-mixed"`` where the accelerator
    computes bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX), else ``"32-true"``."""
    from xcsmoe.embedding.precision import native_bf16

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "bf16-mixed" if native_bf16(torch.device("cuda")) else "32-true"
    if accelerator in ("cpu", "auto"):
        return "bf16-mixed" if native_bf16(torch.device("cpu")) else "32-true"
    return "32-true"


def _loggers(output: Path) -> list[Any]:
    from lightning.pytorch.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(output, name="logs", version="csv")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(output, name="logs", version="tb"))
    except (ImportError, ModuleNotFoundError):
        pass
    return loggers


def _init_weights(module: PretrainModule, path: Path, config: CSMoEConfig) -> None:
    from xcsmoe.model.checkpoint import load_state

    state, saved = read_checkpoint(path)
    if saved is not None:
        check_checkpoint_config(saved.to_dict(), config, str(path))
    load_state(module.model, state, strict=False, source=str(path))


# ------------------------------------------------------------------------------ run


def pretrain(
    recipe: PretrainRecipe | str | PathLike[str],
    *,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> PretrainResult:
    """Pretrain as ``recipe`` (a :class:`PretrainRecipe` or a recipe file) says.

    ``resume``: continue the run in ``recipe.output`` from its newest checkpoint (same
    trajectory as if never stopped); a changed recipe is refused unless ``force``.
    Without ``resume`` the output folder must not hold a run. ``callbacks``: extra
    Lightning callbacks.
    """
    if not isinstance(recipe, PretrainRecipe):
        recipe = load_recipe(recipe)
    config = model_config(recipe.variant)
    data = PatchDataModule(
        recipe.store,
        config,
        batch_size=recipe.batch_size,
        workers=recipe.workers,
        seed=recipe.seed,
        flips=recipe.flips,
        validation=recipe.val_every > 0,
    )
    data.force = force
    from xcsmoe.model.hub import weights_path

    init = None if recipe.init_weights is None else weights_path(recipe.init_weights)
    if init is not None and not init.is_file():  # a URL or name was downloaded just now
        raise ConfigError(
            expected("init_weights", "an existing checkpoint file", str(recipe.init_weights))
        )
    check_output(recipe.output)
    ckpt = resume_point(recipe, resume=resume, force=force)
    devices = _distributed(recipe)
    checkpointer = StepCheckpoint(
        recipe.output / CHECKPOINT_DIR, every=recipe.checkpoint_every, keep=recipe.keep_checkpoints
    )
    run_callbacks = [checkpointer, *callbacks]
    if ckpt is None or force:  # a new run, or a forced resume: the recipe it continues with
        run_callbacks.append(RecordRecipe(recipe.output / RECIPE_FILE, recipe.fingerprint()))
    trainer = L.Trainer(
        **devices,
        max_steps=recipe.max_steps or -1,
        max_epochs=recipe.max_epochs,
        callbacks=run_callbacks,
        logger=_loggers(recipe.output),
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        gradient_clip_val=recipe.grad_clip or None,
        log_every_n_steps=recipe.log_every,
        val_check_interval=recipe.val_every or None,
        check_val_every_n_epoch=None if recipe.val_every else 1,
        limit_val_batches=None if recipe.val_every else 0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=recipe.output,
    )
    per_epoch = data.batches_per_epoch(trainer.world_size)
    if per_epoch < 1:
        raise ConfigError(
            expected(
                "batch_size",
                f"<= the {data.train_plan.num_samples // trainer.world_size} training patches per device",
                recipe.batch_size,
            )
        )
    total = recipe.max_steps or recipe.max_epochs * per_epoch
    module = PretrainModule(
        recipe.variant,
        lr=recipe.lr,
        min_lr=recipe.min_lr,
        warmup_steps=recipe.warmup_steps,
        total_steps=total,
        weight_decay=recipe.weight_decay,
        betas=recipe.betas,
        seed=recipe.seed,
        mask_order=recipe.mask_order,
        run_info={"recipe_digest": recipe.digest()},
    )
    if init is not None and ckpt is None:
        _init_weights(module, init, config)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt, weights_only=True)
    return _finish(trainer, module, recipe)


def _finish(trainer: L.Trainer, module: PretrainModule, recipe: PretrainRecipe) -> PretrainResult:
    """Rank 0: the encoder checkpoint and the loss-curve PNG."""
    output = recipe.output
    metrics = output / "logs" / "csv" / "metrics.csv"
    encoder = curve = None
    if trainer.is_global_zero:
        encoder = output / ENCODER_FILE
        tmp = output / f".{ENCODER_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            save_checkpoint(module.model.backbone, tmp)
            os.replace(tmp, encoder)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(
                f"encoder: cannot write {encoder} ({error}); the training checkpoints are intact."
            ) from error
        if metrics.is_file():
            curve = plot_loss_curve(metrics, output / CURVE_FILE, title=recipe.variant)
    return PretrainResult(
        output=output,
        steps=trainer.global_step,
        checkpoint=latest_checkpoint(output),
        encoder=encoder,
        loss_curve=curve,
        metrics=metrics if metrics.is_file() else None,
    )


def read_losses(metrics: Path, column: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``column`` in a Lightning ``metrics.csv``; for a step logged
    twice (a run killed after its last checkpoint, then resumed) the later row wins."""
    import csv

    values: dict[int, float] = {}
    with open(metrics, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get(column) not in (None, ""):
                values[int(row["step"])] = float(row[column])
    steps = sorted(values)
    return steps, [values[s] for s in steps]


def plot_loss_curve(metrics: Path, path: Path, *, title: str = "") -> Path:
    """PNG of the training total loss (and its terms) and the validation loss per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for column, style in (
        ("train/total", {"color": "black", "lw": 1.5}),
        ("train/uni", {"lw": 0.8}),
        ("train/cross", {"lw": 0.8}),
        ("train/mim", {"lw": 0.8}),
        ("val/total", {"color": "red", "marker": "o", "lw": 1.5}),
    ):
        steps, values = read_losses(metrics, column)
        if steps:
            ax.plot(steps, values, label=column, **style)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"CSMoE pretraining {title}".strip())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
