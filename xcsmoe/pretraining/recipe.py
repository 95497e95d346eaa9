"""Pretraining recipes: a YAML (or TOML) file → a frozen, validated :class:`PretrainRecipe`.

A recipe describes one run completely. Relative ``store`` / ``output`` / ``init_weights``
paths are resolved against the recipe file's folder. Example (``recipes/pretrain_sample.yaml``)::

    variant: csmoe_tiny
    store: ../runs/sample-patches.zarr
    output: ../runs/pretrain-sample
    max_steps: 150
    batch_size: 8
    lr: 1.0e-3
    warmup_steps: 15

:meth:`PretrainRecipe.fingerprint` holds every field that changes the training trajectory;
a run resumes only with the same fingerprint (unless forced).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from os import PathLike
from pathlib import Path
from typing import Any

import tomllib

from xcsmoe.errors import ConfigError, expected

MASK_ORDERS = ("spatial", "random")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
# fields that may change between a run and its resume without changing the trajectory
RESUMABLE_CHANGES = frozenset(
    {"output", "workers", "log_every", "checkpoint_every", "keep_checkpoints", "val_every"}
)

__all__ = ["MASK_ORDERS", "PretrainRecipe", "load_recipe"]


@dataclass(frozen=True)
class PretrainRecipe:
    """One pretraining run.

    Attributes:
        variant: model name (``xcsmoe.list_models()``).
        store: patch store folder (built with ``xcsmoe patches``). Recipes stay local:
            a recipe is saved with its run, so it carries no ``storage_options``
            (credentials). To train from a store at a URL, pass
            ``StoreLocation(url, storage_options)`` to
            :class:`~xcsmoe.pretraining.module.PatchDataModule` (or ``store_plan``).
        output: run folder (checkpoints, logs, loss curve, encoder checkpoint).
        max_steps / max_epochs: length of the run; give exactly one.
        batch_size: samples per step and device.
        lr, min_lr: peak and final learning rate (AdamW; cosine after linear warm-up).
        warmup_steps: linear warm-up from 0 to ``lr``.
        weight_decay, betas: AdamW (no decay on biases, norms, tokens, scales).
        grad_clip: gradient-norm clip (0 = off).
        seed: model init, sample order, flips and masks.
        checkpoint_every, keep_checkpoints: save every N steps (and at the end), keep k.
        val_every: validation every N steps on the held-out split (0 = never).
        log_every: log metrics every N steps.
        workers: DataLoader worker processes per device (spawned).
        flips: random horizontal / vertical flips.
        mask_order: ``"spatial"`` (kept tokens in row-major order) or ``"random"``.
        precision: ``"auto"`` = bf16 autocast (``"bf16-mixed"``) where the device
            computes bf16 natively (CUDA, CPUs with AVX512-BF16 or AMX), else ``"32-true"``.
        accelerator, devices, num_nodes, strategy: Lightning settings; ``"auto"`` devices
            and nodes follow ``torchrun`` / SLURM when launched by them.
        init_weights: start from these weights (an xcsmoe checkpoint of the same variant:
            a path, an https URL or a registered name).
    """

    variant: str
    store: Path
    output: Path
    batch_size: int
    lr: float
    max_steps: int | None = None
    max_epochs: int | None = None
    min_lr: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    val_every: int = 0
    log_every: int = 10
    workers: int = 2
    flips: bool = True
    mask_order: str = "spatial"
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int | str = "auto"
    strategy: str = "auto"
    init_weights: Path | str | None = None  # a path, or an https URL / registered name

    def __post_init__(self) -> None:
        from xcsmoe.model.hub import is_remote
        from xcsmoe.model.registry import list_models

        if self.variant not in list_models():
            raise ConfigError(expected("variant", f"one of {list_models()}", self.variant))
        from xcsmoe.storage import local_folder

        local = {
            "store": "recipes read a local patch store; PatchDataModule takes URLs",
            "output": "checkpoints and logs are written to a local folder",
            "init_weights": "a checkpoint file, an https URL or a registered name",
        }
        for name, why in local.items():
            value = getattr(self, name)
            if value is not None and not (name == "init_weights" and is_remote(value)):
                object.__setattr__(self, name, local_folder(value, argument=name, what=why))
        if (self.max_steps is None) == (self.max_epochs is None):
            raise ConfigError(
                expected(
                    "max_steps/max_epochs",
                    "exactly one of them",
                    (self.max_steps, self.max_epochs),
                )
            )
        for name in ("batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "val_every", "workers", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("max_steps", "max_epochs"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        for name in ("lr", "min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(expected(name, "a number >= 0", value))
        if self.lr <= 0 or self.min_lr > self.lr:
            raise ConfigError(
                expected("lr/min_lr", "0 <= min_lr <= lr, lr > 0", (self.lr, self.min_lr))
            )
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
            raise ConfigError(expected("betas", "two numbers in [0, 1)", self.betas))
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        if self.mask_order not in MASK_ORDERS:
            raise ConfigError(expected("mask_order", f"one of {MASK_ORDERS}", self.mask_order))
        if self.precision not in PRECISIONS:
            raise ConfigError(expected("precision", f"one of {PRECISIONS}", self.precision))
        for name in ("devices", "num_nodes"):
            value = getattr(self, name)
            if value != "auto":
                _check_int(name, value, minimum=1)
        if not isinstance(self.flips, bool):
            raise ConfigError(expected("flips", "true or false", self.flips))

    # ------------------------------------------------------------------ derived
    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (paths as strings)."""
        out = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()} | {
            "betas": list(self.betas)
        }

    def fingerprint(self) -> dict[str, Any]:
        """Every field that changes the trajectory (all but :data:`RESUMABLE_CHANGES`)."""
        out = self.to_dict()
        out["store"] = str(Path(out["store"]).resolve())
        return {k: v for k, v in sorted(out.items()) if k not in RESUMABLE_CHANGES}

    def digest(self) -> str:
        """Short hash of :meth:`fingerprint`."""
        text = json.dumps(self.fingerprint(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> PretrainRecipe:
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(expected(name, f"an int >= {minimum}", value))


def recipe_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(PretrainRecipe))


def load_recipe(path: str | PathLike[str], **overrides: Any) -> PretrainRecipe:
    """Parse a YAML/TOML recipe file (relative paths against its folder), then ``overrides``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(expected("recipe", "an existing .yaml/.yml/.toml file", str(path)))
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:
        raise ConfigError(f"recipe: cannot parse {path} ({error}).") from error
    if not isinstance(data, dict):
        raise ConfigError(expected("recipe", "a mapping of fields", type(data).__name__))
    data = data | overrides
    unknown = sorted(set(data) - set(recipe_fields()))
    if unknown:
        raise ConfigError(
            expected(
                "recipe fields",
                f"names among {', '.join(recipe_fields())}",
                unknown,
                f"Fix the field names in {path}.",
            )
        )
    missing = [f for f in ("variant", "store", "output", "batch_size", "lr") if f not in data]
    if missing:
        raise ConfigError(expected("recipe", f"the fields {missing}", sorted(data)))
    for name in ("lr", "min_lr", "weight_decay", "grad_clip"):
        if isinstance(data.get(name), str):  # YAML 1.1 reads 1e-3 as a string
            try:
                data[name] = float(data[name])
            except ValueError:
                raise ConfigError(expected(name, "a number", data[name])) from None
    from xcsmoe.model.hub import is_remote

    for name in ("store", "output", "init_weights"):
        if (
            data.get(name) is not None
            and not is_remote(data[name])
            and "://" not in str(data[name])
        ):
            value = Path(data[name]).expanduser()
            data[name] = value if value.is_absolute() else (path.parent / value).resolve()
    return PretrainRecipe(**data)
