"""Embeddings of the real sample catalog, searched through a loopback STAC API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xcsmoe

WINDOW = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = xcsmoe.create_model("csmoe_tiny")
    return xcsmoe.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def sample_cube(stac_api_url, sample_items):
    s2_item = sample_items["s2"][0]
    s2 = xcsmoe.search(
        stac_api_url, collections=[s2_item.collection_id], intersects=s2_item.geometry
    )
    s1_collection = sample_items["s1"][0].collection_id
    s1 = xcsmoe.search(stac_api_url, collections=[s1_collection], intersects=s2_item.geometry)
    s2 = [item for item in s2 if item.id == s2_item.id]
    return xcsmoe.load_cube(s2, s1, chunks={"x": WINDOW, "y": WINDOW})


def test_sample_cube_embeds_lazily_on_the_exact_grid(sample_cube, checkpoint, direct_forward):
    emb = sample_cube.csmoe.embed(
        patch=16, model="csmoe_tiny", weights=checkpoint, window=WINDOW,
        device="cpu", dtype="float32",  # compared with a float32 CPU forward below
    )  # fmt: skip
    assert emb.tokens.chunks is not None  # lazy
    assert emb.tokens.odc.geobox == sample_cube.odc.geobox.zoom_out(16)
    assert emb.cls.shape[-2:] == (2, 2)  # 120 px → two 64-px windows per side, last one padded
    assert emb.attrs["weights"] == str(checkpoint) and emb.attrs["sensors"] == "s1+s2"

    values = emb.compute()
    model = xcsmoe.load_checkpoint(checkpoint).eval()
    normalised = xcsmoe.normalise(sample_cube).isel(time=0)
    g = WINDOW // 16
    for row, col in [(0, 0), (1, 1)]:
        cls, tokens = direct_forward(model, normalised, row, col, WINDOW, ("s1", "s2"))
        np.testing.assert_allclose(values.cls.values[0, :, row, col], cls, atol=1e-5)
        grid = values.tokens.values[0, :, row * g : (row + 1) * g, col * g : (col + 1) * g]
        np.testing.assert_allclose(grid, tokens[:, : grid.shape[1], : grid.shape[2]], atol=1e-5)
    assert values.valid_fraction.values[0, 1, 1] == pytest.approx((120 - 64) ** 2 / 64**2)


@pytest.mark.slow
def test_full_size_csmoe_p16_matches_a_hand_run_forward(sample_cube, direct_forward):
    """The default, full-size model (271 M parameters) on the real pair, 112-px windows."""
    from xcsmoe.embedding.runtime import build_model, model_spec

    window, g = 112, 112 // 16
    emb = sample_cube.csmoe.embed(
        patch=16, weights="random", window=window, device="cpu", dtype="float32"
    )
    assert emb.attrs["model"] == "csmoe_p16" and emb.sizes["embedding"] == 2 * 768
    assert emb.tokens.odc.geobox == sample_cube.odc.geobox.zoom_out(16)
    values = emb.compute()
    model = build_model(model_spec("csmoe_p16", "random"))  # the same seeded network
    normalised = xcsmoe.normalise(sample_cube).isel(time=0)
    for row, col in [(0, 0), (0, 1), (1, 0), (1, 1)]:  # the last row and column are padded
        cls, tokens = direct_forward(model, normalised, row, col, window, ("s1", "s2"))
        np.testing.assert_allclose(values.cls.values[0, :, row, col], cls, atol=1e-4)
        grid = values.tokens.values[0, :, row * g : (row + 1) * g, col * g : (col + 1) * g]
        np.testing.assert_allclose(grid, tokens[:, : grid.shape[1], : grid.shape[2]], atol=1e-4)
    assert values.valid_fraction.values[0, 1, 1] == pytest.approx((120 - 112) ** 2 / 112**2)
