"""Batch inference: embed a cube into a Zarr v3 store, region by region, resumably.

Plan: the embedding graph (:func:`xcsmoe.embedding.api.embedding_graph`) has one dask block
per ``(time, block row, block column)``; each block is a *region* of the store whose Zarr
chunks belong to it alone, so regions can be written in parallel without locks.

Execution is :mod:`xcsmoe.regionstore`: the store carries the job's fingerprint
(:func:`job_fingerprint`, every setting that changes a stored value) and a
``region_done`` marker per region. Every region is one task on the cluster that computes
its block, writes it, and only then sets its marker. A rerun of the same job skips every
region whose marker is set, so an interrupted job resumes without recomputing and ends
with the same bytes as an uninterrupted one; a job with other settings is refused with
the settings that differ. ``xcsmoe_complete`` turns true once every region is written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from xcsmoe.cluster import check_cluster_args
from xcsmoe.embedding.api import OUTPUTS, EmbeddingGraph, embedding_graph
from xcsmoe.embedding.execute import PackedLayout, unpack_variables
from xcsmoe.errors import ConfigError, expected
from xcsmoe.regionstore import MARKER, RegionReport, StoreSpec, write_region
from xcsmoe.regionstore import run_region_job as _run_region_job
from xcsmoe.storage import StoreLocation, store_location

__all__ = ["MARKER", "REGION_DIMS", "JobReport", "Region", "embed_to_zarr", "job_fingerprint"]

REGION_DIMS = ("time", "region_y", "region_x")
JobReport = RegionReport


@dataclass(frozen=True)
class Region:
    """One block of the output: time index and block row/column."""

    time: int
    row: int
    col: int


@dataclass(frozen=True)
class RegionWriter:
    """Task body: write one computed packed block into the store, then set its marker.

    Holds only the layout (a few numbers), never the graph or the model.
    """

    store: str | StoreLocation
    layout: PackedLayout
    token_shape: tuple[int, int]
    chunk_windows: tuple[int, int]
    grid: int
    output: tuple[str, ...]

    def __call__(self, block: np.ndarray, region: Region) -> Region:
        variables = unpack_variables(block, self.layout, self.token_shape, self.output)
        values = {
            name: (self.selection(region, dims, array.shape), array)
            for name, (dims, array) in variables.items()
        }
        write_region(self.store, values, (region.time, region.row, region.col))
        return region

    def selection(
        self, region: Region, dims: tuple[str, ...], shape: tuple[int, ...]
    ) -> tuple[slice, ...]:
        """Where a region's values go: block offsets along each of ``dims``."""
        rows, cols = self.chunk_windows
        starts = {
            "time": region.time,
            "embedding": 0,
            "cls_y": region.row * rows,
            "cls_x": region.col * cols,
            "y": region.row * rows * self.grid,
            "x": region.col * cols * self.grid,
        }
        return tuple(slice(starts[d], starts[d] + n) for d, n in zip(dims, shape, strict=True))


def embed_to_zarr(
    ds: xr.Dataset,
    store: str | Path,
    *,
    patch: int = 16,
    client: Any = None,
    output: tuple[str, ...] = OUTPUTS,
    overwrite: bool = False,
    progress: bool = True,
    n_workers: int = 2,
    storage_options: Mapping[str, Any] | None = None,
    **embed_kwargs: Any,
) -> JobReport:
    """Embed ``ds`` into the Zarr v3 store at ``store``; resume if it holds the same job.

    Args:
        ds, patch, embed_kwargs: as for :func:`xcsmoe.embed` (``weights=`` required).
        store: where the Zarr store goes: a local path (reachable by every worker) or a
            URL (``s3://``, ``gs://``, ``az://``, ``file://``, ``memory://``, see
            :mod:`xcsmoe.storage`); a new location, an empty folder, or a store of this
            same job.
        storage_options: backend options for a URL ``store`` (e.g. s3fs's
            ``endpoint_url``, ``key``, ``secret``); by default the backend reads its
            environment variables (``AWS_*``) on the client and on every worker.
        client: a ``distributed.Client``, a scheduler address (refused within seconds
            when it does not answer), or ``None`` for a ``LocalCluster`` of
            ``n_workers`` single-threaded processes.
        overwrite: replace a store that holds a different job instead of raising.

    Every argument is checked, and the scheduler reached, before a byte is written; a
    complete store of the same job is left untouched (it may be read-only).
    """
    check_cluster_args(client, n_workers)
    output = _check_output(output)
    location = store_location(store, storage_options)
    graph = embedding_graph(ds, patch, **embed_kwargs)
    spec = store_spec(graph, output)
    writer = RegionWriter(
        store=location,
        layout=graph.head.layout,
        token_shape=graph.token_shape,
        chunk_windows=graph.plan.chunk_windows,
        grid=graph.plan.grid_per_window,
        output=output,
    )
    write = dask.delayed(writer, pure=True)

    def make_task(index: tuple[int, ...]) -> Any:
        return write(graph.packed.blocks[index], Region(*index))

    return _run_region_job(
        location, spec, make_task, client=client, n_workers=n_workers, overwrite=overwrite,
        progress=progress, desc="embedding regions",
    )  # fmt: skip


def store_spec(graph: EmbeddingGraph, output: tuple[str, ...]) -> StoreSpec:
    """Schema, Zarr chunks (one chunk per region and variable), markers and fingerprint."""
    template = graph.to_dataset(output)
    if "time" not in template.dims:
        template = template.expand_dims("time")
    chunk_rows, chunk_cols = graph.plan.chunk_windows
    g = graph.plan.grid_per_window
    chunk_of = {"time": 1, "cls_y": chunk_rows, "cls_x": chunk_cols}
    chunk_of.update(
        y=chunk_rows * g, x=chunk_cols * g, embedding=template.sizes.get("embedding", 1)
    )
    encoding = {
        name: {"chunks": tuple(chunk_of[d] for d in var.dims)}
        for name, var in template.data_vars.items()
    }
    return StoreSpec(
        template=template,
        encoding=encoding,
        marker_dims=REGION_DIMS,
        marker_shape=tuple(int(n) for n in graph.packed.numblocks[:3]),
        fingerprint=job_fingerprint(graph, output),
    )


def iter_regions(graph: EmbeddingGraph) -> Iterator[Region]:
    """Every block of the packed array, in row-major order."""
    times, rows, cols = graph.packed.numblocks[:3]
    for t in range(times):
        for i in range(rows):
            for j in range(cols):
                yield Region(t, i, j)


def job_fingerprint(graph: EmbeddingGraph, output: tuple[str, ...]) -> dict[str, Any]:
    """Identity of a job: every setting that changes a stored value.

    Model, weights (a digest of their contents, not their path), seed, sensors and their
    band order, patch, window,
    edge, chunking, grid (CRS, affine, shape), times, outputs, normalisation and the
    compute dtype really used (``dtype="auto"`` is resolved on the client before this, to
    what every worker runs: bf16 on CUDA and on CPUs with native bf16, else float32).
    ``batch_size``, ``compile`` and the device itself change values only by float32
    rounding and are left out, so a job may resume on other hardware with the same dtype.
    """
    from xcsmoe.embedding.runtime import weights_digest

    plan, spec, settings = graph.plan, graph.prepared.spec, graph.settings
    return {
        "model": spec.name,
        "weights_digest": weights_digest(spec),
        "seed": spec.seed,
        "sensors": list(plan.sensors),
        "bands": [list(bands) for bands in plan.sensor_bands],
        "patch": plan.patch,
        "window": plan.window,
        "edge": plan.edge,
        "chunk_windows": list(plan.chunk_windows),
        "crs": str(plan.geobox.crs),
        "affine": list(plan.geobox.affine)[:6],
        "shape": list(plan.geobox.shape),
        "times": [str(t) for t in graph.prepared.ds["time"].values],
        "output": sorted(output),
        "normalise": bool(settings.get("normalise", True)),
        "dtype": effective_dtype(settings),
    }


def effective_dtype(settings: dict[str, Any]) -> str:
    """The compute dtype the tasks will use, by name: ``settings["dtype"]`` as
    :func:`~xcsmoe.embedding.api.embedding_graph` resolved it; ``"auto"`` (settings built
    by hand) resolves for ``settings["device"]`` as :func:`xcsmoe.embed` would."""
    from xcsmoe.embedding.precision import AUTO, dtype_name
    from xcsmoe.embedding.runtime import autocast_name, resolve_device

    name = dtype_name(settings.get("dtype", AUTO))
    if name != AUTO:
        return name
    gpu_workers = bool(settings.get("gpu_resources"))
    device = resolve_device(str(settings.get("device", "auto")), gpu_resources=gpu_workers)
    return autocast_name(name, device, local=not gpu_workers)


def _check_output(output: Any) -> tuple[str, ...]:
    if isinstance(output, str):
        output = (output,)
    try:
        names = tuple(output)
    except TypeError:
        names = ()
    if not names or not set(names) <= set(OUTPUTS) or not all(isinstance(n, str) for n in names):
        raise ConfigError(expected("output", f"a non-empty subset of {OUTPUTS}", output))
    return tuple(dict.fromkeys(names))
