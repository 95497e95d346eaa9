"""Inputs that used to give silently wrong embeddings, on real sample-catalog imagery.

Each case is compared with an independent reference: the same pixels presented the
plain way (north-up, NaN for nodata, S2 alone, channels in the trained order).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import xcsmoe

TINY = "csmoe_tiny"
BASE = {"model": TINY, "weights": "random", "window": 64, "device": "cpu", "dtype": "float32"}
ATOL = 1e-5
D = 64  # csmoe_tiny embedding width per sensor


def embed(ds, **kwargs):
    return xcsmoe.embed(ds, 16, **(BASE | kwargs)).compute()


def assert_same(a, b, names=("cls", "tokens", "valid_fraction")):
    for name in names:
        np.testing.assert_allclose(a[name].values, b[name].values, atol=ATOL, err_msg=name)


@pytest.fixture(scope="module")
def pair(sample_items):
    return sample_items["s2"][0], sample_items["s1"][0]


@pytest.fixture(scope="module")
def real_cube(pair):
    return xcsmoe.load_cube([pair[0]], [pair[1]], chunks={"x": 64, "y": 64})


@pytest.fixture(scope="module")
def s2_values(pair):
    """The S2 DN of the pair, in memory (float32, no missing pixel in this patch)."""
    cube = xcsmoe.load_cube([pair[0]]).isel(time=0).compute()
    assert all(np.isfinite(cube[v].values).all() for v in cube.data_vars)
    return cube


# ------------------------------------------------------------------------- band order
def test_the_model_band_order_feeds_the_patch_embedding(real_cube, tmp_path):
    torch.manual_seed(5)
    vv_vh = xcsmoe.create_model(TINY)
    vh_vv = xcsmoe.create_model(TINY, s1_bands=("vh", "vv"))
    vh_vv.load_state_dict(vv_vh.state_dict())
    with torch.no_grad():  # the same network, expecting its S1 channels the other way round
        vh_vv.patch_embed.proj.weight.copy_(vv_vh.patch_embed.proj.weight[:, [1, 0]])
    paths = {
        "vv_vh": xcsmoe.save_checkpoint(vv_vh, tmp_path / "vv_vh.safetensors"),
        "vh_vv": xcsmoe.save_checkpoint(vh_vv, tmp_path / "vh_vv.safetensors"),
    }
    expected = embed(real_cube, weights=paths["vv_vh"])
    swapped = embed(real_cube, weights=paths["vh_vv"], model=None)  # variant from the file
    assert_same(swapped, expected)
    # control: the swapped weights fed in the cube's order give other numbers
    ignored = xcsmoe.create_model(TINY)
    ignored.load_state_dict(vh_vv.state_dict())
    wrong = embed(real_cube, weights=xcsmoe.save_checkpoint(ignored, tmp_path / "w.safetensors"))
    assert np.abs(wrong.cls.values[:, :D] - expected.cls.values[:, :D]).max() > 1e-3


# --------------------------------------------------------------------- S1/S2 pairing
def test_a_time_step_without_s1_is_embedded_from_s2(pair, real_cube):
    s2, s1 = pair
    later = s2.clone()
    later.id = f"{s2.id}-later"
    later.datetime = s2.datetime + pd.Timedelta("10D")  # no S1 within 3 days of it
    cube = xcsmoe.load_cube([s2, later], [s1], chunks={"x": 64, "y": 64})
    assert np.isnat(cube.s1_time.values).tolist() == [False, True]
    with pytest.warns(UserWarning, match="1 of 2 time steps have no paired Sentinel-1"):
        emb = embed(cube)
    s2_only = embed(cube, sensors="s2")
    assert np.isnan(emb.cls.values[1, :D]).all() and np.isnan(emb.tokens.values[1, :D]).all()
    np.testing.assert_allclose(emb.cls.values[1, D:], s2_only.cls.values[1], atol=ATOL)
    np.testing.assert_allclose(emb.tokens.values[1, D:], s2_only.tokens.values[1], atol=ATOL)
    np.testing.assert_allclose(emb.valid_fraction.values[1], s2_only.valid_fraction.values[1])
    assert emb.valid_fraction.values[1, 0, 0] == 1.0
    paired = embed(real_cube)  # the first step is a normal S1+S2 pair
    np.testing.assert_allclose(emb.cls.values[0], paired.cls.values[0], atol=ATOL)


def test_auto_uses_s2_alone_when_s1_is_never_paired(pair):
    with pytest.warns(UserWarning, match="are not in the cube"):  # S1 is 6.7 h later
        cube = xcsmoe.load_cube([pair[0]], [pair[1]], s1_tolerance="1h")
    assert np.isnat(cube.s1_time.values).all() and "vv" in cube.data_vars
    with pytest.warns(UserWarning, match="no time step has a paired Sentinel-1"):
        emb = embed(cube)
    assert emb.attrs["sensors"] == "s2" and emb.sizes["embedding"] == D
    assert np.isfinite(emb.cls.values).all()
    assert_same(emb, embed(cube, sensors="s2"))


# --------------------------------------------------------------------------- nodata
HOLE = (slice(10, 30), slice(5, 25))


@pytest.fixture(scope="module")
def with_hole(s2_values):
    """The reference: S2 DN with NaN in a 20×20 hole."""
    cube = s2_values.copy(deep=True)
    for name in cube.data_vars:
        cube[name].values[HOLE] = np.nan
    return cube


def integer_cube(cube, fill: int):
    """A hand-built uint16 cube: ``fill`` in the hole, no nodata metadata at all."""
    out = cube.copy(deep=True)
    for name in out.data_vars:
        values = np.nan_to_num(out[name].values, nan=fill).astype(np.uint16)
        out[name] = out[name].copy(data=values)
        out[name].attrs, out[name].encoding = {}, {}
    return out


@pytest.mark.parametrize(
    "convention", ["attrs:nodata", "attrs:_FillValue", "encoding:_FillValue", "encoding:nodata"]
)
def test_integer_nodata_follows_rioxarray_and_odc_conventions(with_hole, convention):
    expected = embed(with_hole, sensors="s2")
    place, key = convention.split(":")
    cube = integer_cube(with_hole, fill=65535)
    for name in cube.data_vars:
        getattr(cube[name], place)[key] = 65535
    assert_same(embed(cube, sensors="s2"), expected)
    assert np.isfinite(expected.cls.values).all()
    # control: the same pixels taken as data give other numbers
    unmasked = integer_cube(with_hole, fill=65535)
    assert np.abs(embed(unmasked, sensors="s2").cls.values - expected.cls.values).max() > 1e-3


def test_integer_s2_without_nodata_metadata_uses_the_storage_nodata_zero(with_hole):
    cube = integer_cube(with_hole, fill=0)
    assert cube.B02.dtype == np.uint16 and not cube.B02.attrs and not cube.B02.encoding
    assert_same(embed(cube, sensors="s2"), embed(with_hole, sensors="s2"))


# ---------------------------------------------------------------------- orientation
@pytest.mark.parametrize("flip", [{"y": slice(None, None, -1)}, {"x": slice(None, None, -1)},
                                  {"y": slice(None, None, -1), "x": slice(None, None, -1)}])  # fmt: skip
def test_south_up_or_east_west_cubes_are_embedded_north_up(real_cube, flip):
    flipped = real_cube.isel(flip)
    assert flipped.odc.geobox != real_cube.odc.geobox
    emb, expected = embed(flipped), embed(real_cube)
    assert emb.tokens.odc.geobox == expected.tokens.odc.geobox == real_cube.odc.geobox.zoom_out(16)
    assert emb.attrs["cls_transform"] == expected.attrs["cls_transform"]
    assert_same(emb, expected)


# ------------------------------------------------------------------ processing level
def test_level_1c_input_warns_that_the_statistics_are_level_2a(pair):
    l1c = pair[0].clone()
    l1c.properties["s2:product_type"] = "S2MSI1C"
    cube = xcsmoe.load_cube([l1c], chunks={"x": 64, "y": 64})
    assert cube.attrs["s2_processing_level"] == "L1C"
    with pytest.warns(UserWarning, match="processing level L1C.*L2A statistics"):
        xcsmoe.embed(cube, 16, **BASE)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*processing level")
        xcsmoe.embed(cube, 16, normalise=False, **BASE)  # the user standardised it
        xcsmoe.embed(xcsmoe.load_cube([pair[0]]), 16, **BASE)  # level not recorded: L2A


# ------------------------------------------------------------------ all NaN / inf
@pytest.mark.filterwarnings("ignore:an input block has no valid pixel:UserWarning")
@pytest.mark.filterwarnings("ignore:input holds ±inf values:UserWarning")  # once per block
def test_all_missing_or_infinite_input_warns(s2_values, with_hole):
    for value in (np.nan, np.inf):
        cube = s2_values.copy(deep=True)
        for name in cube.data_vars:
            cube[name].values[:] = value
        with pytest.warns(UserWarning, match="every value of .* is NaN, inf or nodata"):
            emb = embed(cube, sensors="s2")
        assert np.isnan(emb.cls.values).all() and (emb.valid_fraction.values == 0).all()
    infinite = with_hole.copy(deep=True)
    for name in infinite.data_vars:
        infinite[name].values[HOLE] = np.inf
    with pytest.warns(UserWarning, match="±inf.*treated as missing"):
        emb = embed(infinite, sensors="s2")
    assert_same(emb, embed(with_hole, sensors="s2"))
    lazy = infinite.chunk({"x": 64, "y": 64})  # checked block by block as it computes
    with pytest.warns(UserWarning, match="±inf values; they are treated as missing"):
        emb = embed(lazy, sensors="s2")
    assert_same(emb, embed(with_hole, sensors="s2"))
