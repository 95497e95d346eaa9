"""The demo's settings: a frozen, validated :class:`DemoSettings` (the plan's first layer).

Every value is checked by :func:`DemoSettings.__post_init__` before a server, a cluster or
a file is touched. :meth:`DemoSettings.training` lists the values that determine the
pretrained weights; together with the patch store's content they key the cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from xcsmoe.errors import ConfigError, expected

__all__ = ["SAMPLE_PAIRS", "SAMPLE_TILE_PX", "DemoSettings"]

SAMPLE_PAIRS = 6  # co-registered S1+S2 pairs in xcsmoe.example_catalog()
SAMPLE_TILE_PX = 120  # side of each sample tile in 10 m pixels


@dataclass(frozen=True)
class DemoSettings:
    """What ``xcsmoe demo`` does.

    Attributes:
        model: a CSMoE variant (``csmoe_tiny`` keeps the demo to minutes on a CPU).
        patch_size: side of the training patches in 10 m pixels (a multiple of the
            model's patch); the 120 px sample tiles give ``(120 // patch_size)²`` each.
        steps: optimiser steps of the pretraining.
        batch_size: patches per step.
        lr, min_lr: AdamW peak and final learning rate (linear warm-up, cosine decay).
        warmup_steps: linear warm-up; ``None`` = a tenth of ``steps``.
        val_fraction: share of patches held out for the validation loss.
        seed: patch split, model initialisation, sample order, flips and masks.
        workers: processes of the Dask ``LocalCluster``.
        top_k: how many neighbours the pair retrieval looks at (besides top-1).
    """

    model: str = "csmoe_tiny"
    patch_size: int = 32
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int | None = None
    val_fraction: float = 0.05
    seed: int = 0
    workers: int = 2
    top_k: int = 5

    def __post_init__(self) -> None:
        from xcsmoe.model.registry import list_models, model_config
        from xcsmoe.pretraining.patch_plan import check_patch_size

        if self.model not in list_models() or not self.model.startswith("csmoe_"):
            names = [m for m in list_models() if m.startswith("csmoe_")]
            raise ConfigError(
                expected("model", f"a CSMoE variant among {names}", self.model,
                         "csmoe_tiny keeps the demo to a few minutes on a CPU.")
            )  # fmt: skip
        for name in ("patch_size", "steps", "batch_size", "workers", "top_k"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if self.warmup_steps is not None:
            _check_int("warmup_steps", self.warmup_steps, minimum=0)
            if self.warmup_steps > self.steps:
                raise ConfigError(
                    expected("warmup_steps", f"at most steps={self.steps}", self.warmup_steps)
                )
        check_patch_size(self.patch_size, self.model)
        if self.patch_size > SAMPLE_TILE_PX:
            raise ConfigError(
                expected("patch_size", f"at most the {SAMPLE_TILE_PX} px of a sample tile",
                         self.patch_size)
            )  # fmt: skip
        for name in ("lr", "min_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(expected(name, "a number >= 0", value))
        if not 0 < self.lr < 1 or self.min_lr > self.lr:
            raise ConfigError(
                expected("lr/min_lr", "0 < lr < 1 and min_lr <= lr", (self.lr, self.min_lr))
            )
        if not isinstance(self.val_fraction, int | float) or not 0 <= self.val_fraction < 0.5:
            raise ConfigError(expected("val_fraction", "a fraction in [0, 0.5)", self.val_fraction))
        if self.batch_size > self.patches // 2:
            raise ConfigError(
                expected("batch_size", f"at most half the {self.patches} patches that "
                         f"{self.patch_size} px patches give", self.batch_size,
                         "Pass a smaller batch_size or patch_size.")
            )  # fmt: skip
        if self.top_k >= self.patches:
            raise ConfigError(
                expected("top_k", f"fewer than the {self.patches} patches", self.top_k)
            )
        model_config(self.model)  # the variant's own checks

    # ------------------------------------------------------------------ derived
    @property
    def patches(self) -> int:
        """Patches the sample tiles give (every sample pixel is valid)."""
        return SAMPLE_PAIRS * (SAMPLE_TILE_PX // self.patch_size) ** 2

    @property
    def warmup(self) -> int:
        return self.steps // 10 if self.warmup_steps is None else self.warmup_steps

    def training(self) -> dict[str, Any]:
        """The values that determine the pretrained weights (the recipe, less paths)."""
        return {
            "variant": self.model,
            "patch_size": self.patch_size,
            "max_steps": self.steps,
            "batch_size": self.batch_size,
            "lr": float(self.lr),
            "min_lr": float(self.min_lr),
            "warmup_steps": self.warmup,
            "val_fraction": float(self.val_fraction),
            "seed": self.seed,
        }

    def replace(self, **changes: Any) -> DemoSettings:
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(expected(name, f"an integer >= {minimum}", value))
