"""Frozen configuration of the CSMoE / CSMAE networks."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any

from xcsmoe.errors import ConfigError, expected

SLOT_MODES = ("grouped", "learned")
"""How a Soft MoE builds its slot embeddings (see :class:`~xcsmoe.model.soft_moe.SoftMoE`)."""


@dataclass(frozen=True)
class CSMoEConfig:
    """Everything that defines a CSMoE (or dense CSMAE) network.

    ``num_experts = 0`` turns every encoder MLP into a dense one (the CSMAE baseline).
    Loss weights apply to :class:`~xcsmoe.model.pretrain.CSMoEForPretraining`.
    """

    name: str = "csmoe_p16"
    img_size: int = 224
    patch_size: int = 16
    in_chans_s1: int = 2
    in_chans_s2: int = 10
    # Input channel order of each patch embedding, as cube variable names. It belongs to
    # the model and its checkpoint: CSMAE's released code stacks S1 as VH, VV.
    s1_bands: tuple[str, ...] = ("vv", "vh")
    s2_bands: tuple[str, ...] = (
        "B02",
        "B03",
        "B04",
        "B08",
        "B05",
        "B06",
        "B07",
        "B11",
        "B12",
        "B8A",
    )
    embed_dim: int = 768
    num_heads: int = 12
    depth_specific: int = 4
    depth_shared: int = 2
    mlp_ratio: float = 4.0
    num_experts: int = 8
    slot_mode: str = "grouped"
    slots_per_expert: int = 0  # "learned" slots only; 0 = ceil(native tokens / experts)
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    # Classification feature: "token" = raw [CLS]; "avg" = fc_norm(mean of patch tokens),
    # the feature of CSMAE's released configs (global_pool: avg).
    global_pool: str = "token"
    # pretraining
    decoder_dim: int = 256
    decoder_depth: int = 4
    decoder_heads: int = 8
    proj_dim: int = 256
    mask_ratio: float = 0.5
    temperature: float = 0.5
    weight_uni: float = 1.0
    weight_cross: float = 1.0
    weight_mim: float = 1.0
    weight_repulsion: float = 0.01
    weight_entropy: float = 0.01

    def __post_init__(self) -> None:
        positive = (
            "img_size",
            "patch_size",
            "in_chans_s1",
            "in_chans_s2",
            "embed_dim",
            "num_heads",
            "decoder_dim",
            "decoder_heads",
            "proj_dim",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(expected(name, "a positive int", value))
        for name in ("depth_specific", "depth_shared", "decoder_depth", "num_experts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(expected(name, "an int >= 0", value))
        for sensor in ("s1", "s2"):
            self._check_bands(sensor)
        if self.depth_specific + self.depth_shared == 0:
            raise ConfigError(
                expected("depth_specific + depth_shared", "at least one encoder layer", 0)
            )
        if self.img_size % self.patch_size:
            raise ConfigError(
                expected(
                    "img_size",
                    f"a multiple of patch_size={self.patch_size}",
                    self.img_size,
                    "Pick an image size divisible by the patch size.",
                )
            )
        for name, dim, heads_name, heads in (
            ("embed_dim", self.embed_dim, "num_heads", self.num_heads),
            ("decoder_dim", self.decoder_dim, "decoder_heads", self.decoder_heads),
        ):
            if dim % heads:
                raise ConfigError(
                    expected(
                        name,
                        f"a multiple of {heads_name}={heads}",
                        dim,
                        f"Change {name} or {heads_name}.",
                    )
                )
        if self.embed_dim % 4 or self.decoder_dim % 4:
            raise ConfigError(
                expected("embed_dim/decoder_dim", "multiples of 4 (2-D sin-cos)", self.embed_dim)
            )
        if self.global_pool not in ("token", "avg"):
            raise ConfigError(expected("global_pool", '"token" or "avg"', self.global_pool))
        if self.slot_mode not in SLOT_MODES:
            raise ConfigError(expected("slot_mode", f"one of {SLOT_MODES}", self.slot_mode))
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(expected("mask_ratio", "a float in [0, 1)", self.mask_ratio))
        if self.temperature <= 0 or self.mlp_ratio <= 0:
            raise ConfigError(
                expected("temperature/mlp_ratio", "> 0", (self.temperature, self.mlp_ratio))
            )

    def _check_bands(self, sensor: str) -> None:
        from xcsmoe.sensors import SENSORS

        name = f"{sensor}_bands"
        bands = getattr(self, name)
        if isinstance(bands, list):  # from JSON
            object.__setattr__(self, name, tuple(bands))
            bands = tuple(bands)
        known = set(SENSORS[sensor].bands)
        if (
            not isinstance(bands, tuple)
            or len(bands) != self.in_chans(sensor)
            or len(set(bands)) != len(bands)
            or not set(bands) <= known
        ):
            raise ConfigError(
                expected(
                    name,
                    f"{self.in_chans(sensor)} distinct band names among {sorted(known)}",
                    bands,
                )
            )

    # ------------------------------------------------------------------ derived
    @property
    def grid_size(self) -> int:
        """Patches per side of the native (square) image."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def hidden_dim(self) -> int:
        """Hidden width of every (expert) MLP."""
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def in_chans(self, sensor: str) -> int:
        return {"s1": self.in_chans_s1, "s2": self.in_chans_s2}[sensor]

    def bands(self, sensor: str) -> tuple[str, ...]:
        """Cube variable names in the order ``sensor``'s patch embedding expects them."""
        return {"s1": self.s1_bands, "s2": self.s2_bands}[sensor]

    # ------------------------------------------------------------------ (de)serialise
    def replace(self, **overrides: Any) -> CSMoEConfig:
        """A copy with ``overrides``; unknown names raise :class:`ConfigError`."""
        valid = field_names()
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ConfigError(
                expected(
                    "overrides",
                    f"config fields among {', '.join(valid)}",
                    unknown,
                    "Remove or rename the unknown override(s).",
                )
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CSMoEConfig:
        known = {k: v for k, v in data.items() if k in field_names()}
        return cls(**known)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(CSMoEConfig))
