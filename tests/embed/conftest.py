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

from xcsmoe.sensors import S1, S2

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
        for name in S1.bands + S2.bands
    }
    ds = xr.Dataset(data, coords=coords)
    return ds.chunk({"time": 1, "y": chunks, "x": chunks}) if chunks else ds


def forward_window(model, normalised: xr.Dataset, row: int, col: int, window: int, sensors):
    """The model on one window of a (time-less, normalised) cube, by hand: slice, NaN → 0,
    zero-pad past the edge, forward. Returns cls (D,) and tokens (D, g, g), sensors concatenated."""
    import torch

    inputs = {}
    for sensor, names in (("s1", S1.bands), ("s2", S2.bands)):
        if sensor not in sensors:
            continue
        pixels = np.stack([normalised[n].values for n in names])
        part = pixels[:, row * window : (row + 1) * window, col * window : (col + 1) * window]
        padded = np.zeros((len(names), window, window), dtype=np.float32)
        padded[:, : part.shape[1], : part.shape[2]] = np.nan_to_num(part, nan=0.0)
        inputs[sensor] = torch.from_numpy(padded)[None]
    with torch.inference_mode():
        out = model.forward_features(**inputs)
    cls = torch.cat([out.cls[s] for s in sensors], -1)[0].numpy()
    tokens = torch.cat([out.tokens[s] for s in sensors], -1)[0].numpy()
    g = window // model.config.patch_size
    return cls, tokens.reshape(g, g, -1).transpose(2, 0, 1)


@pytest.fixture(scope="session")
def direct_forward():
    """:func:`forward_window`, the reference every embedding is compared with."""
    return forward_window


@pytest.fixture
def cube() -> xr.Dataset:
    return synthetic_cube()


@pytest.fixture(scope="session")
def make_cube():
    """Factory of synthetic cubes (``make_cube(height, width, times, chunks=...)``)."""
    return synthetic_cube
