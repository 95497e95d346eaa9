"""The model on a worker: described by a small picklable spec, built once, cached.

Dask tasks carry a :class:`ModelSpec` (a few strings), never the network itself. The
first task on a worker process builds the model; later tasks on any thread of that
process reuse it (:func:`cached_model`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from xcsmoe.embedding.precision import AUTOCAST_DTYPES, resolve_dtype
from xcsmoe.errors import ConfigError, WeightsRequiredError, expected

if TYPE_CHECKING:
    from xcsmoe.model.config import CSMoEConfig

RANDOM_WEIGHTS = "random"

_MODELS: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """What to build: registry name, weights (checkpoint path or ``"random"``), seed."""

    name: str
    weights: str
    seed: int = 0

    @property
    def is_random(self) -> bool:
        return self.weights == RANDOM_WEIGHTS


def model_spec(model: str, weights: str | Path | None, *, seed: int = 0) -> ModelSpec:
    """Validate the user's ``model=``/``weights=`` pair into a :class:`ModelSpec`."""
    from os import PathLike

    from xcsmoe.model.registry import list_models

    if not isinstance(model, str) or model not in list_models():
        raise ConfigError(expected("model", f"one of {list_models()}", model))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(expected("seed", "an int >= 0", seed))
    if weights is None:
        raise WeightsRequiredError(
            expected(
                "weights",
                "a checkpoint (saved with xcsmoe.save_checkpoint, or a CSMAE .ckpt) as a path, "
                "an https URL or a registered name (xcsmoe.list_weights())",
                None,
                "Pretrain CSMoE with xcsmoe's pretraining model and save it, or pass "
                'weights="random" to test the plumbing with an untrained network.',
            )
        )
    if not isinstance(weights, (str, PathLike)):
        raise ConfigError(
            expected(
                "weights",
                'a checkpoint path, an https URL, a registered name or "random"',
                type(weights).__name__,
            )
        )
    if str(weights) != RANDOM_WEIGHTS:
        from xcsmoe.model.hub import weights_path

        path = weights_path(weights).resolve()  # a URL or name: downloaded once, verified
        if not path.is_file():
            raise WeightsRequiredError(
                expected("weights", "an existing checkpoint file", str(weights))
            )
        weights = str(path)
    return ModelSpec(name=model, weights=str(weights), seed=seed)


def resolve_model(
    model: str | None, weights: str | Path | None, *, patch: int, seed: int = 0
) -> tuple[ModelSpec, CSMoEConfig]:
    """Spec and config of the network to run, checked on the client.

    ``model=None`` takes the variant of a registered name or the one stored in the
    checkpoint, else ``csmoe_p{patch}``. Weights given as a URL or a registered name are
    downloaded (once) now, and the spec carries the cached file. A checkpoint is matched
    against the variant from its header (no weight is read): another variant or a damaged
    file raises :class:`~xcsmoe.errors.CheckpointError` now. The config returned is the
    checkpoint's own when it stores one (its band order).
    """
    from os import PathLike

    from xcsmoe.model.checkpoint import match_checkpoint, read_checkpoint_header
    from xcsmoe.model.hub import weights_model, weights_path
    from xcsmoe.model.registry import model_config

    if model is not None and not isinstance(model, str):
        raise ConfigError(expected("model", "a variant name (str) or None", type(model).__name__))
    name = model if model is not None else weights_model(weights)
    if isinstance(weights, (str, PathLike)) and str(weights) != RANDOM_WEIGHTS:
        weights = weights_path(weights)
        if name is None and weights.is_file():
            stored = read_checkpoint_header(weights)[1]
            name = stored.name if stored is not None else None
    spec = model_spec(name or f"csmoe_p{patch}", weights, seed=seed)
    config = model_config(spec.name)
    if not spec.is_random:
        config = match_checkpoint(spec.weights, config)
    return spec, config


def weights_digest(spec: ModelSpec) -> str:
    """Content identity of the weights: ``"random:<seed>"`` or the file's sha256 (hex)."""
    if spec.is_random:
        return f"{RANDOM_WEIGHTS}:{spec.seed}"
    stat = Path(spec.weights).stat()
    return _file_sha256(spec.weights, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size/mtime: cache key only
    from xcsmoe.model.download import file_sha256

    return file_sha256(path)


def resolve_device(
    device: str | torch.device = "auto", *, gpu_resources: bool = False
) -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; refuses devices this process lacks.

    With ``gpu_resources=True`` the tasks run on GPU workers, not here: ``"auto"`` means
    ``"cuda"`` and CUDA is not required on this machine.
    """
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(expected("device", '"auto", "cpu", "cuda" or "cuda:N"', device))
    if str(device) == "auto":
        if gpu_resources:
            return torch.device("cuda")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(
            expected("device", '"auto", "cpu", "cuda" or "cuda:N"', device)
        ) from error
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(expected("device", '"auto", "cpu", "cuda" or "cuda:N"', device))
    if resolved.type == "cuda" and not gpu_resources:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            raise ConfigError(
                expected(
                    "device",
                    f"a device this machine has ({count} CUDA device(s))",
                    str(device),
                    'Pass device="cpu" (or "auto"), or gpu_resources=True for GPU workers.',
                )
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            expected("device", "an available device", str(device), 'Pass device="cpu".')
        )
    return resolved


def autocast_name(
    dtype: str | torch.dtype | None, device: torch.device, *, local: bool = True
) -> str:
    """The dtype really used, by name: ``dtype`` checked, ``"auto"``/``None`` resolved for
    ``device`` (:func:`xcsmoe.embedding.precision.resolve_dtype`: bf16 where the device
    computes it natively, else float32)."""
    return resolve_dtype(dtype, device, local=local)


def resolve_autocast(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of :func:`autocast_name` (``None``: plain float32)."""
    return AUTOCAST_DTYPES[autocast_name(dtype, device)]


def default_batch_size(device: torch.device) -> int:
    """Windows per forward pass when the user gives none: 8 on a CPU (larger batches do
    not run faster there and hold more memory per thread), 64 on a GPU."""
    return 64 if device.type == "cuda" else 8


def build_model(spec: ModelSpec) -> torch.nn.Module:
    """Build the encoder described by ``spec`` (random weights are seeded: every worker
    builds the same network)."""
    from xcsmoe.model.registry import create_model

    if spec.is_random:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = create_model(spec.name)
    else:
        model = create_model(spec.name, weights=spec.weights)
    return model.eval()


def cached_model(
    spec: ModelSpec, device: torch.device, *, dtype: str = "float32", compile: bool = False
) -> Any:
    """The model for ``spec`` on ``device``, built at most once per process.

    A model for a reduced-precision ``dtype`` holds its matmul weights in that dtype
    (:func:`cast_matmul_weights`) and must run under that autocast. ``compile=True``
    returns a :class:`CompiledEncoder` around that same model, cached per
    ``(spec, device, dtype)``: the compile cost is paid once per worker process and dtype
    (torch.compile specialises the graph on the autocast state).
    """
    low = AUTOCAST_DTYPES[dtype]  # None for float32
    key: tuple[Any, ...] = (spec, str(device), low)

    def build() -> torch.nn.Module:
        model = build_model(spec)
        if low is not None:
            cast_matmul_weights(model, low)
        return model.to(device)

    model = _cached(key, build)
    if not compile:
        return model
    return _cached((*key, dtype, True), lambda: CompiledEncoder(model))


def _cached(key: tuple[Any, ...], build: Any) -> Any:
    """``_MODELS[key]``, built once per process even when threads ask together."""
    value = _MODELS.get(key)
    if value is None:
        with _LOCK:
            value = _MODELS.get(key)
            if value is None:
                value = _MODELS[key] = build()
    return value


def cast_matmul_weights(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Store, once, the weights that autocast would cast to ``dtype`` on every forward.

    Under autocast, ``linear`` / ``bmm`` cast float32 weights at each call: for csmoe_p16 on
    a CPU that copy was ~40 % of a bf16 forward of 8 windows. Linear weights, the patch
    embedding's and the Soft MoE expert stacks feed only such ops, so casting them once
    gives bit-identical outputs under autocast. Biases, norms, tokens, position
    embeddings and routing parameters stay float32. Modifies ``model`` in place.
    """
    from xcsmoe.model.encoder import PatchEmbed
    from xcsmoe.model.soft_moe import Experts

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.data = module.weight.data.to(dtype)
            elif isinstance(module, PatchEmbed):
                module.proj.weight.data = module.proj.weight.data.to(dtype)
            elif isinstance(module, Experts):
                module.fc1_weight.data = module.fc1_weight.data.to(dtype)
                module.fc2_weight.data = module.fc2_weight.data.to(dtype)
    return model


class CompiledEncoder:
    """An encoder whose ``forward_features`` runs through ``torch.compile``; every other
    attribute is the eager model's (the weights are shared, not copied)."""

    __slots__ = ("forward_features", "model")

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.forward_features = torch.compile(model.forward_features)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)
