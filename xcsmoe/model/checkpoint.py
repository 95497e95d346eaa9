"""Checkpoints: safetensors with the JSON config in its metadata; CSMAE Lightning files.

* :func:`save_checkpoint` writes every tensor of ``model.state_dict()`` to one
  ``.safetensors`` file whose metadata holds ``{"format": "xcsmoe", "config": <json>}``.
* :func:`load_checkpoint` reads those, or a torch file (``.ckpt``/``.pt``/``.pth``) holding a
  state dict or ``{"state_dict": ...}``; every reader takes a path, an ``https://`` URL or
  a registered name (downloaded once, see :mod:`xcsmoe.model.hub`). Keys prefixed
  ``backbone.`` (the CSMAE Lightning layout) select the encoder; other prefixed keys
  (decoders, heads) are ignored when loading into an encoder, as are timm leftovers
  ``fc_norm.*``/``head.*`` (``fc_norm`` is kept for a model that has one: CSMAE's pooled
  feature). A ``pos_embed`` for a different square grid is resampled bicubically. Loading is strict: missing, unexpected
  and mis-shaped keys are all listed in one :class:`CheckpointError`.
* :func:`match_checkpoint` checks a file against a variant from its header alone (names,
  shapes and stored config; no weight is read), so a wrong or damaged file fails before
  any work starts. A file's stored band order (``s1_bands``/``s2_bands``) wins over the
  registry's: the network is always fed its channels in the order it was trained with.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable
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
    path = _checkpoint_file(path)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path, lambda handle, key: handle.get_tensor(key))
        return state, _stored_config(meta, path)
    return _torch_state(path, trust_pickle=trust_pickle, mmap=False), None


def read_checkpoint_header(
    path: str | PathLike[str], *, trust_pickle: bool = False
) -> tuple[dict[str, Tensor], CSMoEConfig | None]:
    """Names and shapes of a checkpoint's tensors (as ``meta`` tensors) and its config.

    Reads the safetensors header, or memory-maps a torch zip file, so no weight is
    loaded; a truncated or corrupted file raises :class:`CheckpointError`.
    """
    path = _checkpoint_file(path)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(
            path, lambda handle, key: torch.empty(handle.get_slice(key).get_shape(), device="meta")
        )
        return state, _stored_config(meta, path)
    state = _torch_state(path, trust_pickle=trust_pickle, mmap=True)
    return {k: torch.empty(v.shape, device="meta") for k, v in state.items()}, None


def _checkpoint_file(path: str | PathLike[str]) -> Path:
    from xcsmoe.model.hub import weights_path

    path = weights_path(path)  # a URL or registered name: its downloaded, verified file
    if not path.is_file():
        raise CheckpointError(expected("weights", "an existing checkpoint file", str(path)))
    return path


def _read_safetensors(
    path: Path, tensor: Callable[[Any, str], Tensor]
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``{key: tensor(handle, key)}`` over a safetensors file, and its metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            values = {k: tensor(handle, k) for k in handle.keys()}  # noqa: SIM118
    except Exception as error:
        raise CheckpointError(
            f"weights: cannot read {path} as safetensors ({error}); the file is "
            "truncated or corrupted. Copy or save it again."
        ) from error
    return values, meta


def match_checkpoint(
    path: str | PathLike[str], config: CSMoEConfig | None = None, *, trust_pickle: bool = False
) -> CSMoEConfig:
    """Check from its header that ``path`` loads into the encoder of ``config``.

    Returns the config to build: ``config`` (the checkpoint's own when ``None``) with the
    band order the checkpoint stores, if any; a stored variant must be ``config``'s.
    Raises :class:`CheckpointError` naming both sides, e.g. ``"checkpoint is csmoe_tiny,
    model is csmoe_p16"``.
    """
    shapes, stored = read_checkpoint_header(path, trust_pickle=trust_pickle)
    if config is None and stored is None:
        raise CheckpointError(
            expected(
                "model",
                "a variant name",
                None,
                f"{path} stores no config; pass model= (one of xcsmoe.list_models()).",
            )
        )
    if config is not None and stored is not None and stored.name != config.name:
        raise CheckpointError(
            f"weights: checkpoint is {stored.name}, model is {config.name}. Pass "
            f"model={stored.name!r} (or no model: it is read from the checkpoint), "
            f"or weights trained as {config.name}."
        )
    if config is None:
        target: CSMoEConfig = stored  # type: ignore[assignment]
    else:
        target = with_stored_bands(config, stored)
    problems = _mismatch_of(target, shapes)
    if problems:
        guess = None if stored is not None else _variant_matching(shapes)
        side = f"checkpoint is {guess}" if guess else f"checkpoint {path} does not match"
        raise CheckpointError(
            f"weights: {side}, model is {target.name} ({problems}). "
            + (f"Pass model={guess!r}." if guess else "Pick the variant it was trained as.")
        )
    return target


def with_stored_bands(config: CSMoEConfig, stored: CSMoEConfig | None) -> CSMoEConfig:
    """``config`` with the input band order of the checkpoint's ``stored`` config: a
    network is always fed its channels in the order it was trained with."""
    if stored is None:
        return config
    return config.replace(s1_bands=stored.s1_bands, s2_bands=stored.s2_bands)


def _mismatch_of(config: CSMoEConfig, shapes: dict[str, Tensor]) -> str:
    from xcsmoe.model.encoder import CSMoE

    with torch.device("meta"):
        model = CSMoE(config)
    missing, unexpected, mis_shaped = _compare(model, dict(shapes))
    if not (missing or unexpected or mis_shaped):
        return ""
    return (
        f"missing {_list(missing)}; unexpected {_list(unexpected)}; mis-shaped {_list(mis_shaped)}"
    )


def _variant_matching(shapes: dict[str, Tensor]) -> str | None:
    """The registered variant whose encoder these tensors fit, if any."""
    from xcsmoe.model.registry import list_models, model_config

    for name in list_models():
        if not _mismatch_of(model_config(name), shapes):
            return name
    return None


def _stored_config(meta: dict[str, str], path: Path) -> CSMoEConfig | None:
    if "config" not in meta:
        return None
    try:
        return CSMoEConfig.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError) as error:
        raise CheckpointError(
            f"weights: the config stored in {path} is not valid ({error})."
        ) from error


def _torch_state(path: Path, *, trust_pickle: bool, mmap: bool) -> dict[str, Tensor]:
    try:
        obj = _torch_load(path, trust_pickle=trust_pickle, mmap=mmap)
    except Exception as error:
        if "Unsupported global" in str(error) and not trust_pickle:
            raise CheckpointError(
                expected(
                    "weights",
                    "a torch file of tensors (state dict)",
                    f"{path} (it holds other Python objects)",
                    "Re-save it as {'state_dict': model.state_dict()} or pass "
                    "trust_pickle=True (to create_model or load_checkpoint) if you trust "
                    "the file.",
                )
            ) from error
        raise CheckpointError(
            f"weights: cannot read {path} as a torch checkpoint ({type(error).__name__}); "
            "the file is truncated or corrupted. Copy or save it again."
        ) from error
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(expected("weights", "a state dict of tensors", type(obj).__name__))
    return dict(obj)


def _torch_load(path: Path, *, trust_pickle: bool, mmap: bool) -> Any:
    if mmap:
        import zipfile

        mmap = zipfile.is_zipfile(path)  # legacy (non-zip) files cannot be memory-mapped
    return torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=mmap)


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
    missing, unexpected, shapes = _compare(model, state, adapted=True)
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


def _compare(
    model: nn.Module, state: dict[str, Tensor], *, adapted: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """Missing, unexpected and mis-shaped keys of ``state`` for ``model``.

    ``state`` is adapted in place (prefixes, ``pos_embed`` resampled to the model's grid);
    meta tensors work, so a header can be checked without reading weights.
    """
    if not adapted:
        adapted_state = _adapt_keys(model, state)
        state.clear()
        state.update(adapted_state)
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
    return missing, unexpected, shapes


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
    own = {k.removeprefix("backbone.") for k in model.state_dict()}
    ignored = tuple(p for p in _IGNORED_PREFIXES if not any(k.startswith(p) for k in own))
    return {k: v for k, v in state.items() if not k.removeprefix("backbone.").startswith(ignored)}


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
