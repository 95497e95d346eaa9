"""Labelled sample sets: one in-memory layout for every evaluation dataset.

A *sample set* is an ``xr.Dataset`` with

* dims ``(sample, y, x)``; one float32 variable per band, named as cube variables
  (``B02 … B8A`` for Sentinel-2 in digital numbers with NaN for nodata, ``vv``/``vh`` for
  Sentinel-1 in linear power) — the raw convention of :func:`xcsmoe.load_cube`, so
  :func:`xcsmoe.normalise` standardises it; an optional ``s2_offset`` coordinate on
  ``sample`` (the DN offset of processing baseline 04.00);
* coordinate ``sample`` (string ids) and ``split`` (``"train"``, ``"valid"``, ``"test"``);
* variable ``labels``: ``(sample, class)`` multi-hot for ``task="multilabel"``,
  ``(sample,)`` class indices for ``"multiclass"``, ``(sample, label_y, label_x)`` class
  indices with -1 = unlabelled for ``"segmentation"``;
* attributes ``task``, ``classes`` (class names) and ``dataset``.

Readers of published layouts live in :mod:`xcsmoe.evaluation.readers` and
:mod:`xcsmoe.evaluation.geobench`; :func:`read_generic` takes any xarray/Zarr store
(including a pretraining patch store) plus a label table.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from xcsmoe.errors import ConfigError, InputError, MissingBandError, expected
from xcsmoe.sensors import S1, S2
from xcsmoe.storage import StoreLocation, inspect_location, store_location

__all__ = [
    "SPLITS",
    "TASKS",
    "check_samples",
    "make_samples",
    "model_inputs",
    "read_generic",
    "sensors_of",
    "with_labels",
]

TASKS = ("multilabel", "multiclass", "segmentation")
SPLITS = ("train", "valid", "test")
BANDS = S2.bands + S1.bands


def make_samples(
    bands: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    task: str,
    classes: Sequence[str],
    ids: Sequence[str],
    split: Sequence[str] | str = "train",
    s2_offset: Sequence[float] | None = None,
    dataset: str = "",
) -> xr.Dataset:
    """Assemble and check a sample set from ``{band: (N, H, W)}`` raw arrays and labels."""
    n = len(ids)
    splits = [split] * n if isinstance(split, str) else list(split)
    coords: dict[str, Any] = {
        "sample": np.asarray(ids, dtype=str),
        "split": ("sample", np.asarray(splits, dtype=str)),
    }
    if s2_offset is not None:
        coords["s2_offset"] = ("sample", np.asarray(s2_offset, dtype=np.float32))
    data = {
        name: (("sample", "y", "x"), np.asarray(v, dtype=np.float32)) for name, v in bands.items()
    }
    label_dims = {
        "multilabel": ("sample", "class"),
        "multiclass": ("sample",),
        "segmentation": ("sample", "label_y", "label_x"),
    }
    if task not in label_dims:
        raise ConfigError(expected("task", f"one of {TASKS}", task))
    dtype = np.int16 if task == "segmentation" else (np.uint8 if task == "multilabel" else np.int64)
    data["labels"] = (label_dims[task], np.asarray(labels).astype(dtype))
    attrs = {"task": task, "classes": [str(c) for c in classes], "dataset": dataset}
    return check_samples(xr.Dataset(data, coords=coords, attrs=attrs))


def check_samples(samples: xr.Dataset) -> xr.Dataset:
    """Raise :class:`InputError` unless ``samples`` follows the sample-set layout."""
    if not isinstance(samples, xr.Dataset):
        raise InputError(
            expected("samples", "an xarray.Dataset sample set", type(samples).__name__)
        )
    task = samples.attrs.get("task")
    if task not in TASKS:
        raise InputError(expected("samples.attrs['task']", f"one of {TASKS}", task))
    if samples.sizes.get("sample", 0) == 0:
        raise InputError(expected("samples", "at least one sample", 0, "Check the reader's paths."))
    if "labels" not in samples:
        raise InputError(
            expected("samples", "a 'labels' variable", sorted(map(str, samples.data_vars)))
        )
    labels = samples["labels"]
    classes = samples.attrs.get("classes") or []
    if task == "multilabel" and labels.sizes.get("class") != len(classes):
        raise InputError(
            expected("labels", f"{len(classes)} classes (one per name)", labels.sizes.get("class"))
        )
    if task != "multilabel" and classes:
        top = int(labels.max()) if labels.size else -1
        if top >= len(classes):
            raise InputError(expected("labels", f"class indices below {len(classes)}", top))
    if not sensors_of(samples):
        raise MissingBandError(
            expected(
                "samples",
                f"the bands of at least one sensor ({', '.join(BANDS)})",
                sorted(map(str, samples.data_vars)),
            )
        )
    return samples


def sensors_of(samples: xr.Dataset) -> tuple[str, ...]:
    """Sensors (``"s1"``, ``"s2"``) whose every band is present, S1 first."""
    return tuple(s.name for s in (S1, S2) if all(b in samples.data_vars for b in s.bands))


def model_inputs(samples: xr.Dataset, config: Any, sensors: Sequence[str]) -> dict[str, np.ndarray]:
    """Normalised model inputs ``{sensor: (N, C, H, W) float32}`` in the order the model's
    patch embedding expects (``config.bands(sensor)``); NaN (nodata) becomes 0, the band
    mean after standardisation. A band the model needs but the set lacks is an error."""
    from xcsmoe.sensors import normalise

    missing = [b for s in sensors for b in config.bands(s) if b not in samples.data_vars]
    if missing:
        raise MissingBandError(
            expected(
                "samples",
                f"every band {config.name} needs for {'+'.join(sensors)} (in order {[b for s in sensors for b in config.bands(s)]})",
                f"missing {missing}",
                "Map the dataset's band names onto these (missing bands are never filled with zeros).",
            )
        )
    names = [b for s in sensors for b in config.bands(s)]
    standard = normalise(samples[names])
    out = {}
    for sensor in sensors:
        stack = np.stack([standard[b].values for b in config.bands(sensor)], axis=1)
        out[sensor] = np.nan_to_num(stack.astype(np.float32, copy=False), nan=0.0)
    return out


def with_labels(
    samples: xr.Dataset,
    table: pd.DataFrame | str | PathLike[str],
    *,
    task: str,
    classes: Sequence[str] | None = None,
    id_column: str = "sample",
    label_column: str = "labels",
    split_column: str = "split",
) -> xr.Dataset:
    """Attach the labels of ``table`` (a DataFrame, CSV or Parquet file) to ``samples``.

    Multi-label cells are lists or ``";"``-separated strings of class names; multi-class
    cells a class name or index. Every sample needs exactly one row: ids without a row
    (or rows without a sample) are an error that quotes them.
    """
    frame = _read_table(table)
    for column in (id_column, label_column):
        if column not in frame.columns:
            raise InputError(expected("label table", f"a column {column!r}", list(frame.columns)))
    if task not in ("multilabel", "multiclass"):
        raise ConfigError(expected("task", '"multilabel" or "multiclass"', task))
    frame = frame.assign(**{id_column: frame[id_column].astype(str)})
    if frame[id_column].duplicated().any():
        dupes = frame.loc[frame[id_column].duplicated(), id_column].tolist()[:5]
        raise InputError(expected("label table", "one row per sample", f"repeated ids {dupes}"))
    ids = [str(i) for i in samples["sample"].values]
    rows = frame.set_index(id_column)
    unlabelled = [i for i in ids if i not in rows.index]
    unknown = [i for i in rows.index if i not in set(ids)]
    if unlabelled or unknown:
        raise InputError(
            expected(
                "labels",
                f"one row per sample of the {len(ids)} samples",
                f"{len(unlabelled)} samples without a label (e.g. {unlabelled[:3]}) and "
                f"{len(unknown)} labels without a sample (e.g. {unknown[:3]})",
                "Use the same ids in the label table and the store.",
            )
        )
    cells = [rows.at[i, label_column] for i in ids]
    if task == "multilabel":
        sets = [_label_set(c) for c in cells]
        names = list(classes) if classes is not None else sorted({c for s in sets for c in s})
        labels = multi_hot(sets, names)
    else:
        names, labels = _class_indices(cells, classes)
    out = samples.drop_vars(["labels"], errors="ignore").assign(labels=_label_var(task, labels))
    if split_column in frame.columns:
        out = out.assign_coords(
            split=("sample", np.asarray([str(rows.at[i, split_column]) for i in ids]))
        )
    out.attrs.update(task=task, classes=list(names))
    return check_samples(out)


def multi_hot(label_sets: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """(N, C) uint8 multi-hot of ``label_sets`` over ``classes``; unknown names are an error."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(label_sets), len(classes)), dtype=np.uint8)
    for row, labels in enumerate(label_sets):
        for label in labels:
            if label not in index:
                raise InputError(
                    expected("labels", f"class names among {list(classes)[:6]}...", label)
                )
            out[row, index[label]] = 1
    return out


def read_generic(
    store: xr.Dataset | str | PathLike[str] | StoreLocation,
    labels: pd.DataFrame | str | PathLike[str],
    *,
    task: str,
    classes: Sequence[str] | None = None,
    sample_dim: str | None = None,
    id_column: str = "sample",
    label_column: str = "labels",
    dataset: str = "generic",
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Any xarray/Zarr store of image samples plus a label table → a sample set.

    The store holds either one variable per band (``B02``, …, ``vv``, ``vh``) on
    ``(sample_dim, y, x)``, or a pretraining patch store's stacked ``s1``/``s2``
    variables on ``(patch, band_s1|band_s2, y, x)`` (S2 nodata 0 becomes NaN). The ids of
    ``sample_dim`` (its coordinate, else the position as a string) key the label table.
    ``store`` may be a URL of a Zarr store (``s3://…``, with ``storage_options``; see
    :mod:`xcsmoe.storage`); netCDF files are read from local paths.
    """
    ds = store if isinstance(store, xr.Dataset) else _open_store(store, storage_options)
    dim = sample_dim or next((d for d in ("sample", "patch") if d in ds.dims), None)
    if dim is None or dim not in ds.dims:
        raise InputError(
            expected(
                "sample_dim",
                f"a dimension of the store {tuple(ds.dims)}",
                sample_dim or "sample/patch",
            )
        )
    bands: dict[str, np.ndarray] = {}
    for stacked, sensor_bands in (("s2", "band_s2"), ("s1", "band_s1")):
        if stacked in ds.data_vars and sensor_bands in ds[stacked].dims:
            var = ds[stacked].transpose(dim, sensor_bands, ...)
            for i, name in enumerate(ds[sensor_bands].values):
                values = np.asarray(var.isel({sensor_bands: i}).values, dtype=np.float32)
                if stacked == "s2":
                    values = np.where(values == S2.nodata, np.float32(np.nan), values)
                bands[str(name)] = values
    for name in BANDS:
        if name in ds.data_vars and name not in bands:
            bands[name] = np.asarray(ds[name].transpose(dim, ...).values, dtype=np.float32)
    if not bands:
        raise MissingBandError(
            expected(
                "store",
                f"band variables among {list(BANDS)} or s1/s2 stacks",
                sorted(map(str, ds.data_vars)),
            )
        )
    ids = ds[dim].values if dim in ds.coords else np.arange(ds.sizes[dim])
    offset = ds["s2_offset"].values if "s2_offset" in ds.variables else None
    first = next(iter(bands.values()))
    placeholder = np.zeros(first.shape[0], dtype=np.int64)
    samples = make_samples(
        bands, placeholder, task="multiclass", classes=[], ids=[str(i) for i in ids],
        s2_offset=offset, dataset=dataset,
    )  # fmt: skip
    return with_labels(
        samples, labels, task=task, classes=classes, id_column=id_column, label_column=label_column
    )


# ----------------------------------------------------------------------------- helpers


def _open_store(
    store: str | PathLike[str] | StoreLocation,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Open a local Zarr store or netCDF file, or a Zarr store at a URL, lazily."""
    location = store_location(store, storage_options)
    if location.is_local:
        path = Path(location.url)
        if not path.exists():
            raise InputError(expected("store", "an existing Zarr store or netCDF file", str(path)))
        zarr_store = path.is_dir()
    else:
        kind = inspect_location(location).kind  # bucket, credentials, endpoint checked
        if kind not in ("zarr", "other"):
            raise InputError(
                expected(
                    "store",
                    "an existing Zarr store (netCDF files are read from local paths)",
                    f"{'a file' if kind == 'file' else 'nothing'} at {location.url!r}",
                )
            )
        zarr_store = True
    try:
        if not zarr_store:
            return xr.open_dataset(location.url)
        with warnings.catch_warnings():  # stores without consolidated metadata are fine
            warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated")
            return xr.open_zarr(**location.zarr_args(), chunks=None)
    except Exception as error:
        raise InputError(
            expected(
                "store",
                "an xarray-readable store",
                f"{location.path} ({type(error).__name__}: {error})",
            )
        ) from error


def _read_table(table: pd.DataFrame | str | PathLike[str]) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        raise InputError(
            expected("labels", "a DataFrame or an existing CSV/Parquet file", str(path))
        )
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _label_set(cell: Any) -> list[str]:
    if isinstance(cell, str):
        return [part.strip() for part in cell.split(";") if part.strip()]
    return [str(c) for c in cell]


def _class_indices(
    cells: Sequence[Any], classes: Sequence[str] | None
) -> tuple[list[str], np.ndarray]:
    if all(isinstance(c, (int, np.integer)) for c in cells):
        names = (
            list(classes) if classes is not None else [str(i) for i in range(int(max(cells)) + 1)]
        )
        return names, np.asarray(cells, dtype=np.int64)
    names = list(classes) if classes is not None else sorted({str(c) for c in cells})
    index = {c: i for i, c in enumerate(names)}
    unknown = sorted({str(c) for c in cells} - set(index))
    if unknown:
        raise InputError(expected("labels", f"class names among {names}", unknown))
    return names, np.asarray([index[str(c)] for c in cells], dtype=np.int64)


def _label_var(task: str, labels: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    if task == "multilabel":
        return ("sample", "class"), labels.astype(np.uint8)
    return ("sample",), labels.astype(np.int64)
