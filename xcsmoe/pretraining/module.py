"""Lightning wrappers: :class:`PretrainModule` around ``CSMoEForPretraining`` and
:class:`PatchDataModule` around a patch store.

Every random choice of a step is a function of ``(seed, global_step, rank)`` (masks) or of
``(seed, epoch)`` (sample order and flips, see :class:`~xcsmoe.pretraining.loader.PatchSampler`),
so a resumed run repeats the uninterrupted one exactly. Checkpoints additionally carry the
global RNG states (torch, CUDA, numpy, Python), restored on load.
"""

from __future__ import annotations

import math
import random
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from xcsmoe.errors import CheckpointError, InputError, expected
from xcsmoe.model.config import CSMoEConfig
from xcsmoe.model.pretrain import CSMoEForPretraining
from xcsmoe.model.registry import model_config
from xcsmoe.pretraining.loader import PatchLoader, StorePlan, patch_loader, store_plan

CHECKPOINT_KEY = "xcsmoe"

__all__ = ["PatchDataModule", "PretrainModule", "check_checkpoint_config", "warmup_cosine"]


def warmup_cosine(step: int, *, warmup: int, total: int, floor: float) -> float:
    """LR factor: linear ``(step + 1) / warmup`` for ``step < warmup``, then cosine from 1
    to ``floor`` (= min_lr / lr) at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def layer_names(config: CSMoEConfig) -> list[str]:
    """Names of the Soft MoE calls in :attr:`PretrainOutput.routing` order."""
    if not config.is_moe:
        return []
    names = []
    for sensor in ("s1", "s2"):
        names += [f"{sensor}_specific{i}" for i in range(config.depth_specific)]
        names += [f"{sensor}_shared{i}" for i in range(config.depth_shared)]
    return names


def check_checkpoint_config(saved: dict[str, Any], config: CSMoEConfig, source: str) -> None:
    """Raise :class:`CheckpointError` unless a checkpoint's config is ``config`` (variant,
    band order and every architecture field)."""
    if saved == config.to_dict():
        return
    got = CSMoEConfig.from_dict(saved)
    differing = [
        f"{k}: checkpoint {v!r} vs recipe {config.to_dict()[k]!r}"
        for k, v in got.to_dict().items()
        if config.to_dict()[k] != v
    ]
    raise CheckpointError(
        f"checkpoint: {source} was trained as {got.name} and does not match {config.name} "
        f"({'; '.join(differing)}). Use the recipe's variant and band order the checkpoint "
        "was trained with, or start a new run in another output folder."
    )


class PretrainModule(L.LightningModule):
    """CSMoE masked-autoencoder pretraining of variant ``variant``.

    Logs ``train/<term>`` for every loss term (``uni_s1``, ``uni_s2``, ``cross_s1``, ...,
    ``total``), ``moe/<layer>`` the entropy (nats) of the mean expert usage of each Soft
    MoE call, ``lr``, and ``val/<term>`` on the held-out split.
    """

    def __init__(
        self,
        variant: str,
        *,
        lr: float = 1.5e-4,
        min_lr: float = 0.0,
        warmup_steps: int = 0,
        total_steps: int = 1,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        seed: int = 0,
        mask_order: str = "spatial",
        run_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["run_info"])
        config = model_config(variant)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = CSMoEForPretraining(config, spatial_order=mask_order == "spatial")
        self.layers = layer_names(config)
        self.run_info = dict(run_info or {})

    @property
    def config(self) -> CSMoEConfig:
        return self.model.config

    # ------------------------------------------------------------------ steps
    def mask_generator(self, step: int, *, validation: bool = False) -> torch.Generator:
        """CPU generator of the masks of ``step`` on this rank."""
        seed = self.hparams["seed"]
        words = [seed, step, self.global_rank, int(validation)]
        state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> Any:
        return self.model(
            batch["s1"],
            batch["s2"],
            generator=generator,
            has_s1=batch["has_s1"],
            has_s2=batch["has_s2"],
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self._forward(batch, self.mask_generator(self.global_step))
        size = batch["s1"].shape[0]
        for name, value in out.losses.items():
            self.log(f"train/{name}", value.detach(), batch_size=size, prog_bar=name == "total")
        for name, route in zip(self.layers, out.routing, strict=True):
            usage = route.expert_share.detach().float().mean(dim=(0, 1))
            entropy = -(usage * usage.clamp_min(1e-12).log()).sum()
            self.log(f"moe/{name}", entropy, batch_size=size)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return out.loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self._forward(batch, self.mask_generator(batch_idx, validation=True))
        size = batch["s1"].shape[0]
        for name, value in out.losses.items():
            self.log(
                f"val/{name}", value, batch_size=size, sync_dist=True, prog_bar=name == "total"
            )

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (no decay on biases, norms, tokens, scales) + per-step warm-up/cosine."""
        hp = self.hparams
        decay, plain = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim <= 1 or name.endswith(("cls_token", "cls_token_s2"))
            (plain if no_decay else decay).append(param)
        optimiser = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": hp["weight_decay"]},
                {"params": plain, "weight_decay": 0.0},
            ],
            lr=hp["lr"],
            betas=tuple(hp["betas"]),
        )
        factor = partial(
            warmup_cosine,
            warmup=hp["warmup_steps"],
            total=hp["total_steps"],
            floor=hp["min_lr"] / hp["lr"],
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
        return {
            "optimizer": optimiser,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "config": self.config.to_dict(),
            "rng": rng_states(),
            **self.run_info,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get(CHECKPOINT_KEY)
        if not isinstance(info, dict) or "config" not in info:
            raise CheckpointError(
                expected("checkpoint", "a checkpoint written by xcsmoe pretrain", "no xcsmoe entry")
            )
        check_checkpoint_config(info["config"], self.config, "the checkpoint")
        set_rng_states(info["rng"])


def rng_states() -> dict[str, Any]:
    """Torch (CPU and CUDA), numpy and Python RNG states as plain tensors/ints."""
    _kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "python": [version, list(state), gauss_next],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss_next = states["python"]
    random.setstate((version, tuple(state), gauss_next))


class PatchDataModule(L.LightningDataModule):
    """Train / validation loaders over a patch store for model ``config``.

    The store and its splits are checked on construction (before any worker starts).
    Its ``state_dict`` — saved in every checkpoint — is the loader position: the epoch
    and the batches this rank has consumed in it, derived from the global step (every
    batch is full, so one step is one batch).
    """

    def __init__(
        self,
        store: Any,
        config: CSMoEConfig,
        *,
        batch_size: int,
        workers: int = 0,
        seed: int = 0,
        flips: bool = True,
        validation: bool = True,
    ) -> None:
        super().__init__()
        self.batch_size, self.workers, self.seed, self.flips = batch_size, workers, seed, flips
        self.train_plan: StorePlan = store_plan(store, config, split="train")
        self.val_plan: StorePlan | None = None
        if validation:
            self.val_plan = store_plan(store, config, split="validation")
        self._resume: tuple[int, int] | None = None
        self._train: PatchLoader | None = None
        self.force = False  # resume although batch size, devices or store changed

    def _ranks(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Full batches per rank and epoch."""
        per_rank = -(-self.train_plan.num_samples // world_size)
        return per_rank // self.batch_size

    def train_dataloader(self) -> PatchLoader:
        rank, world = self._ranks()
        loader = patch_loader(
            self.train_plan,
            batch_size=self.batch_size,
            workers=self.workers,
            seed=self.seed,
            flips=self.flips,
            rank=rank,
            world_size=world,
        )
        if self._resume is not None:
            loader.resume_at(*self._resume)
        self._train = loader
        return loader

    def val_dataloader(self) -> PatchLoader | list:
        if self.val_plan is None:
            return []
        rank, world = self._ranks()
        return patch_loader(
            self.val_plan,
            batch_size=min(self.batch_size, self.val_plan.num_samples),
            workers=min(self.workers, 1),
            seed=self.seed,
            shuffle=False,
            flips=False,
            drop_last=False,
            rank=rank,
            world_size=world,
        )

    def state_dict(self) -> dict[str, Any]:
        _, world = self._ranks()
        per_epoch = self.batches_per_epoch(world)
        step = self.trainer.global_step if getattr(self, "trainer", None) else 0
        return {
            "step": step,
            "epoch": step // per_epoch,
            "batches_done": step % per_epoch,
            "num_samples": self.train_plan.num_samples,
            "batch_size": self.batch_size,
            "world_size": world,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _, world = self._ranks()
        now = {
            "num_samples": self.train_plan.num_samples,
            "batch_size": self.batch_size,
            "world_size": world,
            "seed": self.seed,
        }
        changed = {k: (state.get(k), v) for k, v in now.items() if state.get(k) != v}
        if changed and self.force:  # continue at the same step count with the new layout
            per_epoch = self.batches_per_epoch(world)
            step = int(state.get("step", 0))
            self._resume = (step // per_epoch, step % per_epoch)
            return
        if changed:
            raise InputError(
                expected(
                    "resume",
                    "the store, batch size, device count and seed of the checkpointed run",
                    {k: f"checkpoint {a} vs now {b}" for k, (a, b) in changed.items()},
                    "Resume with the same setup, or start a new run.",
                )
            )
        self._resume = (int(state["epoch"]), int(state["batches_done"]))
