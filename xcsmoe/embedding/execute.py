"""Execution: run the encoder over every window of every dask block.

One dask task per block computes one *packed* array ``(time, window_rows, window_cols,
width)`` holding, per window, its valid-pixel fraction followed by the flattened fields
of a head (e.g. ``cls`` and ``tokens``). The public variables are lazy slices and
reshapes of that array, so asking for ``cls`` and ``tokens`` together runs the model
once per window.

A window in which one sensor has no valid pixel (e.g. a time step without a paired S1
acquisition) is embedded from the other sensor(s) alone: features depend only on their own
sensor's pixels, so they equal a single-sensor run, and the missing sensor's features are
NaN. ``valid_fraction`` is the share of pixels valid in every sensor embedded there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import torch

from xcsmoe.embedding.plan import EmbedPlan
from xcsmoe.embedding.precision import compute_precision, resolve_dtype
from xcsmoe.embedding.runtime import ModelSpec, cached_model, resolve_device

CLS_DIMS = ("cls_y", "cls_x")


@dataclass(frozen=True)
class Field:
    """One per-window output of a head, e.g. ``tokens`` of shape ``(g, g, D)``."""

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class PackedLayout:
    """Column layout of the packed array: ``[valid_fraction, field_0..., field_1..., ...]``."""

    fields: tuple[Field, ...]

    @property
    def width(self) -> int:
        return 1 + sum(f.size for f in self.fields)

    def slice_of(self, name: str) -> tuple[slice, Field]:
        start = 1
        for field in self.fields:
            if field.name == name:
                return slice(start, start + field.size), field
            start += field.size
        raise KeyError(name)


@dataclass(frozen=True)
class Head:
    """What to extract from a forward pass: the embedding or the expert routing."""

    kind: str  # "embedding" | "routing"
    sensors: tuple[str, ...]
    grid: int  # tokens per window side
    dim: int  # embedding dim per sensor, or number of experts for routing
    routing_sensor: str = "s2"
    routing_layer: int = -1

    @property
    def layout(self) -> PackedLayout:
        if self.kind == "embedding":
            width = self.dim * len(self.sensors)
            return PackedLayout(
                (Field("cls", (width,)), Field("tokens", (self.grid, self.grid, width)))
            )
        return PackedLayout((Field("expert_share", (self.grid, self.grid, self.dim)),))

    def extract(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward one batch of windows → ``(B, layout.width - 1)`` float32.

        ``inputs`` may hold a subset of :attr:`sensors`; the features of the others are NaN.
        """
        routing = self.kind == "routing"
        out = model.forward_features(**inputs, return_routing=routing)
        first = next(iter(inputs.values()))
        batch = first.shape[0]
        if routing:
            # (B, 1 + g*g, E): combine-weight share per token and expert; drop [CLS].
            share = out.routing[self.routing_sensor][self.routing_layer][:, 1:, :]
            return share.float().reshape(batch, -1)
        missing_cls = first.new_full((batch, self.dim), math.nan, dtype=torch.float32)
        missing_tokens = first.new_full(
            (batch, self.grid * self.grid, self.dim), math.nan, dtype=torch.float32
        )
        cls = torch.cat(
            [out.cls[s].float() if s in out.cls else missing_cls for s in self.sensors], -1
        )
        tokens = torch.cat(
            [out.tokens[s].float() if s in out.tokens else missing_tokens for s in self.sensors], -1
        )
        return torch.cat([cls, tokens.reshape(batch, -1)], dim=1)


@dataclass(frozen=True)
class WindowJob:
    """Everything a block task needs; small and picklable (no model inside)."""

    spec: ModelSpec
    head: Head
    window: int
    channels: tuple[tuple[str, int], ...]  # (sensor, number of channels) in input order
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"  # the client passes the resolved name, so workers cannot differ
    compile: bool = False


def split_windows(block: np.ndarray, window: int) -> np.ndarray:
    """``(T, rows*W, cols*W, C)`` → ``(T*rows*cols, C, W, W)`` in row-major window order."""
    t, h, w, c = block.shape
    rows, cols = h // window, w // window
    windows = block.reshape(t, rows, window, cols, window, c)
    return windows.transpose(0, 1, 3, 5, 2, 4).reshape(t * rows * cols, c, window, window)


def run_windows(windows: np.ndarray, job: WindowJob) -> np.ndarray:
    """Embed ``(N, C, W, W)`` windows (NaN allowed) → packed ``(N, width)`` float32.

    NaN/inf pixels are replaced by 0 (the band mean after normalisation) before the
    model sees them. A sensor without a single valid pixel in a window is left out of
    that window (its features NaN); windows left with no sensor get NaN outputs.
    """
    finite = np.isfinite(windows)
    if not finite.all() and np.isinf(windows).any():
        warnings.warn(
            "input holds ±inf values; they are treated as missing, like NaN.",
            UserWarning,
            stacklevel=2,
        )
    valid, present = _validity(finite, job.channels)
    packed = np.full((windows.shape[0], job.head.layout.width), np.nan, dtype=np.float32)
    packed[:, 0] = valid.mean(axis=(1, 2), dtype=np.float64)
    if windows.shape[0] and not present.any():
        warnings.warn(
            "an input block has no valid pixel (all NaN, inf or nodata): its outputs are NaN.",
            UserWarning,
            stacklevel=2,
        )
        return packed
    device = resolve_device(job.device)
    dtype = resolve_dtype(job.dtype, device)
    model = cached_model(job.spec, device, dtype=dtype, compile=job.compile)
    clean = np.where(finite, windows, 0).astype(np.float32, copy=False)
    for combination in np.unique(present[present.any(axis=1)], axis=0):
        sensors = {s for (s, _), used in zip(job.channels, combination, strict=True) if used}
        todo = np.flatnonzero((present == combination).all(axis=1))
        with torch.inference_mode():
            for start in range(0, todo.size, job.batch_size):
                index = todo[start : start + job.batch_size]
                batch = torch.from_numpy(clean[index]).to(device, non_blocking=True)
                inputs = _split_sensors(batch, job.channels, sensors)
                with compute_precision(dtype, device):
                    features = job.head.extract(model, inputs)
                packed[index, 1:] = features.cpu().numpy()
    return packed


def _validity(
    finite: np.ndarray, channels: Sequence[tuple[str, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per window, the valid pixels ``(N, W, W)`` and which sensors are present ``(N, S)``.

    A sensor is present in a window when it has at least one valid pixel there; a pixel is
    valid when every channel of every present sensor is finite.
    """
    n, _, height, width = finite.shape
    valid = np.ones((n, height, width), dtype=bool)
    present = np.zeros((n, len(channels)), dtype=bool)
    start = 0
    for i, (_, count) in enumerate(channels):
        sensor_valid = finite[:, start : start + count].all(axis=1)
        present[:, i] = sensor_valid.any(axis=(1, 2))
        valid &= sensor_valid | ~present[:, i, None, None]
        start += count
    valid &= present.any(axis=1)[:, None, None]
    return valid, present


def run_block(block: np.ndarray, job: WindowJob) -> np.ndarray:
    """Dask block function: ``(T, rows*W, cols*W, C)`` → ``(T, rows, cols, width)``."""
    t, h, w, _ = block.shape
    rows, cols = h // job.window, w // job.window
    packed = run_windows(split_windows(np.asarray(block), job.window), job)
    return packed.reshape(t, rows, cols, -1)


def packed_array(
    cube: da.Array, plan: EmbedPlan, job: WindowJob, *, gpu_resources: bool = False
) -> da.Array:
    """Lazy packed outputs of a ``(T, Y, X, C)`` cube laid out as ``plan`` says."""
    rows, cols = plan.covered_shape
    height, width = cube.shape[1:3]
    if plan.edge == "pad":
        cube = da.pad(
            cube,
            ((0, 0), (0, rows - height), (0, cols - width), (0, 0)),
            mode="constant",
            constant_values=np.nan,
        )
    else:
        cube = cube[:, :rows, :cols, :]
    chunk_rows, chunk_cols = plan.chunk_pixels
    cube = cube.rechunk((1, chunk_rows, chunk_cols, -1))
    out_chunks = (
        cube.chunks[0],
        tuple(c // plan.window for c in cube.chunks[1]),
        tuple(c // plan.window for c in cube.chunks[2]),
        (job.head.layout.width,),
    )
    annotations = {"resources": {"GPU": 1}} if gpu_resources else {}
    with dask.annotate(**annotations):
        return da.map_blocks(
            run_block,
            cube,
            job=job,
            chunks=out_chunks,
            dtype=np.float32,
            # unique per cube and job: a fixed name would merge the graphs of two cubes,
            # layers or weights computed together into one result
            name=f"csmoe-{job.head.kind}-{dask.base.tokenize(cube, job)}",
            meta=np.empty((0, 0, 0, 0), dtype=np.float32),
        )


def unpack(
    packed: Any, layout: PackedLayout, name: str, token_shape: tuple[int, int] | None = None
) -> Any:
    """One field of the packed array (lazy, or one computed block), channels first.

    Vector fields ``(width,)`` → ``(T, width, rows, cols)``; grid fields ``(g, g, d)`` →
    ``(T, d, rows*g, cols*g)``: tokens stitched back into one image, then cropped to
    ``token_shape`` (the token grid), which removes the padding of partial edge windows.
    """
    if name == "valid_fraction":
        return packed[..., 0]
    columns, field = layout.slice_of(name)
    values = packed[..., columns]
    t, rows, cols = packed.shape[:3]
    if len(field.shape) == 1:
        return values.transpose(0, 3, 1, 2)
    g, _, d = field.shape
    grid = values.reshape((t, rows, cols, g, g, d))
    image = grid.transpose(0, 5, 1, 3, 2, 4).reshape((t, d, rows * g, cols * g))
    if token_shape is None:
        return image
    return image[:, :, : token_shape[0], : token_shape[1]]


def unpack_variables(
    packed: Any,
    layout: PackedLayout,
    token_shape: tuple[int, int],
    output: Sequence[str],
) -> dict[str, tuple[tuple[str, ...], Any]]:
    """The public variables of ``packed`` (lazy dask array or one computed numpy block)."""
    out: dict[str, tuple[tuple[str, ...], Any]] = {}
    if "tokens" in output:
        tokens = unpack(packed, layout, "tokens", token_shape)
        out["tokens"] = (("time", "embedding", "y", "x"), tokens)
    if "cls" in output:
        out["cls"] = (("time", "embedding", *CLS_DIMS), unpack(packed, layout, "cls"))
    out["valid_fraction"] = (("time", *CLS_DIMS), unpack(packed, layout, "valid_fraction"))
    return out


def channel_layout(plan: EmbedPlan) -> tuple[tuple[str, int], ...]:
    """``(sensor, channels)`` in the order the plan stacks its variables."""
    return tuple((s, len(b)) for s, b in zip(plan.sensors, plan.sensor_bands, strict=True))


def _split_sensors(
    batch: torch.Tensor, channels: Sequence[tuple[str, int]], sensors: set[str]
) -> dict[str, torch.Tensor]:
    """``(B, C, W, W)`` → ``{sensor: (B, C_sensor, W, W)}`` for the ``sensors`` kept."""
    inputs, start = {}, 0
    for sensor, count in channels:
        if sensor in sensors:
            inputs[sensor] = batch[:, start : start + count]
        start += count
    return inputs
