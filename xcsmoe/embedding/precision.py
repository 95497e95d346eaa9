"""Compute precision of the encoder: what ``dtype="auto"`` means on a device, and a scope
that runs a forward pass at exactly that precision, whatever the process-wide torch
settings say.

Policy (metadata, no torch state touched):

* ``"auto"`` → ``"bfloat16"`` autocast where the device computes bf16 natively: CUDA, and
  CPUs with AVX512-BF16 or AMX-BF16 (:func:`cpu_has_native_bf16`); ``"float32"`` elsewhere.
* ``"float32"``, ``"bfloat16"`` and ``"float16"`` are taken as given.

Execution (:func:`compute_precision`): autocast to the chosen dtype and, for the duration
of the forward only, float32 matmuls and convolutions in full IEEE precision. Another
library may have called ``torch.set_float32_matmul_precision("medium")`` (bf16 matmuls on
CPUs with oneDNN, TF32 on CUDA); ``"float32"`` then still means float32. The previous
settings are restored when the last concurrent forward of the process ends, so user code
never sees a setting of ours outside the scope (inside it, only a *higher* precision).

Accuracy of bf16 autocast against float32, measured on the real BigEarthNet S1+S2 sample
pairs (120 px, 6 pairs, every 64/112-px window and token) with seeded random weights and
with ``csmoe_tiny`` after the sample pretraining run: see :data:`BF16_MIN_CLS_COSINE` and
``docs/architecture.md`` ("Compute precision").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch

from xcsmoe.errors import ConfigError, expected

AUTO = "auto"
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "float32": None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""Concrete ``dtype=`` names → autocast dtype (``None``: plain float32)."""
DTYPES = (AUTO, *AUTOCAST_DTYPES)

BF16_MIN_CLS_COSINE = 0.999
"""Contract: lowest cosine of any bf16-autocast [CLS] or token vector to its float32 value
(measured ≥ 0.9999 on the sample pairs for csmoe_tiny and csmoe_p16, random weights)."""

# float32 matmul / convolution precision switches per device type (torch >= 2.9 API)
_SWITCHES = {
    "cpu": (("mkldnn", "matmul"), ("mkldnn", "conv")),
    "cuda": (("cuda", "matmul"), ("cudnn", "conv")),
}
_EXACT = "ieee"


@lru_cache(maxsize=1)
def _cpu_capabilities() -> dict[str, object]:
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None:  # torch < 2.6: the single-feature queries
        flags = {}
        for key, name in (("avx512_bf16", "_is_avx512_bf16_supported"),
                          ("amx_bf16", "_is_amx_tile_supported")):  # fmt: skip
            query = getattr(torch.cpu, name, None)
            flags[key] = bool(query()) if query is not None else False
        return flags
    return dict(get())


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16, as torch's own
    capability query reports) and torch has oneDNN to use it."""
    if not torch.backends.mkldnn.is_available():
        return False
    caps = _cpu_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def native_bf16(device: torch.device, *, local: bool = True) -> bool:
    """Whether ``device`` computes bf16 natively. ``local=False``: the device belongs to
    other machines (GPU workers); CUDA is then assumed to (every GPU since Ampere)."""
    if device.type == "cuda":
        if not local or not torch.cuda.is_available():
            return True
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch without the keyword
            return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def dtype_name(dtype: object) -> str:
    """``dtype`` checked, by name: one of :data:`DTYPES` (``None`` means ``"auto"``)."""
    if dtype is None:
        return AUTO
    if not isinstance(dtype, (str, torch.dtype)):
        raise ConfigError(expected("dtype", f"one of {list(DTYPES)}", dtype))
    key = str(dtype).removeprefix("torch.")
    if key not in DTYPES:
        raise ConfigError(
            expected("dtype", f"one of {list(DTYPES)}", dtype, 'Pass dtype="auto" (default).')
        )
    return key


def resolve_dtype(dtype: object, device: torch.device, *, local: bool = True) -> str:
    """The concrete precision a forward on ``device`` uses: ``"float32"``, ``"bfloat16"``
    or ``"float16"``. ``"auto"``/``None`` → bf16 where :func:`native_bf16`, else float32."""
    name = dtype_name(dtype)
    if name != AUTO:
        return name
    return "bfloat16" if native_bf16(device, local=local) else "float32"


class _ExactFloat32:
    """Reference-counted scope pinning float32 matmul/conv precision to IEEE on one device
    type; the first thread in saves the process's settings, the last one out restores
    them."""

    def __init__(self, device_type: str) -> None:
        self.device_type = device_type
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: list[tuple[object, str, object]] = []

    def _targets(self) -> list[tuple[object, str, object]]:
        """``(holder, attribute, exact value)`` of every switch this torch has."""
        targets = []
        for backend, op in _SWITCHES.get(self.device_type, ()):
            holder = getattr(getattr(torch.backends, backend, None), op, None)
            if holder is not None and _has_fp32_precision(holder):
                targets.append((holder, "fp32_precision", _EXACT))
        if targets:
            return targets
        # torch < 2.9: the legacy switches
        if self.device_type == "cuda":
            return [
                (torch.backends.cuda.matmul, "allow_tf32", False),
                (torch.backends.cudnn, "allow_tf32", False),
            ]
        return [(_LegacyMatmul(), "precision", "highest")]

    def __enter__(self) -> None:
        with self.lock:
            if self.depth == 0:
                targets = self._targets()
                self.saved = [(h, a, getattr(h, a)) for h, a, _ in targets]
                for holder, attribute, value in targets:
                    if getattr(holder, attribute) != value:
                        setattr(holder, attribute, value)
            self.depth += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                for holder, attribute, value in reversed(self.saved):
                    if getattr(holder, attribute) != value:
                        setattr(holder, attribute, value)
                self.saved = []


class _LegacyMatmul:
    """``torch.{get,set}_float32_matmul_precision`` as an attribute."""

    @property
    def precision(self) -> str:
        return torch.get_float32_matmul_precision()

    @precision.setter
    def precision(self, value: str) -> None:
        torch.set_float32_matmul_precision(value)


def _has_fp32_precision(holder: object) -> bool:
    try:
        getattr(holder, "fp32_precision")  # noqa: B009  (properties raise when absent)
    except (AttributeError, RuntimeError):
        return False
    return True


_PINS = {kind: _ExactFloat32(kind) for kind in _SWITCHES}


@contextmanager
def compute_precision(dtype: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed forward at ``dtype`` (a name from :func:`resolve_dtype`) on
    ``device``: autocast for bf16/fp16, and float32 ops in full precision whatever the
    process's matmul settings (restored afterwards)."""
    autocast = AUTOCAST_DTYPES[resolve_dtype(dtype, device)]
    pin = _PINS.get(device.type)
    with (
        pin if pin is not None else _nothing(),
        torch.autocast(device.type, dtype=autocast, enabled=autocast is not None),
    ):
        yield


@contextmanager
def _nothing() -> Iterator[None]:
    yield
