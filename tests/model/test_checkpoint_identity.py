"""A checkpoint knows what it is: variant and band order, checked from its header alone."""

from __future__ import annotations

import hashlib

import pytest
import torch

from xcsmoe.embedding.runtime import model_spec, resolve_model, weights_digest
from xcsmoe.errors import CheckpointError
from xcsmoe.model.checkpoint import (
    load_checkpoint,
    match_checkpoint,
    read_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
)
from xcsmoe.model.registry import create_model, model_config

TINY = "csmoe_tiny"


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(create_model(TINY), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def vh_vv_path(tmp_path_factory):
    """A csmoe_tiny whose S1 patch embedding takes VH, VV (the CSMAE stacking)."""
    torch.manual_seed(1)
    model = create_model(TINY, s1_bands=("vh", "vv"))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "vhvv.safetensors")


def test_header_gives_names_shapes_and_config_without_weights(tiny_path):
    state, config = read_checkpoint(tiny_path)
    header, header_config = read_checkpoint_header(tiny_path)
    assert header_config == config and config.name == TINY
    assert header.keys() == state.keys()
    assert all(header[k].shape == state[k].shape for k in state)
    assert all(t.device.type == "meta" for t in header.values())  # nothing was read


def test_band_order_travels_with_the_checkpoint(vh_vv_path):
    _, stored = read_checkpoint_header(vh_vv_path)
    assert stored.s1_bands == ("vh", "vv")
    assert model_config(TINY).s1_bands == ("vv", "vh")  # the registry's default differs
    assert create_model(TINY, weights=vh_vv_path).config.s1_bands == ("vh", "vv")
    assert load_checkpoint(vh_vv_path).config.s1_bands == ("vh", "vv")
    assert match_checkpoint(vh_vv_path, model_config(TINY)).s1_bands == ("vh", "vv")
    assert resolve_model(None, vh_vv_path, patch=16)[1].bands("s1") == ("vh", "vv")


def test_another_variant_names_both_sides(tiny_path, tmp_path):
    message = "checkpoint is csmoe_tiny, model is csmoe_p16"
    with pytest.raises(CheckpointError, match=message):
        match_checkpoint(tiny_path, model_config("csmoe_p16"))
    with pytest.raises(CheckpointError, match=message):
        create_model("csmoe_p16", weights=tiny_path)
    # a torch state dict stores no config: the variant is recognised from the shapes
    bare = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_checkpoint(tiny_path).state_dict()}, bare)
    with pytest.raises(CheckpointError, match=message):
        match_checkpoint(bare, model_config("csmoe_p16"))
    assert match_checkpoint(bare, model_config(TINY)) == model_config(TINY)


def test_damaged_files_fail_on_the_header(tiny_path, tmp_path):
    data = tiny_path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 64)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match="truncated or corrupted"):
            read_checkpoint_header(path)
        with pytest.raises(CheckpointError, match="truncated or corrupted"):
            resolve_model(TINY, path, patch=16)


def test_pretraining_checkpoint_matches_its_encoder(tmp_path):
    torch.manual_seed(2)
    path = save_checkpoint(create_model(TINY, pretraining=True), tmp_path / "pre.safetensors")
    assert match_checkpoint(path, model_config(TINY)).name == TINY


def test_model_comes_from_the_checkpoint(tiny_path):
    spec, config = resolve_model(None, tiny_path, patch=16)
    assert spec.name == TINY and config == model_config(TINY)
    spec, config = resolve_model(None, "random", patch=32)
    assert spec.name == "csmoe_p32" and spec.is_random


def test_weights_digest_is_the_file_sha256(tiny_path):
    digest = weights_digest(model_spec(TINY, tiny_path))
    assert digest == hashlib.sha256(tiny_path.read_bytes()).hexdigest()
    assert weights_digest(model_spec(TINY, "random", seed=3)) == "random:3"
    assert weights_digest(model_spec(TINY, "random", seed=4)) != "random:3"
