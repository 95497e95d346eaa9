"""Fixtures of the embedding tests: a synthetic, already standardised S1+S2 cube.

The synthetic cube checks plumbing (windows, grids, chunking, NaN, clusters) with
exactly known inputs; tests against the real sample catalog live beside them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from xcsmoe.embed.plan import S1_VARIABLES, S2_VARIABLES

TINY = "csmoe_tiny"


def synthetic_cube(
    height: int = 120,
    width: int = 200,
    times: int = 2,
    *,
    seed: int = 0,
    chunks: int | None = 64,
    crs: str = "EPSG:32633",
) -> xr.Dataset:
    """Standard-normal 'normalised' cube with every S1 and S2 band on a UTM 10 m grid."""
    geobox = GeoBox.from_bbox(
        (600_000, 5_100_000, 600_000 + 10 * width, 5_100_000 + 10 * height), crs, resolution=10
    )
    rng = np.random.default_rng(seed)
    coords = dict(xr_coords(geobox))
    coords["time"] = pd.date_range("2021-06-01", periods=times, freq="5D").values
    data = {
        name: (("time", "y", "x"), rng.standard_normal((times, height, width), dtype=np.float32))
        for name in S1_VARIABLES + S2_VARIABLES
    }
    ds = xr.Dataset(data, coords=coords)
    return ds.chunk({"time": 1, "y": chunks, "x": chunks}) if chunks else ds


@pytest.fixture
def cube() -> xr.Dataset:
    return synthetic_cube()


@pytest.fixture(scope="session")
def make_cube():
    """Factory of synthetic cubes (``make_cube(height, width, times, chunks=...)``)."""
    return synthetic_cube
