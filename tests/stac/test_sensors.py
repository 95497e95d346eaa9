"""Sensor specs: band order, statistics, S2 baseline offset, S1 dB, lazy normalise."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from bigearthnet_common.constants import BAND_STATS_S1, BAND_STATS_S2

from xcsmoe.errors import MissingBandError
from xcsmoe.sensors import (
    S1,
    S2,
    db_to_linear,
    linear_to_db,
    normalise,
    processing_baseline,
    s2_offset,
)


def test_band_order_and_storage():
    assert S2.bands == ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B11", "B12", "B8A")
    assert S1.bands == ("vv", "vh")
    assert (S2.dtype, S2.nodata, S2.scale) == ("uint16", 0, 1e-4)
    assert {S2.resolution[b] for b in ("B02", "B03", "B04", "B08")} == {10}
    assert {S2.resolution[b] for b in S2.bands[4:]} == {20}
    assert S1.units == "linear power" and S1.normalised_units == "dB"


def test_statistics_come_from_bigearthnet_common():
    mean, std = S2.stats()
    assert mean.dtype == np.float32 and mean.shape == (10,)
    assert mean[3] == pytest.approx(BAND_STATS_S2["mean"]["B08"])
    assert std[-1] == pytest.approx(BAND_STATS_S2["std"]["B8A"])
    mean, std = S1.stats(("VH",))
    assert mean[0] == pytest.approx(BAND_STATS_S1["mean"]["VH"])
    with pytest.raises(MissingBandError, match="B99"):
        S2.band("B99")


@pytest.mark.parametrize(
    ("props", "baseline", "offset"),
    [
        ({"s2:processing_baseline": "05.10"}, "05.10", -1000.0),
        ({"s2:processing_baseline": "04.00"}, "04.00", -1000.0),
        ({"s2:processing_baseline": "03.01"}, "03.01", 0.0),
        (
            {"s2:product_uri": "S2B_MSIL2A_20240419T095549_N0510_R122_T47XML_2024.SAFE"},
            "05.10",
            -1000.0,
        ),
        (
            {"s2:product_uri": "S2A_MSIL1C_20170613T101031_N0205_R022_T33UUP_2017.SAFE"},
            "02.05",
            0.0,
        ),
        ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}, "05.09", 0.0),
        ({}, None, 0.0),
    ],
)
def test_s2_offset_follows_processing_baseline(props, baseline, offset):
    assert processing_baseline(props) == baseline
    assert s2_offset(props) == offset


def test_decibel_conversion_round_trips():
    db = np.array([-25.0, -12.5, 0.0, 3.0], dtype=np.float32)
    linear = db_to_linear(db)
    assert linear.dtype == np.float32
    np.testing.assert_allclose(linear_to_db(linear), db, atol=1e-5)
    assert np.isnan(linear_to_db(np.array([0.0, -1.0]))).all()


def _raw_cube() -> xr.Dataset:
    data = np.full((2, 4, 4), 1500.0, dtype=np.float32)
    data[0, 0, 0] = np.nan
    vv = np.full((2, 4, 4), 0.1, dtype=np.float32)
    return xr.Dataset(
        {
            "B02": (("time", "y", "x"), da.from_array(data, chunks=(1, 4, 4))),
            "vv": (("time", "y", "x"), da.from_array(vv, chunks=(1, 4, 4))),
            "label": (("time",), np.array([1, 2])),
        },
        coords={"s2_offset": ("time", np.array([0.0, -1000.0], dtype=np.float32))},
    )


def test_normalise_is_lazy_float32_and_applies_offset():
    out = normalise(_raw_cube())
    assert set(out.data_vars) == {"B02", "vv"}
    assert isinstance(out.B02.data, da.Array)
    values = out.compute()
    assert values.B02.dtype == np.float32
    assert np.isnan(values.B02[0, 0, 0])
    mean, std = BAND_STATS_S2["mean"]["B02"], BAND_STATS_S2["std"]["B02"]
    assert float(values.B02[0, 1, 1]) == pytest.approx((1500 - mean) / std, rel=1e-5)
    assert float(values.B02[1, 1, 1]) == pytest.approx((500 - mean) / std, rel=1e-5)
    vv_mean, vv_std = BAND_STATS_S1["mean"]["VV"], BAND_STATS_S1["std"]["VV"]
    assert float(values.vv[0, 0, 0]) == pytest.approx((-10 - vv_mean) / vv_std, rel=1e-5)


def test_normalise_rejects_cubes_without_bands():
    with pytest.raises(MissingBandError, match="load_cube"):
        normalise(xr.Dataset({"foo": ("x", [1.0])}))
