"""Named model variants: ``create_model(name, ...)`` and ``list_models()``."""

from __future__ import annotations

from os import PathLike
from typing import Any

import torch
from torch import nn

from xcsmoe.errors import ConfigError, expected
from xcsmoe.model.config import CSMoEConfig

_VARIANTS: dict[str, dict[str, Any]] = {
    # CSMoE (paper Table IV): image 224, dim 768, 12 heads, 4 + 2 Soft MoE layers, 8 experts
    "csmoe_p14": {"patch_size": 14},
    "csmoe_p16": {"patch_size": 16},
    "csmoe_p28": {"patch_size": 28},
    "csmoe_p32": {"patch_size": 32},
    # dense CSMAE baseline (ViT-B, 10 modality-specific + 2 cross-sensor layers)
    "csmae_p15": {
        "img_size": 120,
        "patch_size": 15,
        "s1_bands": ("vh", "vv"),  # CSMAE's released data pipeline stacks VH, VV
        "global_pool": "avg",  # its feature: fc_norm over the mean of the patch tokens
        "depth_specific": 10,
        "depth_shared": 2,
        "num_experts": 0,
        "decoder_dim": 512,
        "decoder_depth": 8,
        "decoder_heads": 16,
    },
    # tiny variant for tests: fast on CPU
    "csmoe_tiny": {
        "img_size": 64,
        "patch_size": 16,
        "embed_dim": 64,
        "num_heads": 2,
        "depth_specific": 2,
        "depth_shared": 1,
        "num_experts": 4,
        "decoder_dim": 32,
        "decoder_depth": 1,
        "decoder_heads": 2,
        "proj_dim": 32,
    },
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_VARIANTS)


def model_config(name: str, **overrides: Any) -> CSMoEConfig:
    """The frozen config of variant ``name`` with ``overrides`` applied."""
    if name not in _VARIANTS:
        raise ConfigError(
            expected(
                "name", f"one of {', '.join(list_models())}", name, "See xcsmoe.list_models()."
            )
        )
    return CSMoEConfig(name=name, **_VARIANTS[name]).replace(**overrides)


def create_model(
    name: str,
    *,
    weights: str | PathLike[str] | None = None,
    pretraining: bool = False,
    trust_pickle: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build variant ``name``: the :class:`~xcsmoe.model.encoder.CSMoE` encoder, or with
    ``pretraining=True`` the :class:`~xcsmoe.model.pretrain.CSMoEForPretraining` wrapper.

    ``weights``: ``None`` or ``"random"`` for a randomly initialised network; else a file
    written by :func:`~xcsmoe.model.checkpoint.save_checkpoint` (or a CSMAE Lightning
    ``.ckpt`` for ``csmae_p15``) given as a path, an ``https://`` URL (downloaded once,
    ``#sha256=<hex>`` to verify it) or a registered name (:func:`~xcsmoe.list_weights`).
    It is loaded strictly (encoder-only weights into a pretraining model load into its
    ``backbone``). A file that stores its config must be of variant ``name``, and the
    network takes the input band order stored there (``s1_bands``/``s2_bands``, unless
    overridden). ``trust_pickle=True`` also reads torch files that pickle Python objects
    besides tensors (e.g. a Lightning ``.ckpt`` with its hyper-parameters); only for
    files you trust, since unpickling can run code.
    """
    from xcsmoe.model.encoder import CSMoE
    from xcsmoe.model.pretrain import CSMoEForPretraining

    config = model_config(name, **overrides)
    build = CSMoEForPretraining if pretraining else CSMoE
    if weights is None or weights == "random":
        return build(config)
    from xcsmoe.errors import CheckpointError
    from xcsmoe.model.checkpoint import load_state, read_checkpoint
    from xcsmoe.model.hub import weights_path

    state, stored = read_checkpoint(weights_path(weights), trust_pickle=trust_pickle)
    if stored is not None:
        if stored.name != name:
            raise CheckpointError(
                f"weights: checkpoint is {stored.name}, model is {name}. "
                f"Pass {stored.name!r} as the model name, or weights trained as {name}."
            )
        bands = {k: getattr(stored, k) for k in ("s1_bands", "s2_bands") if k not in overrides}
        config = config.replace(**bands)
    # strict loading overwrites every tensor, so skip the random initialisation
    device = torch.empty(0).device
    with torch.device("meta"):
        model: nn.Module = build(config)
    model = model.to_empty(device=device)
    load_state(model, state, strict=True, source=str(weights))
    return model
