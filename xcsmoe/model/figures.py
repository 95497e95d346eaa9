"""Parameter and compute figures of one image through one sensor's encoder path.

Convention (the paper's, i.e. fvcore's): **MACs** (multiply-accumulates) of the linear,
convolution, matmul and einsum operations — patch embedding, qkv/proj, Soft MoE slot
projection, token–slot logits, dispatch, experts and combine. The attention products
``q·kᵀ`` and ``attn·v`` (``scaled_dot_product_attention``), norms, softmaxes, activations and
additions are **not** counted. ``torch_gflops`` is torch's ``FlopCounterMode`` total for the
same forward (FLOPs = 2 × MACs, attention products included) for comparison.

Parameters: everything one image of that sensor touches — its patch embedding, [CLS],
the fixed ``pos_embed`` (a frozen parameter in the MAE/CSMAE layout), its modality-specific
blocks and norm, the shared blocks and the final norm.

Counting runs on the ``meta`` device (no memory, no arithmetic), so full-size models cost
milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from xcsmoe.errors import ConfigError, expected

aten = torch.ops.aten


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


def _mm(args: tuple, _out: Any) -> int:
    a, b = args[0], args[1]
    return math.prod(_shape(a)) * _shape(b)[-1]


def _addmm(args: tuple, _out: Any) -> int:
    return _mm(args[1:], _out)


def _bmm(args: tuple, _out: Any) -> int:
    a, b = args[0], args[1]
    return math.prod(_shape(a)) * _shape(b)[-1]


def _baddbmm(args: tuple, _out: Any) -> int:
    return _bmm(args[1:], _out)


def _linear(args: tuple, _out: Any) -> int:
    x, w = args[0], args[1]
    return math.prod(_shape(x)) * _shape(w)[0]


def _matmul(args: tuple, out: Any) -> int:
    a = args[0]
    return math.prod(_shape(out)) * _shape(a)[-1]


def _conv(args: tuple, out: Any) -> int:
    w = args[1]
    return math.prod(_shape(out)) * math.prod(_shape(w)[1:])


def _einsum(args: tuple, _out: Any) -> int:
    equation, operands = args[0], args[1]
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, op in zip(inputs, operands, strict=True):
        sizes.update(zip(letters, _shape(op), strict=True))
    return math.prod(sizes.values())


_MAC_RULES = {
    aten.mm.default: _mm,
    aten.addmm.default: _addmm,
    aten.bmm.default: _bmm,
    aten.baddbmm.default: _baddbmm,
    aten.linear.default: _linear,
    aten.matmul.default: _matmul,
    aten.convolution.default: _conv,
    aten.einsum.default: _einsum,
}


_ATTENTION = (torch.nn.functional.scaled_dot_product_attention,)


class _AttentionGate(TorchFunctionMode):
    """Pauses a :class:`MacCounter` inside attention kernels (whatever they decompose to)."""

    def __init__(self, counter: MacCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func not in _ATTENTION:
            return func(*args, **(kwargs or {}))
        self.counter.paused += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.counter.paused -= 1


class MacCounter(TorchDispatchMode):
    """Counts MACs of linear/conv/matmul/einsum ops outside attention kernels.

    Use as a context manager; ``macs`` holds the total, ``by_op`` the split per aten op.
    """

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0
        self.paused = 0
        self.by_op: dict[str, int] = {}
        self._gate = _AttentionGate(self)

    def __enter__(self) -> MacCounter:
        self._gate.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._gate.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = _MAC_RULES.get(func)
        if rule is not None and not self.paused:
            macs = rule(args, out)
            self.macs += macs
            self.by_op[str(func)] = self.by_op.get(str(func), 0) + macs
        return out


@dataclass(frozen=True)
class ModelFigures:
    """Figures of one image of ``sensor`` at ``img_size`` through the encoder."""

    name: str
    sensor: str
    img_size: int
    params: int
    macs: int
    torch_flops: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def torch_gflops(self) -> float:
        return self.torch_flops / 1e9

    @property
    def c2c(self) -> float:
        """Capacity-to-compute ratio: parameters in M per GMAC."""
        return self.params_m / self.gmacs

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "params_m": self.params_m,
            "gmacs": self.gmacs,
            "torch_gflops": self.torch_gflops,
            "c2c": self.c2c,
        }


def model_figures(
    model: nn.Module | str, *, sensor: str = "s2", img_size: int | None = None
) -> ModelFigures:
    """Parameters, GMACs and C2C ratio of one ``sensor`` image through ``model``'s encoder.

    ``model``: a CSMoE encoder, a pretraining wrapper (its ``backbone`` is used) or a registry
    name (then built on the ``meta`` device). ``img_size`` defaults to the config's.
    """
    from xcsmoe.model.encoder import CSMoE, num_params_path
    from xcsmoe.model.registry import create_model

    if sensor not in ("s1", "s2"):
        raise ConfigError(expected("sensor", "'s1' or 's2'", sensor))
    if isinstance(model, str):
        with torch.device("meta"):
            model = create_model(model)
    encoder = getattr(model, "backbone", model)
    if not isinstance(encoder, CSMoE):
        raise ConfigError(expected("model", "a CSMoE model or registry name", type(model).__name__))
    config = encoder.config
    with torch.device("meta"):  # figures depend on the config only
        encoder = CSMoE(config)
    size = img_size or config.img_size
    image = torch.zeros(1, config.in_chans(sensor), size, size, device="meta")
    counter = MacCounter()
    with torch.no_grad(), counter:
        encoder.forward_sensor(image, sensor)
    flops = FlopCounterMode(display=False)
    with torch.no_grad(), flops:
        encoder.forward_sensor(image, sensor)
    return ModelFigures(
        name=config.name,
        sensor=sensor,
        img_size=size,
        params=num_params_path(encoder, sensor),
        macs=counter.macs,
        torch_flops=flops.get_total_flops(),
    )
