"""The model on a worker: described by a small picklable spec, built once, cached.

Dask tasks carry a :class:`ModelSpec` (a few strings), never the network itself. The
first task on a worker process builds the model; later tasks on any thread of that
process reuse it (:func:`cached_model`).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from xcsmoe.errors import ConfigError, WeightsRequiredError, expected

if TYPE_CHECKING:
    from xcsmoe.model.config import CSMoEConfig

RANDOM_WEIGHTS = "random"
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "float32": None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""Accepted ``dtype=`` names → autocast dtype (``None``: plain float32)."""

_MODELS: dict[tuple[ModelSpec, str], torch.nn.Module] = {}
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
    from xcsmoe.model.registry import list_models

    if not isinstance(model, str) or model not in list_models():
        raise ConfigError(expected("model", f"one of {list_models()}", model))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(expected("seed", "an int >= 0", seed))
    if weights is None:
        raise WeightsRequiredError(
            expected(
                "weights",
                "a checkpoint path (saved with xcsmoe.save_checkpoint, or a CSMAE .ckpt)",
                None,
                "Pretrain CSMoE with xcsmoe's pretraining model and save it, or pass "
                'weights="random" to test the plumbing with an untrained network.',
            )
        )
    if not isinstance(weights, (str, Path)):
        raise ConfigError(
            expected("weights", 'a checkpoint path or "random"', type(weights).__name__)
        )
    if str(weights) != RANDOM_WEIGHTS:
        path = Path(weights).expanduser().resolve()
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

    ``model=None`` takes the variant stored in the checkpoint, else ``csmoe_p{patch}``.
    A checkpoint is matched against the variant from its header (no weight is read):
    another variant or a damaged file raises :class:`~xcsmoe.errors.CheckpointError` now.
    The config returned is the checkpoint's own when it stores one (its band order).
    """
    from xcsmoe.model.checkpoint import match_checkpoint, read_checkpoint_header
    from xcsmoe.model.registry import model_config

    if model is not None and not isinstance(model, str):
        raise ConfigError(expected("model", "a variant name (str) or None", type(model).__name__))
    name = model
    if name is None and isinstance(weights, (str, Path)) and str(weights) != RANDOM_WEIGHTS:
        path = Path(weights).expanduser()
        stored = read_checkpoint_header(path)[1] if path.is_file() else None
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
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


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


def autocast_name(dtype: str | torch.dtype | None, device: torch.device) -> str:
    """The dtype really used, by name: ``dtype`` checked, or the default for ``device``
    (bfloat16 on CUDA, float32 elsewhere)."""
    if dtype is None:
        return "bfloat16" if device.type == "cuda" else "float32"
    if not isinstance(dtype, (str, torch.dtype)):
        raise ConfigError(expected("dtype", f"one of {sorted(AUTOCAST_DTYPES)} or None", dtype))
    key = str(dtype).removeprefix("torch.")
    if key not in AUTOCAST_DTYPES:
        raise ConfigError(expected("dtype", f"one of {sorted(AUTOCAST_DTYPES)} or None", dtype))
    return key


def resolve_autocast(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 on CUDA by default, none (float32) on CPU."""
    return AUTOCAST_DTYPES[autocast_name(dtype, device)]


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


def cached_model(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    """The model for ``spec`` on ``device``, built at most once per process."""
    key = (spec, str(device))
    model = _MODELS.get(key)
    if model is None:
        with _LOCK:
            model = _MODELS.get(key)
            if model is None:
                model = build_model(spec).to(device)
                _MODELS[key] = model
    return model
