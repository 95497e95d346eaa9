"""Argument checks of ``embed``/``expert_usage``: pure, cheap, run before any task exists.

Type rules, on purpose:

* sizes (``patch``, ``window``, ``chunks``, ``batch_size``) and ``seed`` must be ints
  (Python or NumPy integers). Floats are refused even when integral (``window=64.0``):
  a float size is usually a computed value that was meant to be rounded somewhere;
  ``bool`` is refused too.
* ``output`` is a sequence of names; a bare string naming one output (``output="cls"``)
  is accepted on purpose and means ``("cls",)``.
* ``sensors`` is ``"auto"``, ``"s1"``, ``"s2"``, ``"s1+s2"`` or a sequence of ``"s1"``/``"s2"``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from xcsmoe.errors import ConfigError, expected

OUTPUTS = ("cls", "tokens")
SENSOR_CHOICES = '"auto", "s1", "s2", "s1+s2" or a sequence of "s1"/"s2"'


def as_int(name: str, value: Any, *, minimum: int = 1, fix: str | None = None) -> int:
    """``value`` as an int >= ``minimum``; floats, strings and bools are refused."""
    if isinstance(value, bool):
        raise ConfigError(expected(name, f"an int >= {minimum}", value, fix))
    try:
        number = operator.index(value)  # ints and NumPy integers, never floats
    except TypeError:
        hint = fix
        if isinstance(value, float) and value.is_integer():
            hint = f"Pass {name}={int(value)} (an int, not a float)."
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            hint = f"Pass {name}={int(value)} (an int, not a string)."
        raise ConfigError(expected(name, f"an int >= {minimum}", value, hint)) from None
    if number < minimum:
        raise ConfigError(expected(name, f"an int >= {minimum}", value, fix))
    return number


def check_window(window: Any, patch: int) -> int | None:
    """``None`` (the model's image size) or a positive int multiple of ``patch``."""
    if window is None:
        return None
    fix = f"Pass a multiple of the patch size, e.g. window={max(patch, 4 * patch)}."
    size = as_int("window", window, fix=fix)
    if size % patch:
        lower = max(patch, size // patch * patch)
        raise ConfigError(
            expected(
                "window",
                f"a positive multiple of the patch size {patch}",
                window,
                f"Pass window={lower} or {lower + patch}.",
            )
        )
    return size


def check_chunks(chunks: Any) -> tuple[int | None, int | None] | None:
    """``None``, an int, or a pair of ints/None: pixels per spatial chunk (y, x)."""
    if chunks is None:
        return None
    if isinstance(chunks, Sequence) and not isinstance(chunks, (str, bytes)):
        if len(chunks) != 2:
            raise ConfigError(expected("chunks", "an int, a (y, x) pair or None", chunks))
        y, x = (None if c is None else as_int("chunks", c) for c in chunks)
        return y, x
    size = as_int("chunks", chunks)
    return size, size


def check_output(output: Any) -> tuple[str, ...]:
    """A non-empty subset of :data:`OUTPUTS`, as a tuple; ``"cls"`` alone means ``("cls",)``."""
    if isinstance(output, str):
        output = (output,)
    if not isinstance(output, Sequence) or isinstance(output, bytes):
        raise ConfigError(expected("output", f"a non-empty subset of {OUTPUTS}", output))
    names = tuple(output)
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown or not names:
        raise ConfigError(expected("output", f"a non-empty subset of {OUTPUTS}", names))
    return tuple(n for n in OUTPUTS if n in names)


def check_sensors(sensors: Any) -> str | tuple[str, ...]:
    """The ``sensors`` argument, type-checked (resolved against the cube by the plan)."""
    if isinstance(sensors, str):
        parts = sensors.split("+")
        if sensors == "auto" or (parts and all(p in ("s1", "s2") for p in parts)):
            return sensors
        raise ConfigError(expected("sensors", SENSOR_CHOICES, sensors))
    if isinstance(sensors, Sequence) and sensors and all(s in ("s1", "s2") for s in sensors):
        return tuple(sensors)
    raise ConfigError(expected("sensors", SENSOR_CHOICES, sensors))


def check_flag(name: str, value: Any) -> bool:
    """A real bool (``normalise="no"`` would otherwise be true)."""
    if not isinstance(value, bool):
        raise ConfigError(expected(name, "True or False", value))
    return value


def check_edge(edge: Any) -> str:
    if edge not in ("pad", "drop"):
        raise ConfigError(expected("edge", '"pad" or "drop"', edge))
    return str(edge)


def moe_layers(config: Any) -> int:
    """Soft MoE layers on one sensor's encoder path (modality-specific + shared)."""
    return config.depth_specific + config.depth_shared if config.num_experts > 0 else 0


def check_layer(layer: Any, config: Any, sensor: str) -> int:
    """``layer`` indexes the Soft MoE layers on ``sensor``'s path (negative from the end)."""
    count = moe_layers(config)
    if count == 0:
        raise ConfigError(
            expected(
                "model",
                "a model with Soft MoE layers",
                config.name,
                f"{config.name} is dense (num_experts=0): it has no expert routing to map.",
            )
        )
    parts = f"{config.depth_specific} {sensor.upper()}-specific, then {config.depth_shared} shared"
    if isinstance(layer, bool):
        raise ConfigError(expected("layer", f"an int in [{-count}, {count - 1}]", layer))
    try:
        index = operator.index(layer)
    except TypeError:
        raise ConfigError(
            expected("layer", f"an int in [{-count}, {count - 1}] ({parts})", layer)
        ) from None
    if not -count <= index < count:
        raise ConfigError(
            expected(
                "layer",
                f"an int in [{-count}, {count - 1}]: {config.name} has {count} Soft MoE "
                f"layers on the {sensor} path ({parts})",
                layer,
            )
        )
    return index
