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
arrays and then sets its marker; it runs on the workers and takes only the store path.

Rules of :func:`check_store`:

* no path, or an **empty folder** → a new store;
* same fingerprint → resume: the returned ``status.done`` holds the markers; a
  **complete** store of the same job is a no-op (nothing is opened for writing, so a
  read-only store works);
* different fingerprint → refused with a message naming every differing setting with both
  values, unless ``overwrite=True``;
* a non-empty folder that is not a Zarr store, or a file → always refused (never deleted).

**No store left half-born.** A job that fails before its first region is written must not
block its corrected rerun. Two rules guarantee it: the skeleton is created only after the
arguments are checked and the cluster is reachable, in a hidden sibling folder that is
renamed into place (so a kill during creation leaves no half-written store at ``path``);
and an xcsmoe store whose markers are all unset holds no computed value, so any job may
replace it without ``overwrite`` (``status.replace`` is then true). A Zarr store that no
xcsmoe job wrote is replaced only with ``overwrite=True``. Hints name the Python keyword
(``overwrite=True``); command-line front ends rephrase them into their flags.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from tqdm.auto import tqdm

from xcsmoe.errors import ConfigError, InputError, expected

MARKER = "region_done"
JOB_ATTR = "xcsmoe_job"
COMPLETE_ATTR = "xcsmoe_complete"
CONNECT_TIMEOUT_S = 5.0

Index = tuple[int, ...]


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
    """

    path: Path
    done: np.ndarray
    exists: bool
    replace: bool = False
    complete: bool = False

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


def check_store(path: str | Path, spec: StoreSpec, *, overwrite: bool = False) -> StoreStatus:
    """Decide, reading only, whether ``path`` can hold the job of ``spec`` (see module doc).

    Raises :class:`~xcsmoe.errors.ConfigError` for a store of another job (without
    ``overwrite``) and for anything at ``path`` that is not a Zarr store.
    """
    path = Path(path)
    if not isinstance(overwrite, bool):
        raise ConfigError(expected("overwrite", "True or False", overwrite))
    fresh = np.zeros(spec.marker_shape, dtype=np.uint8)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return StoreStatus(path, fresh, exists=False)
    if not (path / "zarr.json").is_file():
        what = "a file" if not path.is_dir() else "a non-empty folder that is not a Zarr store"
        raise ConfigError(
            expected(
                "store",
                "a new path, an empty folder, or a store written by this same job (to resume)",
                f"{what} at {str(path)!r}",
                "Choose another path; xcsmoe never deletes what it did not write.",
            )
        )
    attrs, done = _read_existing(path)
    stored_json = attrs.get(JOB_ATTR)
    same_job = stored_json == spec.fingerprint_json
    if same_job and done is not None and done.shape == tuple(spec.marker_shape):
        complete = bool(attrs.get(COMPLETE_ATTR)) and bool(done.all())
        return StoreStatus(path, done, exists=True, complete=complete)
    unborn = stored_json is not None and (done is None or not done.any())  # ours, empty
    if overwrite or unborn:
        return StoreStatus(path, fresh, exists=False, replace=True)
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

    The skeleton is built in a hidden sibling folder and renamed onto ``status.path``, so
    ``path`` never holds a half-written store. Returns the status of the created store.
    """
    if status.exists:
        return status
    path = status.path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:12]}"
    template = spec.template.assign(
        {MARKER: (spec.marker_dims, np.zeros(spec.marker_shape, dtype=np.uint8))}
    )
    template.attrs.update({JOB_ATTR: spec.fingerprint_json, COMPLETE_ATTR: False})
    encoding = {name: dict(value) for name, value in spec.encoding.items()}
    encoding[MARKER] = {"chunks": (1,) * len(spec.marker_shape)}
    try:
        with warnings.catch_warnings():  # zarr notes that v3 consolidation is an extension
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=Warning)
            template.to_zarr(
                staging, mode="w-", compute=False, encoding=encoding, zarr_format=3,
                consolidated=True,
            )  # fmt: skip
        if path.is_dir() and any(path.iterdir()):
            shutil.rmtree(path)  # a store that check_store allowed to be replaced
        os.replace(staging, path)  # also onto an empty folder
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return StoreStatus(path, np.zeros(spec.marker_shape, dtype=np.uint8), exists=True)


def write_region(
    path: str | Path,
    values: Mapping[str, tuple[tuple[slice, ...], np.ndarray]],
    index: Index,
) -> Index:
    """Worker side: write ``values`` (``name -> (selection, array)``), then set the marker
    of region ``index``. A region interrupted before its marker is set is redone."""
    group = zarr.open_group(str(path), mode="r+")
    for name, (selection, array) in values.items():
        group[name][selection] = array
    group[MARKER][tuple(index)] = 1
    return tuple(index)


def read_markers(path: str | Path) -> np.ndarray:
    """The ``region_done`` markers of the store at ``path``."""
    return zarr.open_array(Path(path) / MARKER, mode="r")[...]


def finish_store(path: str | Path) -> bool:
    """Set ``xcsmoe_complete`` when every marker is set; returns whether it is complete."""
    if not read_markers(path).all():
        return False
    group = zarr.open_group(str(path), mode="r+")
    if group.attrs.get(COMPLETE_ATTR) is not True:
        group.attrs[COMPLETE_ATTR] = True
    return True


def check_cluster_args(client: Any, n_workers: Any) -> None:
    """Validate ``client`` / ``n_workers`` without connecting (for early checks)."""
    from distributed import Client

    if client is not None and not isinstance(client, (str, Client)):
        raise ConfigError(
            expected(
                "client",
                "None, a scheduler address (str) or a distributed.Client",
                type(client).__name__,
            )
        )
    if client is None and (
        isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer))
    ):
        raise ConfigError(expected("n_workers", "a positive integer", n_workers))
    if client is None and n_workers < 1:
        raise ConfigError(
            expected("n_workers", "a positive integer", n_workers, "Pass n_workers=1 or more.")
        )


@contextmanager
def connect(
    client: Any = None, *, n_workers: int = 2, timeout: float = CONNECT_TIMEOUT_S
) -> Iterator[Any]:
    """A ``distributed.Client``: ``client`` itself, one connected to the scheduler address
    ``client`` (refused within ``timeout`` seconds when unreachable), or one of a new
    ``LocalCluster`` of ``n_workers`` single-threaded processes. Closes what it opened."""
    from distributed import Client, LocalCluster

    check_cluster_args(client, n_workers)
    if isinstance(client, Client):
        yield client
        return
    if isinstance(client, str):
        try:
            own = Client(client, timeout=timeout)
        except (OSError, TimeoutError, ValueError, TypeError) as error:
            raise ConfigError(
                expected(
                    "client",
                    f"a Dask scheduler address that answers within {timeout:g} s",
                    client,
                    f"Start the scheduler or fix the address ({type(error).__name__}).",
                )
            ) from error
        with own:
            yield own
        return
    with (
        LocalCluster(
            n_workers=int(n_workers), threads_per_worker=1, processes=True,
            dashboard_address=":0", scheduler_kwargs={"dashboard": False},  # any free port
        ) as cluster,
        Client(cluster) as own,
    ):  # fmt: skip
        yield own


def run_tasks(tasks: Sequence[Any], client: Any, *, desc: str, progress: bool = True) -> None:
    """Compute dask-delayed ``tasks`` on ``client`` with a progress bar; the first failure
    cancels the rest and is raised."""
    from distributed import as_completed

    futures = client.compute(list(tasks))
    bar = tqdm(total=len(futures), desc=desc, unit="region", disable=not progress)
    try:
        for future in as_completed(futures):
            future.result()
            bar.update(1)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        bar.close()


def run_region_job(
    path: str | Path,
    spec: StoreSpec,
    make_task: Callable[[Index], Any],
    *,
    client: Any = None,
    n_workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "writing regions",
) -> RegionReport:
    """Check, create, write every missing region and finish the store at ``path``.

    ``make_task(index)`` returns the dask-delayed task of region ``index``, ending with
    :func:`write_region`. Arguments are validated and the scheduler reached before any
    byte is written; a complete store of the same job returns at once.
    """
    check_cluster_args(client, n_workers)
    status = check_store(path, spec, overwrite=overwrite)
    todo = status.todo
    if status.complete:  # nothing to do, nothing opened for writing
        return RegionReport(str(path), status.regions, 0, status.regions)
    if status.exists and not todo:  # every region written, the final flag was not
        finish_store(path)
        return RegionReport(str(path), status.regions, 0, status.regions)
    with connect(client, n_workers=n_workers) as active:
        create_store(status, spec)
        run_tasks([make_task(index) for index in todo], active, desc=desc, progress=progress)
    finish_store(path)
    return RegionReport(str(path), status.regions, len(todo), status.regions - len(todo))


def _read_existing(path: Path) -> tuple[Mapping[str, Any], np.ndarray | None]:
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as error:
        raise InputError(
            expected("store", "a readable Zarr v3 store", f"{type(error).__name__}: {error}")
        ) from error
    try:
        done = read_markers(path)
    except Exception:  # no marker array: not a region store, or a skeleton cut short
        done = None
    return attrs, done


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
