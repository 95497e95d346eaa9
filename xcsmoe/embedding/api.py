"""``embed`` and ``expert_usage``: lazy, georeferenced CSMoE outputs of an S1/S2 cube.

Both follow metadata → plan → execution: every argument is checked on the client
(:mod:`xcsmoe.embedding.checks`; the weights are matched against the model from the
checkpoint's header), the cube's orientation, nodata, S1 pairing and processing level are
read (:mod:`xcsmoe.embedding.inputs`), its variables, dtypes and geobox are laid out by
:mod:`xcsmoe.embedding.plan`; :mod:`xcsmoe.embedding.execute` builds one dask task per
block; nothing runs until the result is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from xcsmoe.embedding import checks, inputs
from xcsmoe.embedding.checks import OUTPUTS, check_output
from xcsmoe.embedding.execute import (
    CLS_DIMS,
    Head,
    WindowJob,
    channel_layout,
    packed_array,
    unpack,
    unpack_variables,
)
from xcsmoe.embedding.plan import Edge, EmbedPlan, plan_embedding, select_sensors
from xcsmoe.embedding.runtime import (
    ModelSpec,
    autocast_name,
    default_batch_size,
    resolve_device,
    resolve_model,
)
from xcsmoe.errors import ConfigError, CRSError, InputError, expected


@dataclass(frozen=True)
class _Prepared:
    """A checked cube and its plan, shared by :func:`embed` and :func:`expert_usage`."""

    ds: xr.Dataset
    plan: EmbedPlan
    spec: ModelSpec
    config: Any
    has_time: bool


def embed(
    ds: xr.Dataset,
    patch: int = 16,
    *,
    model: str | None = None,
    weights: str | Path | None = None,
    sensors: str | Sequence[str] = "auto",
    output: str | Sequence[str] = OUTPUTS,
    window: int | None = None,
    edge: Edge = "pad",
    batch_size: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    compile: bool = False,
    normalise: bool = True,
    chunks: int | tuple[int, int] | None = None,
    seed: int = 0,
    gpu_resources: bool = False,
) -> xr.Dataset:
    """CSMoE embeddings of a cube, lazily, on exact grids.

    Every argument is checked before any task is built, the weights included (matched
    against the model from the checkpoint's header); sizes must be ints (``64.0`` and
    ``"64"`` are refused).

    Args:
        ds: cube with dims ``(time, y, x)`` or ``(y, x)``, S2 bands ``B02 … B8A`` and/or
            S1 ``vv vh``, raw values (``normalise=True``) or standardised ones, a
            projected CRS. Values equal to a band's nodata (``nodata``/``_FillValue``
            attribute or encoding; integer S2 without one: 0) and ±inf are missing, like
            NaN. South-up (ascending ``y``) or east-to-west cubes are flipped to north-up:
            outputs always lie on north-up grids.
        patch: patch size P; must match the model (default model ``csmoe_p{patch}``).
        model: registry name; default the variant stored in the checkpoint, else
            ``csmoe_p{patch}``.
        weights: checkpoint path, ``https://`` URL (downloaded once into the cache;
            ``#sha256=<hex>`` verifies it) or registered name (:func:`xcsmoe.list_weights`),
            or ``"random"`` for a seeded untrained network. A
            checkpoint's stored config (variant, band order) is the model's.
        sensors: ``"auto"`` (every complete sensor; S1 only if paired at some time step,
            per ``s1_time``), ``"s1"``, ``"s2"`` or ``"s1+s2"``; with two sensors the
            per-sensor features are concatenated (S1 first). A window in which a sensor
            has no valid pixel (e.g. a time step without paired S1) is embedded from the
            other sensor alone, the missing sensor's features NaN (with a warning).
        output: any of ``"cls"``, ``"tokens"``; a bare ``"cls"`` means ``("cls",)``.
        window: model window W in pixels (an int multiple of P; default the model's image
            size). The sin-cos position embeddings are recomputed for W/P × W/P tokens.
        edge: ``"pad"`` (partial edge windows, NaN-padded, see ``valid_fraction``) or
            ``"drop"`` (crop to whole windows).
        batch_size: windows per forward pass; default 8 on a CPU, 64 on a GPU.
        device: ``"auto"`` (CUDA when this machine has it), ``"cpu"``, ``"cuda:0"``...;
            resolved and checked on this machine unless ``gpu_resources=True``.
        dtype: ``"auto"`` (bf16 autocast where the device computes bf16 natively: CUDA,
            CPUs with AVX512-BF16 or AMX; float32 elsewhere), ``"float32"``,
            ``"bfloat16"`` or ``"float16"``. Resolved here, recorded in ``attrs["dtype"]``.
            bf16 keeps every [CLS] and token vector within cosine 0.999 of float32
            (measured ≥ 0.9999 on the real sample pairs, see ``docs/architecture.md``).
            float32 is full IEEE float32 even if another library lowered torch's matmul
            precision (``torch.set_float32_matmul_precision``).
        compile: run the encoder through ``torch.compile`` (compiled once per worker
            process and dtype; the first window of a worker pays the compile, tens of
            seconds for csmoe_p16). Off by default: on the CPUs measured it is not faster.
        normalise: standardise raw values with :func:`xcsmoe.normalise` first (warns when
            the cube's processing level is not the statistics' Level-2A).
        chunks: pixels per spatial dask chunk, an int or a ``(y, x)`` pair (rounded to
            whole windows); default the cube's own chunks.
        seed: seed of ``weights="random"`` (an int >= 0).
        gpu_resources: annotate tasks with the Dask resource ``GPU=1`` (the device is then
            the workers', not checked here).

    Returns:
        Dataset with ``tokens`` ``(time, embedding, y, x)`` on ``geobox.zoom_out(P)``,
        ``cls`` ``(time, embedding, cls_y, cls_x)`` and ``valid_fraction``
        ``(time, cls_y, cls_x)`` on ``geobox.zoom_out(W)``, CRS in ``spatial_ref``.
    """
    output = check_output(output)
    graph = embedding_graph(
        ds, patch, model=model, weights=weights, sensors=sensors, window=window, edge=edge,
        chunks=chunks, seed=seed, batch_size=batch_size, device=device, dtype=dtype,
        compile=compile, normalise=normalise, gpu_resources=gpu_resources,
    )  # fmt: skip
    return graph.to_dataset(output)


@dataclass(frozen=True)
class EmbeddingGraph:
    """The planned run: checked cube, plan, model spec, head and the lazy packed array.

    ``settings`` holds every execution option that can change an output value
    (``normalise``, ``dtype`` as really used, ``device`` type); job fingerprints must
    include them. ``compiled`` tells whether the encoder runs through ``torch.compile``
    (float32 rounding differences only, like other hardware: not part of a fingerprint).
    """

    prepared: _Prepared
    head: Head
    packed: da.Array
    settings: dict[str, Any]
    compiled: bool = False

    @property
    def plan(self) -> EmbedPlan:
        return self.prepared.plan

    @property
    def token_shape(self) -> tuple[int, int]:
        shape = self.plan.token_geobox.shape
        return shape.y, shape.x

    def to_dataset(self, output: str | Sequence[str] = OUTPUTS) -> xr.Dataset:
        output = check_output(output)
        variables = unpack_variables(self.packed, self.head.layout, self.token_shape, output)
        result = xr.Dataset(variables, coords=_coords(self.prepared))
        result.attrs.update(_attrs(self))
        return result if self.prepared.has_time else result.isel(time=0, drop=True)


def embedding_graph(
    ds: xr.Dataset,
    patch: int = 16,
    *,
    model: str | None = None,
    weights: str | Path | None = None,
    sensors: str | Sequence[str] = "auto",
    window: int | None = None,
    edge: Edge = "pad",
    chunks: int | tuple[int, int] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    compile: bool = False,
    normalise: bool = True,
    gpu_resources: bool = False,
    routing_layer: int | None = None,
) -> EmbeddingGraph:
    """Plan and build (lazily) the run of :func:`embed`, or of :func:`expert_usage` when
    ``routing_layer`` is given (then ``sensors`` must name one sensor).

    Every argument is checked before anything is built; see :func:`embed`.
    """
    patch = checks.as_int("patch", patch)
    window = checks.check_window(window, patch)
    chunk_pair = checks.check_chunks(chunks)
    sensors = checks.check_sensors(sensors)
    edge = checks.check_edge(edge)  # type: ignore[assignment]
    if batch_size is not None:
        batch_size = checks.as_int("batch_size", batch_size)
    seed = checks.as_int("seed", seed, minimum=0)
    normalise = checks.check_flag("normalise", normalise)
    compile = checks.check_flag("compile", compile)
    gpu_resources = checks.check_flag("gpu_resources", gpu_resources)
    resolved = resolve_device(device, gpu_resources=gpu_resources)
    # resolved here, once: every worker runs (and the fingerprint records) this precision
    dtype_name = autocast_name(dtype, resolved, local=not gpu_resources)
    batch_size = batch_size or default_batch_size(resolved)
    prepared = _prepare(
        ds, patch, model=model, weights=weights, sensors=sensors, window=window, edge=edge,
        chunks=chunk_pair, seed=seed, normalise=normalise,
    )  # fmt: skip
    plan, config = prepared.plan, prepared.config
    if routing_layer is None:
        head = Head("embedding", plan.sensors, plan.grid_per_window, config.embed_dim)
    else:
        layer = checks.check_layer(routing_layer, config, plan.sensors[0])
        head = Head(
            "routing", plan.sensors, plan.grid_per_window, config.num_experts,
            routing_sensor=plan.sensors[0], routing_layer=layer,
        )  # fmt: skip
    job = WindowJob(
        spec=prepared.spec,
        head=head,
        window=plan.window,
        channels=channel_layout(plan),
        batch_size=batch_size,
        device=str(resolved),
        dtype=dtype_name,
        compile=compile,
    )
    packed = _run(prepared, job, normalise, gpu_resources)
    settings = {"normalise": normalise, "dtype": dtype_name, "device": resolved.type}
    return EmbeddingGraph(prepared, head, packed, settings, compiled=compile)


def expert_usage(
    ds: xr.Dataset,
    patch: int = 16,
    *,
    sensor: str = "s2",
    layer: int = -1,
    model: str | None = None,
    weights: str | Path | None = None,
    window: int | None = None,
    edge: Edge = "pad",
    batch_size: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    compile: bool = False,
    normalise: bool = True,
    chunks: int | tuple[int, int] | None = None,
    seed: int = 0,
) -> xr.DataArray:
    """Per token, the share of Soft MoE combine weight each expert receives.

    ``layer`` indexes the Soft MoE layers on ``sensor``'s encoder path (modality-specific
    layers first, then the shared cross-sensor ones; ``-1`` = last). Returns a lazy
    DataArray ``(time, expert, y, x)`` on the token grid whose shares sum to 1 over
    ``expert``, with coordinate ``dominant_expert`` ``(time, y, x)`` (-1 where no valid
    pixel). Other arguments as for :func:`embed` (``dtype="auto"``: bf16 shares where the
    device computes bf16 natively; they still sum to 1 within 1e-2).
    """
    if sensor not in ("s1", "s2"):
        raise ConfigError(expected("sensor", '"s1" or "s2"', sensor))
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise ConfigError(expected("layer", "an int (Soft MoE layer index, -1 = last)", layer))
    graph = embedding_graph(
        ds, patch, model=model, weights=weights, sensors=sensor, window=window, edge=edge,
        chunks=chunks, seed=seed, batch_size=batch_size, device=device, dtype=dtype,
        compile=compile, normalise=normalise, routing_layer=layer,
    )  # fmt: skip
    prepared, config = graph.prepared, graph.prepared.config
    share = unpack(graph.packed, graph.head.layout, "expert_share", graph.token_shape)
    coords = {k: v for k, v in _coords(prepared).items() if k not in CLS_DIMS}
    usage = xr.DataArray(
        share, dims=("time", "expert", "y", "x"), coords=coords, name="expert_share"
    ).assign_coords(expert=np.arange(config.num_experts))
    dominant = usage.fillna(-1.0).argmax("expert").where(usage.notnull().all("expert"), -1)
    usage = usage.assign_coords(dominant_expert=dominant.astype(np.int16))
    usage.attrs.update(_attrs(graph), layer=layer, sensor=sensor)
    return usage if prepared.has_time else usage.isel(time=0, drop=True)


def _prepare(
    ds: xr.Dataset,
    patch: int,
    *,
    model: str | None,
    weights: str | Path | None,
    sensors: str | Sequence[str],
    window: int | None,
    edge: Edge,
    chunks: tuple[int | None, int | None] | None,
    seed: int,
    normalise: bool,
) -> _Prepared:
    if not isinstance(ds, xr.Dataset):
        raise InputError(expected("ds", "an xarray.Dataset", type(ds).__name__))
    spec, config = resolve_model(model, weights, patch=patch, seed=seed)
    if model is None and not spec.is_random and patch != config.patch_size:
        raise ConfigError(
            expected(
                "patch",
                f"{config.patch_size}, the patch size of {config.name} (the variant the "
                "checkpoint was saved as)",
                patch,
                f"Pass patch={config.patch_size}.",
            )
        )
    ds = inputs.north_up(ds)
    geobox = _geobox(ds)
    has_time = "time" in ds.dims
    chunk_pair = _existing_chunks(ds, geobox) if chunks is None else chunks
    chosen = select_sensors(list(ds.data_vars), sensors)
    chosen = inputs.pair_sensors(ds, chosen, sensors)
    plan = plan_embedding(
        variables=list(ds.data_vars),
        dtypes={k: v.dtype for k, v in ds.data_vars.items()},
        geobox=geobox,
        patch=patch,
        window=window or config.img_size,
        model_patch=config.patch_size,
        sensors=chosen,
        edge=edge,
        chunks=chunk_pair,
        bands={s: config.bands(s) for s in chosen},
    )
    if normalise:
        inputs.check_processing_level(ds, plan.sensors)
    ds = inputs.mask_nodata(ds, plan.variables)
    inputs.check_finite(ds, plan.variables)
    if not has_time:
        ds = ds.expand_dims("time")
    return _Prepared(ds, plan, spec, config, has_time)


def _run(prepared: _Prepared, job: WindowJob, normalise: bool, gpu_resources: bool) -> da.Array:
    plan = prepared.plan
    cube = prepared.ds[list(plan.variables)]
    if normalise:
        from xcsmoe.sensors import normalise as standardise

        cube = standardise(cube)
    y_dim, x_dim = _spatial_dims(cube)
    arrays = [
        _as_dask(cube[v].transpose("time", y_dim, x_dim)).astype(np.float32) for v in plan.variables
    ]
    return packed_array(da.stack(arrays, axis=-1), plan, job, gpu_resources=gpu_resources)


def _geobox(ds: xr.Dataset) -> GeoBox | None:
    try:
        geobox = ds.odc.geobox
    except Exception as error:  # odc raises on malformed coordinates
        raise CRSError(
            expected("ds", "a georeferenced dataset", f"{type(error).__name__}: {error}")
        ) from error
    return geobox if isinstance(geobox, GeoBox) else None


def _spatial_dims(ds: xr.Dataset) -> tuple[str, str]:
    dims = ds.odc.spatial_dims
    if dims is None:
        raise CRSError(expected("ds", "spatial dims (y, x)", tuple(ds.dims)))
    return dims


def _existing_chunks(ds: xr.Dataset, geobox: GeoBox | None) -> tuple[int | None, int | None]:
    if geobox is None or not ds.chunks:
        return None, None
    y_dim, x_dim = _spatial_dims(ds)
    chunks = ds.chunksizes
    return (
        chunks[y_dim][0] if y_dim in chunks else None,
        chunks[x_dim][0] if x_dim in chunks else None,
    )


def _as_dask(array: xr.DataArray) -> da.Array:
    data = array.data
    return data if isinstance(data, da.Array) else da.from_array(data, chunks=-1)


def _coords(prepared: _Prepared) -> dict[str, Any]:
    plan = prepared.plan
    coords: dict[str, Any] = dict(xr_coords(plan.token_geobox))
    coords.update(xr_coords(plan.cls_geobox, dims=CLS_DIMS))
    coords["time"] = prepared.ds["time"].values
    return coords


def _attrs(graph: EmbeddingGraph) -> dict[str, Any]:
    plan, spec = graph.plan, graph.prepared.spec
    return {
        "model": spec.name,
        "weights": spec.weights,
        "random_weights": int(spec.is_random),
        "sensors": "+".join(plan.sensors),
        "patch": plan.patch,
        "window": plan.window,
        "edge": plan.edge,
        "cls_transform": list(plan.cls_geobox.affine)[:6],
        "data_bounds": [float(v) for v in plan.valid_geobox.boundingbox],  # the pixels embedded
        "dtype": graph.settings["dtype"],  # the compute precision really used
        "compiled": int(graph.compiled),
    }
