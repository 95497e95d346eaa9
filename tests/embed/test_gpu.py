"""Reduced precision against the float32 CPU reference.

bf16 keeps 8 significant bits: every rounding is off by at most 2⁻⁹ ≈ 0.2 % relative, and
matmuls accumulate in float32. Through the tiny model's 3 residual, LayerNorm-normalised
layers (6 in ``csmoe_p16``), bf16 autocast on the CPU lands at ≈ 0.4 % relative L2 error and
a cosine of 0.99999 per vector. The bounds below (cosine ≥ 0.999 for every [CLS] and token
vector, relative L2 ≤ 2 % over the whole array) leave a 5× margin for the other summation
orders of CUDA kernels, while any misplaced window, token or channel gives a cosine near 0
on these features.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

TINY = "csmoe_tiny"
WINDOW = 64
MIN_COSINE = 0.999
MAX_RELATIVE_L2 = 0.02

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def embed(ds: xr.Dataset, **kwargs) -> xr.Dataset:
    defaults = {"model": TINY, "weights": "random", "window": WINDOW, "normalise": False}
    return ds.csmoe.embed(patch=16, **(defaults | kwargs)).compute()


def assert_close_in_bf16(low: xr.Dataset, reference: xr.Dataset) -> None:
    """Same NaN layout and valid fractions; every vector within the bf16 bounds."""
    np.testing.assert_array_equal(low.valid_fraction.values, reference.valid_fraction.values)
    for name in ("cls", "tokens"):
        a = np.moveaxis(low[name].values, 1, -1).reshape(-1, low.sizes["embedding"])
        b = np.moveaxis(reference[name].values, 1, -1).reshape(-1, low.sizes["embedding"])
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        a, b = a[~np.isnan(b).any(axis=1)], b[~np.isnan(b).any(axis=1)]
        assert len(b) > 0
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosine.min() >= MIN_COSINE, (name, float(cosine.min()))
        relative = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert relative <= MAX_RELATIVE_L2, (name, float(relative))


@pytest.fixture
def cube_with_gaps(make_cube) -> xr.Dataset:
    ds = make_cube(chunks=None)  # one block per time step, 2 x 4 windows
    for name in ds.data_vars:
        ds[name][0, :64, 64:128] = np.nan  # one window without data
    return ds


def test_cpu_bf16_autocast_is_close_to_float32(cube_with_gaps):
    """The dtype option on the CPU: bf16 autocast changes the values, within the bounds."""
    reference = embed(cube_with_gaps, device="cpu", dtype="float32")
    low = embed(cube_with_gaps, device="cpu", dtype="bfloat16")
    assert not np.array_equal(low.cls.values, reference.cls.values, equal_nan=True)
    assert_close_in_bf16(low, reference)


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_is_close_to_the_float32_cpu_reference(cube_with_gaps):
    reference = embed(cube_with_gaps, device="cpu", dtype="float32")
    low = embed(cube_with_gaps, device="cuda")  # bf16 autocast by default on CUDA
    assert_close_in_bf16(low, reference)
    auto = embed(cube_with_gaps)  # "auto" picks CUDA and bf16 here
    np.testing.assert_allclose(auto.cls.values, low.cls.values, atol=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_on_the_sample_catalog(sample_items):
    import xcsmoe

    cube = xcsmoe.load_cube([sample_items["s2"][0]], [sample_items["s1"][0]])
    reference = embed(cube, normalise=True, device="cpu", dtype="float32")
    low = embed(cube, normalise=True, device="cuda", dtype="bfloat16")
    assert_close_in_bf16(low, reference)


@pytest.mark.gpu
@needs_cuda
def test_cuda_expert_usage_still_sums_to_one(make_cube):
    usage = make_cube().csmoe.expert_usage(
        patch=16, model=TINY, weights="random", window=WINDOW, normalise=False, device="cuda"
    )
    np.testing.assert_allclose(usage.sum("expert").values, 1.0, atol=1e-2)  # bf16 shares
