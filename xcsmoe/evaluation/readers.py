"""Readers of published layouts into sample sets (see :mod:`xcsmoe.evaluation.datasets`).

* :func:`read_eurosat_ms` — EuroSAT MS, one folder per class of 13-band L1C GeoTIFFs;
* :func:`read_bigearthnet` — BigEarthNet-v2 (reBEN): ``BigEarthNet-S2/<tile>/<patch>/``
  band GeoTIFFs, ``BigEarthNet-S1/<product>/<patch>/`` VV/VH, ``Reference_Maps/`` CLC
  codes per pixel, plus its metadata table (``patch_id``, ``s1_name``, ``split``,
  ``labels``), multi-label or segmentation;
* :func:`read_sample_catalog` — the six S1+S2 pairs of :func:`xcsmoe.example_catalog`
  with their BigEarthNet labels.

Bands are read by name and kept under the cube names; 20 m bands are repeated onto the
10 m grid (nearest neighbour, as the paper does); bands the model does not use (60 m)
are skipped. Whether a set holds every band a model needs is checked when it is encoded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import xarray as xr

from xcsmoe.errors import InputError, MissingBandError, expected
from xcsmoe.evaluation.datasets import make_samples, multi_hot
from xcsmoe.sensors import S1, S2, db_to_linear

__all__ = [
    "BIGEARTHNET_CLASSES",
    "EUROSAT_BANDS",
    "EUROSAT_CLASSES",
    "bigearthnet19",
    "read_bigearthnet",
    "read_eurosat_ms",
    "read_sample_catalog",
]

EUROSAT_CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)  # fmt: skip
# Band order of the EuroSAT MS GeoTIFFs: B8A is stored last (checked on the real files:
# band 10 is the ~10 DN cirrus band B10, band 13 follows NIR like B8A does).
EUROSAT_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)  # fmt: skip


def _bigearthnet_classes() -> tuple[str, ...]:
    from bigearthnet_common.constants import NEW_LABELS

    return tuple(NEW_LABELS)


BIGEARTHNET_CLASSES = _bigearthnet_classes()
"""The 19-class BigEarthNet nomenclature (alphabetical, as bigearthnet-common lists it)."""

_SPLIT_NAMES = {"validation": "valid", "val": "valid"}


def bigearthnet19(labels: Sequence[str]) -> list[str]:
    """43-class (v1) CLC names → the 19-class names (already-new names pass through)."""
    from bigearthnet_common.constants import OLD2NEW_LABELS_DICT

    out = []
    for label in labels:
        new = label if label in BIGEARTHNET_CLASSES else OLD2NEW_LABELS_DICT.get(label)
        if new is not None and new not in out:
            out.append(new)
    return out


# ------------------------------------------------------------------------------ EuroSAT


def read_eurosat_ms(
    root: str | PathLike[str],
    *,
    classes: Sequence[str] = EUROSAT_CLASSES,
    splits: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> xr.Dataset:
    """EuroSAT MS (``root/<Class>/<Class>_<n>.tif``, 13 bands, 64×64) → a multi-class set.

    ``splits`` maps sample ids (file stems) to ``train``/``valid``/``test`` (default all
    ``train``); ``limit`` caps the files per class.
    """
    root = _folder(root, "root")
    files = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in classes:
            raise InputError(expected("root", f"class folders among {list(classes)}", folder.name))
        files += [(folder.name, f) for f in sorted(folder.glob("*.tif"))[:limit]]
    if not files:
        raise InputError(expected("root", "class folders with .tif files", str(root)))
    stacks = []
    for _, path in files:
        with rasterio.open(path) as src:
            if src.count != len(EUROSAT_BANDS):
                raise MissingBandError(
                    expected(str(path), f"{len(EUROSAT_BANDS)} bands {EUROSAT_BANDS}", src.count)
                )
            stacks.append(src.read().astype(np.float32))
    pixels = np.stack(stacks)  # (N, 13, H, W)
    keep = [b for b in EUROSAT_BANDS if b in S2.bands]
    bands = {b: _nodata_to_nan(pixels[:, EUROSAT_BANDS.index(b)]) for b in keep}
    ids = [path.stem for _, path in files]
    labels = np.array([list(classes).index(name) for name, _ in files])
    split = [(splits or {}).get(i, "train") for i in ids]
    return make_samples(
        bands,
        labels,
        task="multiclass",
        classes=classes,
        ids=ids,
        split=split,
        dataset="eurosat-ms",
    )


# -------------------------------------------------------------------------- BigEarthNet


def read_bigearthnet(
    root: str | PathLike[str],
    metadata: pd.DataFrame | str | PathLike[str],
    *,
    sensors: Sequence[str] = ("s1", "s2"),
    task: str = "multilabel",
    splits: Sequence[str] | None = None,
    limit: int | None = None,
) -> xr.Dataset:
    """BigEarthNet-v2 folders plus its metadata table → a multi-label (or segmentation) set.

    ``metadata``: reBEN's ``metadata.parquet`` (or any table with ``patch_id`` and, as
    needed, ``s1_name``, ``split``, ``labels``). ``task="segmentation"`` reads
    ``Reference_Maps`` and maps each CLC code to its 19-class index (-1 where the code
    has none). ``splits`` keeps those splits only (``validation`` is called ``valid``).
    """
    root = _folder(root, "root")
    table = (
        metadata
        if isinstance(metadata, pd.DataFrame)
        else pd.read_parquet(metadata)
        if str(metadata).endswith(".parquet")
        else pd.read_csv(metadata)
    )
    if "patch_id" not in table.columns or ("s1" in sensors and "s1_name" not in table.columns):
        raise InputError(
            expected("metadata", "columns patch_id (and s1_name for S1)", list(table.columns))
        )
    if "split" in table.columns:
        table = table.assign(split=table["split"].map(lambda s: _SPLIT_NAMES.get(s, s)))
        if splits is not None:
            table = table[table["split"].isin(list(splits))]
    table = table.head(limit) if limit else table
    if table.empty:
        raise InputError(expected("metadata", "at least one patch (after the split filter)", 0))
    bands: dict[str, list[np.ndarray]] = {}
    for row in table.itertuples(index=False):
        if "s2" in sensors:
            folder = root / "BigEarthNet-S2" / _s2_tile(row.patch_id) / row.patch_id
            for band in S2.bands:
                bands.setdefault(band, []).append(
                    _read_band(folder / f"{row.patch_id}_{band}.tif", 120)
                )
        if "s1" in sensors:
            folder = root / "BigEarthNet-S1" / _s1_product(row.s1_name) / row.s1_name
            for band in S1.bands:
                db = _read_band(
                    folder / f"{row.s1_name}_{band.upper()}.tif", 120, nodata_zero=False
                )
                bands.setdefault(band, []).append(db_to_linear(db))
    arrays = {name: np.stack(values) for name, values in bands.items()}
    ids = table["patch_id"].astype(str).tolist()
    split = table["split"].tolist() if "split" in table.columns else "train"
    if task == "segmentation":
        maps = [_reference_map(root, pid) for pid in ids]
        return make_samples(
            arrays,
            np.stack(maps),
            task=task,
            classes=BIGEARTHNET_CLASSES,
            ids=ids,
            split=split,
            dataset="bigearthnet-v2",
        )
    if "labels" not in table.columns:
        raise InputError(
            expected("metadata", "a 'labels' column for task='multilabel'", list(table.columns))
        )
    labels = multi_hot([bigearthnet19(list(v)) for v in table["labels"]], BIGEARTHNET_CLASSES)
    return make_samples(
        arrays,
        labels,
        task="multilabel",
        classes=BIGEARTHNET_CLASSES,
        ids=ids,
        split=split,
        dataset="bigearthnet-v2",
    )


def clc_to_class_map(codes: np.ndarray) -> np.ndarray:
    """Reference-map CLC level-3 codes → 19-class indices (int16, -1 without a class)."""
    from bigearthnet_common.constants import CLC_CODE_TO_CLC_LV3

    out = np.full(codes.shape, -1, dtype=np.int16)
    for code in np.unique(codes):
        names = bigearthnet19([CLC_CODE_TO_CLC_LV3.get(str(int(code)), "")])
        if names:
            out[codes == code] = BIGEARTHNET_CLASSES.index(names[0])
    return out


def _reference_map(root: Path, patch_id: str) -> np.ndarray:
    path = root / "Reference_Maps" / _s2_tile(patch_id) / patch_id / f"{patch_id}_reference_map.tif"
    if not path.is_file():
        raise InputError(expected("reference map", "an existing file", str(path)))
    with rasterio.open(path) as src:
        return clc_to_class_map(src.read(1))


def _s2_tile(patch_id: str) -> str:
    return "_".join(patch_id.split("_")[:-2])


def _s1_product(s1_name: str) -> str:
    return "_".join(s1_name.split("_")[:5])


# ------------------------------------------------------------------------ sample catalog


def read_sample_catalog(
    catalog: Any = None, *, sensors: Sequence[str] = ("s1", "s2")
) -> xr.Dataset:
    """The six S1+S2 pairs of the sample catalog (a ``pystac.Catalog`` or its folder; default
    the cached one) with their 19-class labels, all in split ``train``."""
    from xcsmoe.stac.sample_catalog import example_catalog, iter_pairs

    if catalog is None or isinstance(catalog, (str, PathLike)):
        catalog = example_catalog(catalog)  # a folder of a sample catalog (built if absent)
    bands: dict[str, list[np.ndarray]] = {}
    ids, label_sets, offsets = [], [], []
    for s2_item, s1_item in iter_pairs(catalog):
        ids.append(s2_item.id)
        label_sets.append(bigearthnet19(s2_item.properties["bigearthnet:labels"]))
        offsets.append(0.0)  # BigEarthNet patches predate processing baseline 04.00
        if "s2" in sensors:
            for band in S2.bands:
                bands.setdefault(band, []).append(_read_band(_href(s2_item, band), 120))
        if "s1" in sensors:
            for band in S1.bands:
                db = _read_band(_href(s1_item, band), 120, nodata_zero=False)
                bands.setdefault(band, []).append(db_to_linear(db))
    arrays = {name: np.stack(values) for name, values in bands.items()}
    labels = multi_hot(label_sets, BIGEARTHNET_CLASSES)
    return make_samples(
        arrays, labels, task="multilabel", classes=BIGEARTHNET_CLASSES, ids=ids,
        s2_offset=offsets, dataset="sample-catalog",
    )  # fmt: skip


def _href(item: Any, band: str) -> str:
    asset = item.assets.get(band) or item.assets.get(band.lower())
    if asset is None:
        raise MissingBandError(
            expected(f"item {item.id}", f"an asset {band!r}", sorted(item.assets))
        )
    return asset.get_absolute_href().removeprefix("file://")


# ----------------------------------------------------------------------------- helpers


def _folder(path: str | PathLike[str], name: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise InputError(expected(name, "an existing folder", str(path)))
    return path


def _read_band(path: str | Path, size: int, *, nodata_zero: bool = True) -> np.ndarray:
    """One band as float32 on a ``size``×``size`` grid (coarser bands repeated: nearest)."""
    if not Path(path).is_file():
        raise MissingBandError(expected("band file", "an existing GeoTIFF", str(path)))
    with rasterio.open(path) as src:
        values = src.read(1).astype(np.float32)
    factor, rest = divmod(size, values.shape[0])
    if rest or values.shape[0] != values.shape[1]:
        raise InputError(expected(str(path), f"a square band dividing {size} px", values.shape))
    if factor > 1:
        values = values.repeat(factor, axis=0).repeat(factor, axis=1)
    return _nodata_to_nan(values) if nodata_zero else values


def _nodata_to_nan(values: np.ndarray) -> np.ndarray:
    return np.where(values == S2.nodata, np.float32(np.nan), values).astype(np.float32)
