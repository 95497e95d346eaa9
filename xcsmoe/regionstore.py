"""Resumable Zarr v3 stores written region by region on a Dask cluster.

A *region store* is a Zarr v3 group whose variables are cut into regions (each region
owns its Zarr chunks alone, so regions can be written in parallel without locks), plus:

* ``region_done`` — a ``uint8`` marker array with one element per region, set to 1 only
  after the region's values are written;
* attribute ``xcsmoe_job`` — the job *fingerprint*: a JSON object of every setting that
  changes a stored value. Only the job with the same fingerprint may resume the store;
* attribute ``xcsmoe_complete`` — ``True`` once every marker is set.

Stores are written with consolidated metadata, so ``xr.open_zarr(path)`` opens them
without a warning.

API, in the order a job uses it (metadata → plan → execution)::

    spec = StoreSpec(template, encoding, marker_dims=("time", "row", "col"),
                     marker_shape=(2, 4, 8), fingerprint={"model": ..., "seed": 0})
    status = check_store(path, spec, overwrite=False)   # reads only, raises on refusal
    if not status.complete:
        with connect(client, n_workers=2) as c:          # scheduler checked within seconds
            create_store(status, spec)                   # skeleton, only now
            run_tasks([make_task(i) for i in status.todo], c, desc="writing regions")
        finish_store(path)                               # sets xcsmoe_complete when done

or in one call, :func:`run_region_job` (returns a :class:`RegionReport`). A task is any
dask-delayed object whose work ends with :func:`write_region`, which writes the region's
arrays and then sets its marker; it runs on the workers and takes only the store location.

**Stores at URLs.** ``path`` may be a local path or a URL (``s3://``, ``gs://``, ``az://``,
``file://``, ``memory://``; :mod:`xcsmoe.storage`) with ``storage_options=``. Markers,
fingerprint and completion flag live in the store itself, so resume and refusal work the
same on object storage; workers need no disk shared with the client.

Rules of :func:`check_store`:

* no path, or an **empty folder** → a new store;
* same fingerprint → resume: the returned ``status.done`` holds the markers; a
  **complete** store of the same job is a no-op (nothing is opened for writing, so a
  read-only store works);
* different fingerprint → refused with a message naming every differing setting with both
  values, unless ``overwrite=True``;
* a non-empty folder that is not a Zarr store, or a file → always refused (never deleted).

**No store left half-born, no renames.** A job that fails before its first region is
written must not block its corrected rerun, and object stores cannot rename. The skeleton
is created only after the arguments are checked and the cluster is reachable, in an order
whose every prefix is recognisable (:func:`create_store`): first a bare root ``zarr.json``
carrying this job's fingerprint, then the removal of whatever the replaced store held,
then the arrays and coordinates, and last the consolidated metadata, which marks the
skeleton *born*. A store of ours without consolidated metadata, or whose markers are all
unset, holds no computed value, so any job may replace it without ``overwrite``
(``status.replace`` is then true). A region's marker is set only after its chunks are
written (each chunk one atomic PUT on object stores), so a region whose upload was cut
short is simply redone. A Zarr store that no xcsmoe job wrote is replaced only with
``overwrite=True``. Hints name the Python keyword (``overwrite=True``); command-line front
ends rephrase them into their flags.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import dask.array
import numpy as np
import xarray as xr
import zarr

from xcsmoe.cluster import check_cluster_args, check_workers_reach, connect, run_tasks
from xcsmoe.errors import ConfigError, InputError, expected
from xcsmoe.storage import (
    StoreLocation,
    inspect_location,
    read_root_metadata,
    remove_all_but_root,
    store_location,
    write_root_metadata,
)

MARKER = "region_done"
JOB_ATTR = "xcsmoe_job"
COMPLETE_ATTR = "xcsmoe_complete"

Index = tuple[int, ...]
StorePath = str | Path | StoreLocation


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds: schema, chunking, regions and the job's identity.

    Args:
        template: Dataset with every variable (lazy dask arrays are fine: only metadata
            and coordinates are written), coordinates and attributes of the store.
        encoding: per-variable Zarr encoding (``chunks`` must align with regions).
        marker_dims: dimension names of the marker array, e.g. ``("time", "row", "col")``.
        marker_shape: regions along each of ``marker_dims``.
        fingerprint: JSON-able mapping of every setting that changes a stored value.
    """

    template: xr.Dataset
    encoding: Mapping[str, Mapping[str, Any]]
    marker_dims: tuple[str, ...]
    marker_shape: tuple[int, ...]
    fingerprint: Mapping[str, Any]

    def __post_init__(self) -> None:
        if len(self.marker_dims) != len(self.marker_shape):
            raise ConfigError(
                expected(
                    "marker_shape",
                    f"one size per marker dim {self.marker_dims}",
                    tuple(self.marker_shape),
                )
            )

    @property
    def fingerprint_json(self) -> str:
        return json.dumps(dict(self.fingerprint), sort_keys=True, default=str)


@dataclass(frozen=True)
class StoreStatus:
    """Result of :func:`check_store`: what to do with the store at ``path``.

    ``done`` is the marker array (zeros for a new store); ``exists`` says whether a
    usable store of this job is already there; ``replace`` whether something at ``path``
    (a store of another job, or one with no region written) will be replaced on creation.
    ``path`` is a :class:`~pathlib.Path` for local stores and the URL otherwise;
    ``location`` adds the ``storage_options``.
    """

    path: Path | str
    done: np.ndarray
    exists: bool
    replace: bool = False
    complete: bool = False
    location: StoreLocation | None = None

    @property
    def todo(self) -> list[Index]:
        """Indices of the regions still to write, in row-major order."""
        return [index for index in iter_indices(self.done.shape) if not self.done[index]]

    @property
    def regions(self) -> int:
        return int(self.done.size)


@dataclass(frozen=True)
class RegionReport:
    """What a run of :func:`run_region_job` did."""

    store: str
    regions: int
    computed: int
    skipped: int


def iter_indices(shape: Sequence[int]) -> Iterator[Index]:
    """Every index of an array of ``shape``, row-major."""
    return (tuple(int(i) for i in index) for index in product(*(range(n) for n in shape)))


def differing_settings(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``"name: store <a>, this job <b>"`` for every setting whose value differs."""
    lines = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key, "<unset>"), wanted.get(key, "<unset>")
        if a != b:
            lines.append(f"{key}: store {_short(a)}, this job {_short(b)}")
    return lines


def check_store(
    path: StorePath,
    spec: StoreSpec,
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> StoreStatus:
    """Decide, reading only, whether ``path`` can hold the job of ``spec`` (see module doc).

    Raises :class:`~xcsmoe.errors.ConfigError` for a store of another job (without
    ``overwrite``) and for anything at ``path`` that is not a Zarr store, and
    :class:`~xcsmoe.errors.StorageError` for an object store it cannot use (missing
    bucket, refused credentials, no answer within seconds).
    """
    location = store_location(path, storage_options)
    if not isinstance(overwrite, bool):
        raise ConfigError(expected("overwrite", "True or False", overwrite))
    fresh = np.zeros(spec.marker_shape, dtype=np.uint8)
    shown = location.path
    listing = inspect_location(location)
    if listing.kind in ("absent", "empty"):
        return StoreStatus(shown, fresh, exists=False, location=location)
    if listing.kind != "zarr":
        folder = "folder" if location.is_local else "prefix"
        what = (
            "a file" if listing.kind == "file" else f"a non-empty {folder} that is not a Zarr store"
        )
        raise ConfigError(
            expected(
                "store",
                "a new path, an empty folder, or a store written by this same job (to resume)",
                f"{what} at {str(shown)!r}",
                "Choose another path; xcsmoe never deletes what it did not write.",
            )
        )
    attrs, done, born = _read_existing(location)
    stored_json = attrs.get(JOB_ATTR)
    same_job = stored_json == spec.fingerprint_json
    if same_job and born and done is not None and done.shape == tuple(spec.marker_shape):
        complete = bool(attrs.get(COMPLETE_ATTR)) and bool(done.all())
        return StoreStatus(shown, done, exists=True, complete=complete, location=location)
    unborn = stored_json is not None and (not born or done is None or not done.any())
    if overwrite or unborn:  # unborn: ours, and no computed value in it
        return StoreStatus(shown, fresh, exists=False, replace=True, location=location)
    if same_job and done is not None:  # same settings, another division into regions
        raise ConfigError(
            expected(
                "store",
                f"regions {tuple(spec.marker_shape)}, as this job divides the store",
                f"regions {done.shape} at {str(path)!r} (written by another xcsmoe version)",
                "Choose another path, or pass overwrite=True to rebuild it.",
            )
        )
    raise ConfigError(
        expected(
            "store",
            "a new path, or a store written by this same job (to resume)",
            f"a store of a different job at {str(path)!r}",
            _difference_hint(stored_json, spec.fingerprint),
        )
    )


def create_store(status: StoreStatus, spec: StoreSpec) -> StoreStatus:
    """Write the skeleton (metadata, coordinates, zeroed markers) unless it exists.

    No renames, so the same steps are safe on object stores; a kill after any of them
    leaves a store that :func:`check_store` lets any job replace:

    1. a bare root ``zarr.json`` with this job's fingerprint (one atomic write);
    2. everything else inside the store removed (a store ``check_store`` allowed to be
       replaced; never anything at a path that was not a store);
    3. arrays, coordinates and zeroed markers;
    4. consolidated metadata, written last: the skeleton is born.

    Returns the status of the created store.
    """
    if status.exists:
        return status
    location = status.location or store_location(status.path)
    unset = dask.array.zeros(spec.marker_shape, chunks=-1, dtype=np.uint8)  # never written
    template = spec.template.assign({MARKER: (spec.marker_dims, unset)})
    template.attrs.update({JOB_ATTR: spec.fingerprint_json, COMPLETE_ATTR: False})
    encoding = {name: dict(value) for name, value in spec.encoding.items()}
    encoding[MARKER] = {"chunks": (1,) * len(spec.marker_shape)}
    write_root_metadata(location, dict(template.attrs))
    if status.replace:
        remove_all_but_root(location)
    template.to_zarr(
        **location.zarr_args(), mode="a", compute=False, encoding=encoding, zarr_format=3,
        consolidated=False,
    )  # fmt: skip
    consolidate(location)
    fresh = np.zeros(spec.marker_shape, dtype=np.uint8)
    return StoreStatus(status.path, fresh, exists=True, location=location)


def consolidate(location: StoreLocation) -> None:
    """(Re)write the store's consolidated metadata from its arrays' own metadata."""
    with warnings.catch_warnings():  # zarr notes that v3 consolidation is an extension
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=Warning)
        zarr.consolidate_metadata(location.zarr_store(), zarr_format=3)


def write_region(
    path: StorePath,
    values: Mapping[str, tuple[tuple[slice, ...], np.ndarray]],
    index: Index,
    *,
    write_empty_chunks: bool = False,
) -> Index:
    """Worker side: write ``values`` (``name -> (selection, array)``), then set the marker
    of region ``index``. A region interrupted before its marker is set is redone.

    Requests: one metadata read, then one write per chunk of the region and one for the
    marker, whatever the size of the store. ``write_empty_chunks=True`` also writes chunks
    that hold only the fill value, sparing Zarr's comparison of every chunk with it (a
    full pass, slower than compressing it) where chunks are rarely empty."""
    group = _open_group(store_location(path), mode="r+")
    for name, (selection, array) in values.items():
        target = group[name]
        if write_empty_chunks:
            target = target.with_config({"write_empty_chunks": True})
        target[selection] = array
    group[MARKER][tuple(index)] = 1
    return tuple(index)


def read_markers(
    path: StorePath, *, storage_options: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The ``region_done`` markers of the store at ``path``."""
    location = store_location(path, storage_options)
    return _open_group(location, mode="r")[MARKER][...]


def finish_store(path: StorePath, *, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Set ``xcsmoe_complete`` when every marker is set; returns whether it is complete."""
    location = store_location(path, storage_options)
    if not read_markers(location).all():
        return False
    group = _open_group(location, mode="r+")
    if group.attrs.get(COMPLETE_ATTR) is not True:
        group.attrs[COMPLETE_ATTR] = True
    return True


def run_region_job(
    path: StorePath,
    spec: StoreSpec,
    make_task: Callable[[Index], Any],
    *,
    client: Any = None,
    n_workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "writing regions",
    storage_options: Mapping[str, Any] | None = None,
) -> RegionReport:
    """Check, create, write every missing region and finish the store at ``path`` (a
    local path or a URL with ``storage_options``, see :mod:`xcsmoe.storage`).

    ``make_task(index)`` returns the dask-delayed task of region ``index``, ending with
    :func:`write_region`. Arguments are validated, the store inspected and the scheduler
    reached before any byte is written; a complete store of the same job returns at once.
    """
    check_cluster_args(client, n_workers)
    location = store_location(path, storage_options)
    check_workers_reach(location, client)
    status = check_store(location, spec, overwrite=overwrite)
    todo = status.todo
    if status.complete:  # nothing to do, nothing opened for writing
        return RegionReport(str(status.path), status.regions, 0, status.regions)
    if status.exists and not todo:  # every region written, the final flag was not
        finish_store(location)
        return RegionReport(str(status.path), status.regions, 0, status.regions)
    with connect(client, n_workers=n_workers) as active:
        check_workers_reach(location, active)
        create_store(status, spec)
        run_tasks([make_task(index) for index in todo], active, desc=desc, progress=progress)
    finish_store(location)
    return RegionReport(str(status.path), status.regions, len(todo), status.regions - len(todo))


def _open_group(location: StoreLocation, *, mode: str) -> zarr.Group:
    return zarr.open_group(**location.zarr_args(), mode=mode, zarr_format=3)


def _read_existing(location: StoreLocation) -> tuple[Mapping[str, Any], np.ndarray | None, bool]:
    """``(attributes, markers or None, born)``; born: consolidated metadata written."""
    root = read_root_metadata(location)
    attrs = root.get("attributes") if root else None
    if not isinstance(attrs, dict):
        raise InputError(
            expected("store", "a readable Zarr v3 store", f"no group metadata at {location.url!r}")
        )
    born = root.get("consolidated_metadata") is not None
    try:
        done = read_markers(location)
    except Exception:  # no marker array: not a region store, or a skeleton cut short
        done = None
    return attrs, done, born


def _difference_hint(stored_json: Any, wanted: Mapping[str, Any]) -> str:
    try:
        stored = json.loads(stored_json) if stored_json else {}
    except (TypeError, ValueError):
        stored = {}
    if not isinstance(stored, dict) or not stored:
        differences = "it was not written by an xcsmoe job"
    else:
        wanted_plain = json.loads(json.dumps(dict(wanted), sort_keys=True, default=str))
        differences = "; ".join(differing_settings(stored, wanted_plain)) or "its layout differs"
    return (
        f"Settings that differ: {differences}. Pass overwrite=True to replace it, or another path."
    )


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
