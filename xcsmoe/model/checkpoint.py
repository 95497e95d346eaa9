"""Checkpoints: safetensors with the JSON config in its metadata; CSMAE Lightning files.

* :func:`save_checkpoint` writes every tensor of ``model.state_dict()`` to one
  ``.safetensors`` file whose metadata holds ``{"format": "xcsmoe", "config": <json>}``.
* :func:`load_checkpoint` reads those, or a torch file (``.ckpt``/``.pt``/``.pth``) holding a
  state dict or ``{"state_dict": ...}``. Keys prefixed ``backbone.`` (the CSMAE Lightning
  layout) select the encoder; other prefixed keys (decoders, heads) are ignored when loading
  into an encoder, as are timm leftovers ``fc_norm.*``/``head.*``. A ``pos_embed`` for a
  different square grid is resampled bicubically. Loading is strict: missing, unexpected
  and mis-shaped keys are all listed in one :class:`CheckpointError`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xcsmoe.errors import CheckpointError, expected
from xcsmoe.model.config import CSMoEConfig
from xcsmoe.model.pos_embed import resample_pos_embed
from xcsmoe.model.soft_moe import stack_linear_experts

_IGNORED_PREFIXES = ("fc_norm.", "head.")
_LINEAR_EXPERT = re.compile(r"^(.*\.experts\.)\d+\.fc[12]\.(weight|bias)$")
_POS_KEYS = ("pos_embed", "decoder_pos_embed")


def save_checkpoint(model: nn.Module, path: str | PathLike[str]) -> Path:
    """Write ``model``'s weights and config to ``path`` (``.safetensors``); returns the path."""
    from safetensors.torch import save_file

    config = _config_of(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "xcsmoe", "config": config.to_json(), "kind": type(model).__name__}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def read_checkpoint(
    path: str | PathLike[str], *, trust_pickle: bool = False
) -> tuple[dict[str, Tensor], CSMoEConfig | None]:
    """The raw state dict (and config if the file carries one) of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(expected("weights", "an existing checkpoint file", str(path)))
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        except Exception as error:
            raise CheckpointError(
                f"weights: cannot read {path} as safetensors ({error})."
            ) from error
        config = CSMoEConfig.from_dict(json.loads(meta["config"])) if "config" in meta else None
        return state, config
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as error:
        raise CheckpointError(
            expected(
                "weights",
                "a torch file of tensors (state dict)",
                f"{path} ({type(error).__name__})",
                "Re-save it as {'state_dict': model.state_dict()} or pass trust_pickle=True "
                "to load_checkpoint if you trust the file.",
            )
        ) from error
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(expected("weights", "a state dict of tensors", type(obj).__name__))
    return dict(obj), None


def load_checkpoint(
    path: str | PathLike[str],
    model: nn.Module | None = None,
    *,
    strict: bool = True,
    trust_pickle: bool = False,
) -> nn.Module:
    """Load ``path`` into ``model`` (built from the file's config when ``None``); returns it."""
    state, config = read_checkpoint(path, trust_pickle=trust_pickle)
    if model is None:
        if config is None:
            raise CheckpointError(
                expected(
                    "model",
                    "a model to load into",
                    None,
                    "This file has no config; use create_model(name, weights=path).",
                )
            )
        from xcsmoe.model.encoder import CSMoE
        from xcsmoe.model.pretrain import CSMoEForPretraining

        is_pretrain = any(k.startswith("decoder_s1.") for k in state)
        model = CSMoEForPretraining(config) if is_pretrain else CSMoE(config)
    load_state(model, state, strict=strict, source=str(path))
    return model


def load_state(
    model: nn.Module, state: dict[str, Tensor], *, strict: bool = True, source: str = "state"
) -> None:
    """Map ``state`` onto ``model`` (prefixes, resampling) and load it, strictly by default."""
    state = _adapt_keys(model, state)
    own = model.state_dict()
    for key in _POS_KEYS:
        for name in [k for k in state if k == key or k.endswith("." + key)]:
            if name in own and state[name].shape != own[name].shape:
                g = _grid_of(own[name])
                if g is not None:
                    with contextlib.suppress(ValueError):  # not square: reported below
                        state[name] = resample_pos_embed(state[name], g, g)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if strict and (missing or unexpected or shapes):
        raise CheckpointError(
            f"weights: {source} does not match {_name_of(model)}: "
            f"missing {_list(missing)}; unexpected {_list(unexpected)}; mis-shaped {_list(shapes)}. "
            "Pick the variant the checkpoint was trained as (create_model(name, ...)) "
            "or load with strict=False."
        )
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    with torch.no_grad():
        model.load_state_dict(usable, strict=False)


def _adapt_keys(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    from xcsmoe.model.encoder import CSMoE
    from xcsmoe.model.pretrain import CSMoEForPretraining

    for wrapper in ("module.", "model."):
        if state and all(k.startswith(wrapper) for k in state):
            state = {k[len(wrapper) :]: v for k, v in state.items()}
    has_backbone = any(k.startswith("backbone.") for k in state)
    if isinstance(model, CSMoE) and has_backbone:
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    elif isinstance(model, CSMoEForPretraining) and not has_backbone:
        state = {f"backbone.{k}": v for k, v in state.items()}
    prefixes = {m.group(1) for k in state if (m := _LINEAR_EXPERT.match(k))}
    if prefixes:
        state = dict(state)
        for prefix in prefixes:
            stack_linear_experts(state, prefix)
    return {
        k: v
        for k, v in state.items()
        if not k.removeprefix("backbone.").startswith(_IGNORED_PREFIXES)
    }


def _grid_of(pos: Tensor) -> int | None:
    side = math.isqrt(pos.shape[1] - 1)
    return side if side * side == pos.shape[1] - 1 else None


def _list(items: list[str], limit: int = 12) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return f"{len(items)} [{shown}{', ...' if len(items) > limit else ''}]"


def _config_of(model: nn.Module) -> CSMoEConfig:
    config: Any = getattr(model, "config", None)
    if not isinstance(config, CSMoEConfig):
        raise CheckpointError(
            expected("model", "a CSMoE model with a .config", type(model).__name__)
        )
    return config


def _name_of(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return f"{type(model).__name__}({getattr(config, 'name', '?')})"
