"""load_cube on the sample catalog: values, alignment, laziness, time pairing."""

from __future__ import annotations

import warnings
from urllib.parse import urlparse

import dask.array as da
import numpy as np
import pytest
import rasterio

from xcsmoe.errors import MissingBandError
from xcsmoe.sensors import S1, S2, linear_to_db, normalise
from xcsmoe.stac.load import load_cube


def _read(item, key):
    with rasterio.open(urlparse(item.assets[key].href).path) as src:
        return src.read(1), src.transform


@pytest.fixture(scope="module")
def pair_cube(sample_items):
    return load_cube([sample_items["s2"][0]], [sample_items["s1"][0]])


def test_cube_layout(pair_cube):
    ds = pair_cube
    assert list(ds.data_vars) == [*S2.bands, *S1.bands]
    assert all(ds[v].dims == ("time", "y", "x") for v in ds.data_vars)
    assert all(ds[v].dtype == np.float32 for v in ds.data_vars)
    assert all(isinstance(ds[v].data, da.Array) for v in ds.data_vars)
    assert ds.odc.geobox.shape == (120, 120) and ds.odc.crs.epsg == 32633
    assert ds.odc.geobox.resolution.x == 10
    assert ds.s2_offset.values.tolist() == [0.0]
    assert ds.vv.attrs["units"] == "linear power" and ds.B02.attrs["units"] == "DN"


def test_values_equal_source_geotiffs(pair_cube, sample_items):
    s2, s1 = sample_items["s2"][0], sample_items["s1"][0]
    ds = pair_cube.isel(time=0).compute()
    for band in ("B02", "B03", "B04", "B08"):
        source, transform = _read(s2, band)
        assert tuple(transform)[:6] == tuple(ds.odc.geobox.transform)[:6]
        np.testing.assert_array_equal(ds[band].values, source.astype(np.float32))
    for band in ("vv", "vh"):  # S1 is stored in dB and loaded as linear power
        source, transform = _read(s1, band)
        assert tuple(transform)[:6] == tuple(ds.odc.geobox.transform)[:6]
        np.testing.assert_allclose(linear_to_db(ds[band].values), source, atol=1e-4)


def test_20m_bands_are_resampled_to_10m(pair_cube, sample_items):
    source, _ = _read(sample_items["s2"][0], "B11")
    b11 = pair_cube.B11.isel(time=0).values  # default: nearest neighbour, as in the paper
    np.testing.assert_array_equal(b11, np.kron(source, np.ones((2, 2))).astype(np.float32))
    smooth = load_cube([sample_items["s2"][0]], bands=["B11"], resampling="bilinear")
    values = smooth.B11.isel(time=0).values
    assert values.shape == (120, 120) and not np.isnan(values).any()
    assert abs(float(values.mean()) - float(source.mean())) < 0.01 * float(source.mean())
    assert not np.array_equal(values, b11)


def test_chunks_are_user_settable(sample_items):
    ds = load_cube([sample_items["s2"][0]], [sample_items["s1"][0]], chunks={"x": 64, "y": 32})
    assert ds.B02.data.chunksize == (1, 32, 64)
    assert load_cube([sample_items["s2"][0]], chunks=-1).B02.data.chunksize == (1, 120, 120)


def test_single_sensor_and_mixed_list(sample_items):
    s2_only = load_cube([sample_items["s2"][1]])
    assert list(s2_only.data_vars) == list(S2.bands) and "s1_time" not in s2_only.coords
    s1_only = load_cube(None, [sample_items["s1"][1]])
    assert list(s1_only.data_vars) == ["vv", "vh"] and s1_only.odc.crs.epsg == 32629
    mixed = load_cube([sample_items["s1"][1], sample_items["s2"][1]])
    assert list(mixed.data_vars) == [*S2.bands, *S1.bands]


def test_s1_paired_with_nearest_s2_day(sample_items):
    # S2 on 2017-09-24, its S1 partner on 2017-09-25: one time step, s1_time records it
    s2, s1 = sample_items["s2"][4], sample_items["s1"][4]
    ds = load_cube([s2], [s1])
    assert ds.sizes["time"] == 1
    assert str(ds.s1_time.values[0])[:10] == "2017-09-25"
    assert not np.isnan(ds.vv.isel(time=0, y=0, x=0).values)
    with pytest.warns(UserWarning, match="2017-09-25"):
        tight = load_cube([s2], [s1], s1_tolerance="6h")
    assert np.isnat(tight.s1_time.values[0])
    assert np.isnan(tight.vv.values).all()


def test_two_patches_one_grid(sample_items):
    # patches 36_85 and 4_55: same S2 tile, same day, ~40 km apart -> one solar day
    s2, s1 = sample_items["s2"][1:3], sample_items["s1"][1:3]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ds = load_cube(s2, s1, chunks={"x": 512, "y": 512})
    assert ds.sizes["time"] == 1
    for s2_item, s1_item in zip(s2, s1, strict=True):
        source, transform = _read(s2_item, "B04")
        col, row = ~ds.odc.geobox.transform * (transform.c, transform.f)
        window = ds.B04.isel(time=0, y=slice(round(row), round(row) + 120),
                             x=slice(round(col), round(col) + 120))  # fmt: skip
        np.testing.assert_array_equal(window.values, source.astype(np.float32))
        vh, _ = _read(s1_item, "vh")
        window = ds.vh.isel(time=0, y=slice(round(row), round(row) + 120),
                            x=slice(round(col), round(col) + 120))  # fmt: skip
        np.testing.assert_allclose(linear_to_db(window.values), vh, atol=1e-4)


def test_bbox_and_normalise(sample_items):
    s2 = sample_items["s2"][0]
    west, south, east, north = s2.bbox
    bbox = (west, south, (west + east) / 2, (south + north) / 2)
    ds = load_cube([s2], [sample_items["s1"][0]], bbox=bbox)
    assert 50 <= ds.sizes["x"] <= 70 and ds.odc.crs.epsg == 32633
    out = normalise(ds)
    assert isinstance(out.B02.data, da.Array)
    values = out.compute()
    assert all(values[v].dtype == np.float32 for v in values.data_vars)
    assert abs(float(values.B02.mean())) < 3 and abs(float(values.vv.mean())) < 3


def test_baseline_offset_recorded_per_time(sample_items):
    old = sample_items["s2"][0]
    new = old.clone()
    new.id = "new-baseline"
    new.datetime = old.datetime.replace(year=2023)
    new.properties["s2:processing_baseline"] = "05.09"
    ds = load_cube([old, new])
    assert ds.s2_offset.values.tolist() == [0.0, -1000.0]
    out = normalise(ds).isel(y=0, x=0).compute()
    # same DN, different baseline: standardised values differ by 1000 / std
    assert float(out.B02[0] - out.B02[1]) == pytest.approx(1000 / S2.std["B02"], rel=1e-4)


def test_nodata_becomes_nan(sample_items, tmp_path):
    item = sample_items["s2"][0].clone()
    source, _ = _read(item, "B02")
    with rasterio.open(urlparse(item.assets["B02"].href).path) as src:
        profile = src.profile
    source[:10, :10] = 0
    path = tmp_path / "B02.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(source, 1)
    item.assets["B02"].href = path.as_uri()
    b02 = load_cube([item], bands=["B02"]).B02.isel(time=0).values
    assert np.isnan(b02[:10, :10]).all() and not np.isnan(b02[10:, 10:]).any()


def test_unconfigured_collection_uses_band_named_assets(sample_items):
    s2, s1 = sample_items["s2"][0].clone(), sample_items["s1"][0].clone()
    s2.collection_id, s1.collection_id = "my-s2", "my-s1"
    s1.assets = {key.upper(): asset for key, asset in s1.assets.items()}  # "VV", "VH"
    ds = load_cube([s2], None, bands=["B02"])
    assert ds.B02.attrs["units"] == "DN"
    s1_cube = load_cube(None, [s1])  # raster:bands unit "dB" -> converted to linear power
    source, _ = _read(s1, "VV")
    np.testing.assert_allclose(linear_to_db(s1_cube.vv.isel(time=0).values), source, atol=1e-4)
    del s2.assets["B03"]
    with pytest.raises(MissingBandError, match="B03"):
        load_cube([s2])
