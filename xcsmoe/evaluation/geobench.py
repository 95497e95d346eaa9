"""Reader of the geobench on-disk layout (m-eurosat, m-bigearthnet, m-cashew-plant, ...).

The ``geobench`` package pins ``pandas<2``, which this project cannot take, so the layout
is read here directly. A geobench dataset folder holds

* one HDF5 file per sample: one dataset per band, named by the band (``"02 - Blue"``,
  ``"08A - Vegetation Red Edge"``, ...), a ``label`` dataset for segmentation, and a root
  attribute ``pickle`` (the text ``str(pickle.dumps(...))``) with per-band metadata and,
  for classification, the label;
* ``<partition>_partition.json``: ``{"train": [names], "valid": [...], "test": [...]}``
  (``default_partition.json`` is the default);
* ``task_specs.pkl``: the task (label type, class names).

The pickles name geobench classes. They are read with an unpickler that allows only
plain containers, numpy arrays and dates, and turns geobench/rasterio/affine objects into
inert :class:`Record` objects holding their attributes: nothing else is ever imported or
called, so no code from the file runs.
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import re
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xcsmoe.errors import InputError, expected
from xcsmoe.evaluation.datasets import make_samples
from xcsmoe.sensors import S1, S2

__all__ = ["Record", "read_geobench", "safe_loads"]

_BAND_NUMBER = re.compile(r"^\s*(\d{1,2}A?)\s*-")
_INERT_MODULES = ("geobench.", "affine", "rasterio.", "pathlib")
_ALLOWED = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("builtins", "complex"), ("collections", "OrderedDict"),
    ("datetime", "date"), ("datetime", "datetime"), ("datetime", "timedelta"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}  # fmt: skip


class Record:
    """An inert stand-in for a pickled geobench (or rasterio/affine) object."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.state = state

    def __repr__(self) -> str:
        return f"Record({type(self).__name__})"


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module.startswith(_INERT_MODULES):
            return type(name, (Record,), {"source": f"{module}.{name}"})
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a geobench file")


def safe_loads(data: bytes) -> Any:
    """Unpickle geobench metadata without importing or running anything it names."""
    return _Unpickler(io.BytesIO(data)).load()


def read_geobench(
    dataset_dir: str | PathLike[str],
    *,
    partition: str = "default",
    splits: Sequence[str] = ("train", "valid", "test"),
    limit: int | None = None,
) -> xr.Dataset:
    """A geobench dataset folder → a sample set (task from ``task_specs.pkl``).

    Band names map to cube names by their number (``"08A - ..."`` → ``B8A``, ``"02 - Blue"``
    → ``B02``; Sentinel-1 ``VV``/``VH`` by name); other bands are dropped. ``limit``
    caps the samples per split.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise InputError(expected("dataset_dir", "a geobench dataset folder", str(root)))
    task, classes = _task(root)
    names = _partition(root, partition)
    rows = [(split, name) for split in splits for name in names.get(split, [])[:limit]]
    if not rows:
        raise InputError(
            expected("splits", f"splits with samples among {sorted(names)}", list(splits))
        )
    bands: dict[str, list[np.ndarray]] = {}
    labels = []
    for _, name in rows:
        sample_bands, label = _read_sample(root / f"{name}.hdf5")
        if bands and set(sample_bands) != set(bands):
            raise InputError(
                expected(f"sample {name}", f"bands {sorted(bands)}", sorted(sample_bands))
            )
        for band, values in sample_bands.items():
            bands.setdefault(band, []).append(values)
        labels.append(label)
    arrays = {band: np.stack(values) for band, values in bands.items()}
    if task == "multilabel":
        label_array = np.stack([np.asarray(v, dtype=np.uint8) for v in labels])
    elif task == "segmentation":
        label_array = np.stack([np.asarray(v, dtype=np.int16) for v in labels])
    else:
        label_array = np.asarray([int(v) for v in labels], dtype=np.int64)
    return make_samples(
        arrays, label_array, task=task, classes=classes, ids=[n for _, n in rows],
        split=[s for s, _ in rows], dataset=root.name,
    )  # fmt: skip


def cube_band_name(name: str) -> str | None:
    """geobench band name → cube variable name, or None for a band the model never uses."""
    match = _BAND_NUMBER.match(name)
    if match:
        number = match[1].upper()
        band = "B8A" if number in ("8A", "08A") else f"B{int(number):02d}"
        return band if band in S2.bands else None
    lowered = name.strip().lower()
    return lowered if lowered in S1.bands else None


def _read_sample(path: Path) -> tuple[dict[str, np.ndarray], Any]:
    import h5py

    if not path.is_file():
        raise InputError(expected("sample", "an existing .hdf5 file", str(path)))
    with h5py.File(path, "r") as handle:
        attrs = safe_loads(ast.literal_eval(handle.attrs["pickle"]))
        bands = {}
        for key in handle:
            if key == "label":
                continue
            band = cube_band_name(key)
            if band is not None:
                values = np.asarray(handle[key], dtype=np.float32)
                bands[band] = (
                    np.where(values == S2.nodata, np.float32(np.nan), values)
                    if band in S2.bands
                    else values
                )
        label = np.asarray(handle["label"]) if "label" in handle else attrs.get("label")
    if label is None:
        raise InputError(expected(f"sample {path.name}", "a label (dataset or attribute)", None))
    return bands, label


def _task(root: Path) -> tuple[str, list[str]]:
    path = root / "task_specs.pkl"
    if not path.is_file():
        raise InputError(expected("dataset_dir", "a task_specs.pkl file", str(path)))
    spec = safe_loads(path.read_bytes())
    label_type = getattr(spec, "label_type", None)
    kind = type(label_type).__name__
    n = int(getattr(label_type, "n_classes", 0) or 0)
    names = getattr(label_type, "_class_names", None) or getattr(label_type, "class_name", None)
    classes = [str(c) for c in names] if names else [str(i) for i in range(n)]
    tasks = {
        "Classification": "multiclass",
        "MultiLabelClassification": "multilabel",
        "SemanticSegmentation": "segmentation",
        "SegmentationClasses": "segmentation",
    }
    if kind not in tasks:
        raise InputError(expected("task_specs.pkl label_type", f"one of {sorted(tasks)}", kind))
    return tasks[kind], classes


def _partition(root: Path, partition: str) -> dict[str, list[str]]:
    path = root / f"{partition}_partition.json"
    if not path.is_file():
        found = sorted(p.name for p in root.glob("*_partition.json"))
        raise InputError(expected("partition", f"a file {path.name}", found or "none"))
    return json.loads(path.read_text())
