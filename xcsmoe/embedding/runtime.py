"""The model on a worker: described by a small picklable spec, built once, cached.

Dask tasks carry a :class:`ModelSpec` (a few strings), never the network itself. The
first task on a worker process builds the model; later tasks on any thread of that
process reuse it (:func:`cached_model`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from xcsmoe.errors import ConfigError, WeightsRequiredError, expected

RANDOM_WEIGHTS = "random"

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

    if model not in list_models():
        raise ConfigError(expected("model", f"one of {list_models()}", model))
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
    if str(weights) != RANDOM_WEIGHTS:
        path = Path(weights).expanduser().resolve()
        if not path.exists():
            raise WeightsRequiredError(
                expected("weights", "an existing checkpoint path", str(weights))
            )
        weights = str(path)
    return ModelSpec(name=model, weights=str(weights), seed=seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(expected("device", '"auto", "cpu" or an available CUDA device', device))
    return resolved


def resolve_autocast(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 on CUDA by default, none (float32) on CPU."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else None
    choices = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    key = str(dtype).removeprefix("torch.")
    if key not in choices:
        raise ConfigError(expected("dtype", f"one of {sorted(choices)}", dtype))
    return choices[key]


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
