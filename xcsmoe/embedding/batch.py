"""Batch inference: embed a cube into a Zarr v3 store, region by region, resumably.

Plan: the embedding graph (:func:`xcsmoe.embedding.api.embedding_graph`) has one dask block
per ``(time, block row, block column)``; each block is a *region* of the store whose Zarr
chunks belong to it alone, so regions can be written in parallel without locks.

Execution: the store is created with its full schema, a fingerprint of the job and a
``region_done`` marker array. Every region is one task on the cluster that computes its
block, writes it, and only then sets its marker. A rerun with the same job skips every
region whose marker is set, so an interrupted job resumes without recomputing and ends
with the same bytes as an uninterrupted one. The store's ``xcsmoe_complete`` attribute
stays false until every region is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr
from tqdm.auto import tqdm

from xcsmoe.embedding.api import OUTPUTS, EmbeddingGraph, embedding_graph
from xcsmoe.embedding.execute import PackedLayout, unpack_variables
from xcsmoe.errors import ConfigError, InputError, expected

MARKER = "region_done"
REGION_DIMS = ("time", "region_y", "region_x")


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

    store: str
    layout: PackedLayout
    token_shape: tuple[int, int]
    chunk_windows: tuple[int, int]
    grid: int
    output: tuple[str, ...]

    def __call__(self, block: np.ndarray, region: Region) -> Region:
        group = zarr.open_group(self.store, mode="r+")
        variables = unpack_variables(block, self.layout, self.token_shape, self.output)
        for name, (dims, values) in variables.items():
            group[name][self.selection(region, dims, values.shape)] = values
        group[MARKER][region.time, region.row, region.col] = 1
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


@dataclass(frozen=True)
class JobReport:
    """What a run of :func:`embed_to_zarr` did."""

    store: str
    regions: int
    computed: int
    skipped: int


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
    **embed_kwargs: Any,
) -> JobReport:
    """Embed ``ds`` into the Zarr v3 store at ``store``; resume if it holds the same job.

    Args:
        ds, patch, embed_kwargs: as for :func:`xcsmoe.embed` (``weights=`` required).
        store: directory of the Zarr store (must be reachable by every worker).
        client: a ``distributed.Client``, a scheduler address, or ``None`` for a
            ``LocalCluster`` of ``n_workers`` single-threaded processes.
        overwrite: replace a store that holds a different job (or no job) instead of
            raising.
    """
    graph = embedding_graph(ds, patch, **embed_kwargs)
    store = Path(store)
    template = graph.to_dataset(output)
    fingerprint = job_fingerprint(graph, output)
    _create_or_check_store(store, template, graph, fingerprint, overwrite=overwrite)
    done = zarr.open_array(store / MARKER, mode="r")[:]
    regions = list(iter_regions(graph))
    todo = [r for r in regions if not done[r.time, r.row, r.col]]
    if todo:
        writer = RegionWriter(
            store=str(store),
            layout=graph.head.layout,
            token_shape=graph.token_shape,
            chunk_windows=graph.plan.chunk_windows,
            grid=graph.plan.grid_per_window,
            output=tuple(output),
        )
        write = dask.delayed(writer, pure=True)
        tasks = [write(graph.packed.blocks[r.time, r.row, r.col], r) for r in todo]
        _execute(tasks, client=client, n_workers=n_workers, progress=progress)
    done = zarr.open_array(store / MARKER, mode="r")[:]
    if done.all():
        group = zarr.open_group(store, mode="r+")
        group.attrs["xcsmoe_complete"] = True
    return JobReport(str(store), len(regions), len(todo), len(regions) - len(todo))


def iter_regions(graph: EmbeddingGraph) -> Iterator[Region]:
    """Every block of the packed array, in row-major order."""
    times, rows, cols = graph.packed.numblocks[:3]
    for t in range(times):
        for i in range(rows):
            for j in range(cols):
                yield Region(t, i, j)


def job_fingerprint(graph: EmbeddingGraph, output: tuple[str, ...]) -> str:
    """JSON identity of a job: a store is resumed only by the job that made it."""
    plan, spec = graph.plan, graph.prepared.spec
    return json.dumps(
        {
            "model": spec.name,
            "weights": spec.weights,
            "seed": spec.seed,
            "sensors": list(plan.sensors),
            "patch": plan.patch,
            "window": plan.window,
            "edge": plan.edge,
            "chunk_windows": list(plan.chunk_windows),
            "crs": str(plan.geobox.crs),
            "affine": list(plan.geobox.affine)[:6],
            "shape": list(plan.geobox.shape),
            "times": [str(t) for t in graph.prepared.ds["time"].values],
            "output": sorted(output),
        },
        sort_keys=True,
    )


def _create_or_check_store(
    store: Path, template: xr.Dataset, graph: EmbeddingGraph, fingerprint: str, *, overwrite: bool
) -> None:
    existing = _read_fingerprint(store)
    if existing == fingerprint:
        return
    if store.exists() and not overwrite:
        what = (
            "a store of a different job" if existing else "a directory that is not an xcsmoe store"
        )
        raise ConfigError(
            expected(
                "store",
                "a new path, or a store written by this same job (to resume)",
                f"{what} at {str(store)!r}",
                "Pass overwrite=True to replace it, or another path.",
            )
        )
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
    template = template.assign(
        {MARKER: (REGION_DIMS, np.zeros(graph.packed.numblocks[:3], dtype=np.uint8))}
    )
    encoding[MARKER] = {"chunks": (1, 1, 1)}
    template.attrs.update(xcsmoe_job=fingerprint, xcsmoe_complete=False)
    template.to_zarr(
        store, mode="w", compute=False, encoding=encoding, zarr_format=3, consolidated=False
    )


def _read_fingerprint(store: Path) -> str | None:
    if not (store / "zarr.json").exists():
        return None
    try:
        return zarr.open_group(store, mode="r").attrs.get("xcsmoe_job")
    except Exception as error:
        raise InputError(expected("store", "a readable Zarr v3 store", f"{error}")) from error


def _execute(tasks: list[Any], *, client: Any, n_workers: int, progress: bool) -> None:
    from distributed import Client, LocalCluster, as_completed

    own_cluster = own_client = None
    if client is None:
        own_cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = own_client = Client(own_cluster)
    elif isinstance(client, str):
        client = own_client = Client(client)
    try:
        futures = client.compute(tasks)
        bar = tqdm(
            total=len(futures), desc="embedding regions", unit="region", disable=not progress
        )
        for future in as_completed(futures):
            future.result()
            bar.update(1)
        bar.close()
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
