"""Readers of published layouts, on real pixels; band mapping; label tables."""

from __future__ import annotations

import json
import pickle
import sys
import types

import numpy as np
import pandas as pd
import pytest
import rasterio

from xcsmoe.errors import InputError, MissingBandError
from xcsmoe.evaluation.datasets import model_inputs, read_generic, with_labels
from xcsmoe.evaluation.readers import (
    BIGEARTHNET_CLASSES,
    EUROSAT_BANDS,
    clc_to_class_map,
    read_bigearthnet,
    read_eurosat_ms,
)
from xcsmoe.model.registry import model_config
from xcsmoe.sensors import S2

BEN_S2 = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43"
BEN_S1 = "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_70_48"


def _eurosat_pixels(real_dir):
    with rasterio.open(real_dir / "eurosat-ms" / "Pasture" / "Pasture_300.tif") as src:
        return src.read().astype(np.float32)


def test_eurosat_reader_maps_13_bands_by_name(real_dir):
    samples = read_eurosat_ms(real_dir / "eurosat-ms")
    assert samples.attrs["task"] == "multiclass"
    assert samples.sizes["sample"] == 3 and samples.sizes["y"] == 64
    names = [samples.attrs["classes"][i] for i in samples["labels"].values]
    assert names == ["AnnualCrop", "Pasture", "SeaLake"]
    assert set(samples.data_vars) - {"labels"} == set(S2.bands)  # B01, B09, B10 dropped
    raw = _eurosat_pixels(real_dir)
    pasture = samples.sel(sample="Pasture_300")
    np.testing.assert_array_equal(pasture["B8A"].values, raw[EUROSAT_BANDS.index("B8A")])
    np.testing.assert_array_equal(pasture["B11"].values, raw[10])
    # the model order is config.bands("s2"): B02 B03 B04 B08 B05 B06 B07 B11 B12 B8A
    config = model_config("csmoe_tiny")
    inputs = model_inputs(samples, config, ("s2",))["s2"]
    mean, std = S2.stats(config.bands("s2"))
    expected = (
        raw[[EUROSAT_BANDS.index(b) for b in config.bands("s2")]] - mean[:, None, None]
    ) / std[:, None, None]
    np.testing.assert_allclose(inputs[1], expected, rtol=1e-5, atol=1e-5)


def test_missing_bands_are_an_error_not_zeros(real_dir):
    samples = read_eurosat_ms(real_dir / "eurosat-ms").drop_vars(["B8A", "B11"])
    with pytest.raises(MissingBandError, match=r"missing \['B11', 'B8A'\]"):
        model_inputs(samples, model_config("csmoe_tiny"), ("s2",))
    with pytest.raises(MissingBandError, match="vh"):
        model_inputs(read_eurosat_ms(real_dir / "eurosat-ms"), model_config("csmoe_tiny"), ("s1",))


def test_bigearthnet_v2_layout_with_metadata_table(real_dir):
    root = real_dir / "bigearthnet"
    # the fixture's S1 and S2 patches are not a pair; the table still names one of each
    table = pd.DataFrame(
        {
            "patch_id": [BEN_S2],
            "s1_name": [BEN_S1],
            "split": ["validation"],
            "labels": [["Pastures", "Non-irrigated arable land"]],
        }
    )
    samples = read_bigearthnet(root, table)
    assert samples["split"].values.tolist() == ["valid"]
    labelled = [BIGEARTHNET_CLASSES[i] for i in np.flatnonzero(samples["labels"].values[0])]
    assert labelled == ["Arable land", "Pastures"]  # 43-class names mapped onto the 19
    s2 = root / "BigEarthNet-S2" / BEN_S2.rsplit("_", 2)[0] / BEN_S2
    with rasterio.open(s2 / f"{BEN_S2}_B05.tif") as src:  # 20 m band, 60 x 60
        b05 = src.read(1).astype(np.float32)
    np.testing.assert_array_equal(samples["B05"].values[0, ::2, ::2], b05)
    np.testing.assert_array_equal(samples["B05"].values[0, 1::2, 1::2], b05)
    s1 = root / "BigEarthNet-S1" / BEN_S1.rsplit("_", 3)[0] / BEN_S1
    with rasterio.open(s1 / f"{BEN_S1}_VV.tif") as src:  # dB on disk, linear power in the set
        vv_db = src.read(1)
    np.testing.assert_allclose(10 * np.log10(samples["vv"].values[0]), vv_db, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="labels"):
        read_bigearthnet(root, table.drop(columns="labels"))


def test_reference_map_codes_become_19_class_indices(real_dir):
    path = next((real_dir / "bigearthnet" / "Reference_Maps").glob("*/*/*_reference_map.tif"))
    with rasterio.open(path) as src:
        codes = src.read(1)
    classes = clc_to_class_map(codes)
    # CLC 211 non-irrigated arable land, 231 pastures, 311 broad-leaved, 313 mixed forest
    for code, name in (
        (211, "Arable land"),
        (231, "Pastures"),
        (311, "Broad-leaved forest"),
        (313, "Mixed forest"),
    ):
        assert (classes[codes == code] == BIGEARTHNET_CLASSES.index(name)).all()


def test_generic_reader_takes_a_patch_store_and_a_label_table(real_dir, tmp_path):
    import xarray as xr

    raw = read_eurosat_ms(real_dir / "eurosat-ms")
    s2 = np.stack([np.nan_to_num(raw[b].values, nan=0) for b in S2.bands], axis=1)
    store = xr.Dataset(
        {
            "s2": (("patch", "band_s2", "y", "x"), s2.astype(np.uint16)),
            "s2_offset": ("patch", np.zeros(3, np.float32)),
        },
        coords={
            "patch": np.array(["a", "b", "c"], dtype=object),
            "band_s2": np.array(S2.bands, dtype=object),
        },
    )
    store.to_zarr(tmp_path / "patches.zarr", zarr_format=3, consolidated=False)
    table = pd.DataFrame({"sample": ["c", "a", "b"], "labels": ["water", "crop", "grass"]})
    samples = read_generic(tmp_path / "patches.zarr", table, task="multiclass")
    assert samples.attrs["classes"] == ["crop", "grass", "water"]
    assert samples["labels"].values.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(samples["B8A"].values, raw["B8A"].values)
    with pytest.raises(InputError, match="1 samples without a label") as info:
        read_generic(tmp_path / "patches.zarr", table.iloc[:2], task="multiclass")
    assert "'b'" in str(info.value)
    extra = pd.concat([table, pd.DataFrame({"sample": ["z"], "labels": ["crop"]})])
    with pytest.raises(InputError, match="1 labels without a sample"):
        with_labels(samples, extra, task="multiclass")


# ------------------------------------------------------------------------ geobench layout


def _geobench_modules(monkeypatch):
    """Stand-ins named like geobench's classes, so pickles reference them as geobench does."""
    modules = {}
    for name in ("geobench", "geobench.dataset", "geobench.label", "geobench.task"):
        modules[name] = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, modules[name])

    def make(module, cls, init):
        klass = type(cls, (), {"__init__": init, "__module__": module})
        setattr(modules[module], cls, klass)
        return klass

    def band_init(self, name, alt_names=(), spatial_resolution=None, wavelength=None):
        self.name, self.alt_names, self.spatial_resolution, self.wavelength = (
            name,
            alt_names,
            spatial_resolution,
            wavelength,
        )

    def label_init(self, n_classes, class_names=None):
        self.n_classes, self._class_names = n_classes, class_names

    def task_init(self, dataset_name, bands_info, label_type):
        self.dataset_name, self.bands_info, self.label_type = dataset_name, bands_info, label_type

    return (
        make("geobench.dataset", "Sentinel2", band_init),
        make("geobench.label", "Classification", label_init),
        make("geobench.task", "TaskSpecifications", task_init),
    )


def write_geobench_sample(folder, name, bands, label, band_info):
    """One sample in geobench's HDF5 layout (band datasets + root 'pickle' attribute)."""
    import h5py

    attrs = {"label": label, "bands_order": list(bands)}
    with h5py.File(folder / f"{name}.hdf5", "w") as handle:
        for key, values in bands.items():
            handle.create_dataset(key, data=values)
            attrs[key] = {
                "date": None,
                "spatial_resolution": 10,
                "band_info": band_info[key],
                "meta_info": None,
                "transform": None,
                "crs": None,
            }
        handle.attrs["pickle"] = str(pickle.dumps(attrs))


GEOBENCH_NAMES = {
    "B01": "01 - Coastal aerosol", "B02": "02 - Blue", "B03": "03 - Green", "B04": "04 - Red",
    "B05": "05 - Vegetation Red Edge", "B06": "06 - Vegetation Red Edge", "B07": "07 - Vegetation Red Edge",
    "B08": "08 - NIR", "B8A": "08A - Vegetation Red Edge", "B09": "09 - Water vapour",
    "B10": "10 - SWIR - Cirrus", "B11": "11 - SWIR", "B12": "12 - SWIR",
}  # fmt: skip


def test_geobench_layout_reader(real_dir, tmp_path, monkeypatch):
    """A tiny m-eurosat-like folder written from the real EuroSAT MS patches in geobench's
    on-disk layout (HDF5 per sample, partition JSON, task_specs.pkl)."""
    from xcsmoe.evaluation.geobench import read_geobench

    sentinel2, classification, task_specs = _geobench_modules(monkeypatch)
    info = {GEOBENCH_NAMES[b]: sentinel2(GEOBENCH_NAMES[b]) for b in EUROSAT_BANDS}
    classes = ["AnnualCrop", "Pasture", "SeaLake"]
    folder = tmp_path / "m-eurosat"
    folder.mkdir()
    partition = {"train": [], "valid": [], "test": []}
    for index, (cls, split) in enumerate(zip(classes, ("train", "train", "test"), strict=True)):
        path = next((real_dir / "eurosat-ms" / cls).glob("*.tif"))
        with rasterio.open(path) as src:
            pixels = src.read()
        bands = {GEOBENCH_NAMES[b]: pixels[i] for i, b in enumerate(EUROSAT_BANDS)}
        write_geobench_sample(folder, f"id_{index}", bands, index, info)
        partition[split].append(f"id_{index}")
    (folder / "default_partition.json").write_text(json.dumps(partition))
    spec = task_specs("m-eurosat", list(info.values()), classification(3, classes))
    (folder / "task_specs.pkl").write_bytes(pickle.dumps(spec))
    monkeypatch.undo()  # the reader must not need geobench

    samples = read_geobench(folder)
    assert samples.attrs["task"] == "multiclass" and samples.attrs["classes"] == classes
    assert samples["split"].values.tolist() == ["train", "train", "test"]
    assert samples["labels"].values.tolist() == [0, 1, 2]
    assert set(samples.data_vars) - {"labels"} == set(S2.bands)
    eurosat = read_eurosat_ms(real_dir / "eurosat-ms")
    np.testing.assert_array_equal(samples["B8A"].values, eurosat["B8A"].values)
    assert read_geobench(folder, splits=("test",)).sizes["sample"] == 1


def test_geobench_unpickler_refuses_code(tmp_path):
    from xcsmoe.evaluation.geobench import safe_loads

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.print"):
        safe_loads(pickle.dumps(Evil()))
