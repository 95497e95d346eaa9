"""Every argument of embed / expert_usage / embed_to_zarr is checked before work starts.

The cube is a real pair of the sample catalog (BigEarthNet S1+S2, 120×120 px) loaded
with ``load_cube``; every refusal here happens before a task, a cluster or a store exists.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xcsmoe
from xcsmoe.embedding.api import embedding_graph
from xcsmoe.embedding.batch import embed_to_zarr
from xcsmoe.errors import CheckpointError, ConfigError, XcsmoeError

TINY = "csmoe_tiny"
BASE = {"model": TINY, "weights": "random", "window": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def real_cube(sample_items):
    return xcsmoe.load_cube(
        [sample_items["s2"][0]], [sample_items["s1"][0]], chunks={"x": 64, "y": 64}
    )


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = xcsmoe.create_model(TINY)
    return xcsmoe.save_checkpoint(model, tmp_path_factory.mktemp("w") / "tiny.safetensors")


BAD_ARGUMENTS = [
    ("window", 0, "window: expected an int >= 1"),
    ("window", -64, "window: expected an int >= 1"),
    ("window", 64.0, r"Pass window=64 \(an int, not a float\)"),
    ("window", "64", r"Pass window=64 \(an int, not a string\)"),
    ("window", True, "window"),
    ("window", 40, "window: expected a positive multiple of the patch size 16, got 40"),
    ("patch", 16.0, "patch"),
    ("chunks", 0, "chunks"),
    ("chunks", "128", "chunks"),
    ("chunks", (128,), "chunks"),
    ("chunks", 64.5, "chunks"),
    ("output", "pixels", "output"),
    ("output", (), "output"),
    ("output", ("cls", "rgb"), "output"),
    ("sensors", "s3", "sensors"),
    ("sensors", ["s1", "s5"], "sensors"),
    ("sensors", 2, "sensors"),
    ("seed", -1, "seed"),
    ("seed", 1.5, "seed"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", 8.0, "batch_size"),
    ("device", "gpu", "device"),
    ("device", "cuda:99", "device"),
    ("device", 0, "device"),
    ("dtype", "float64", "dtype"),
    ("dtype", torch.int8, "dtype"),
    ("normalise", "yes", "normalise"),
    ("gpu_resources", 1, "gpu_resources"),
    ("edge", "shift", "edge"),
    ("model", "csmoe_p17", "model"),
    ("model", 16, "model"),
    ("weights", 3, "weights"),
    ("weights", "/no/such/file.safetensors", "weights"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_ARGUMENTS)
def test_bad_arguments_get_a_clear_error(real_cube, name, value, message):
    kwargs = BASE | {name: value}
    patch = kwargs.pop("patch", 16)
    with pytest.raises(XcsmoeError, match=message) as caught:
        xcsmoe.embed(real_cube, patch, **kwargs)
    assert isinstance(caught.value, ValueError | KeyError)
    assert str(caught.value).startswith((name, "weights"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_fails_on_the_client(real_cube):
    with pytest.raises(ConfigError, match=r"device: expected a device this machine has \(0 CUDA"):
        xcsmoe.embed(real_cube, 16, **(BASE | {"device": "cuda"}))
    # GPU workers (gpu_resources=True) are not this machine: then the client does not check
    graph = embedding_graph(real_cube, 16, **(BASE | {"device": "cuda"}), gpu_resources=True)
    assert graph.settings["device"] == "cuda" and graph.settings["dtype"] == "bfloat16"


def test_accepted_on_purpose(real_cube):
    only_cls = xcsmoe.embed(real_cube, 16, output="cls", **BASE)  # a bare name = ("cls",)
    assert set(only_cls.data_vars) == {"cls", "valid_fraction"}
    numpy_ints = xcsmoe.embed(real_cube, np.int64(16), **(BASE | {"window": np.int64(64)}))
    assert numpy_ints.attrs["window"] == 64
    pair = xcsmoe.embed(real_cube, 16, chunks=(128, None), **BASE)
    assert pair.cls.sizes["cls_y"] == 2
    graph = embedding_graph(real_cube, 16, dtype=torch.float32, **BASE)
    assert graph.settings == {"normalise": True, "dtype": "float32", "device": "cpu"}


def test_expert_usage_layer_must_exist_on_the_sensor_path(real_cube):
    kwargs = BASE | {"sensor": "s2"}
    # csmoe_tiny: 2 modality-specific + 1 shared Soft MoE layers on each sensor's path
    for layer in (3, -4):
        with pytest.raises(ConfigError, match=r"layer: expected an int in \[-3, 2\]"):
            xcsmoe.expert_usage(real_cube, 16, layer=layer, **kwargs)
    with pytest.raises(ConfigError, match="layer"):
        xcsmoe.expert_usage(real_cube, 16, layer=1.0, **kwargs)
    usage = xcsmoe.expert_usage(real_cube, 16, layer=-3, **kwargs)
    assert usage.attrs["layer"] == -3
    dense = {"model": "csmae_p15", "weights": "random", "device": "cpu"}
    with pytest.raises(ConfigError, match="no expert routing"):
        xcsmoe.expert_usage(real_cube, 15, layer=0, **dense)


def test_weights_are_matched_on_the_client(real_cube, tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint is csmoe_tiny, model is csmoe_p16"):
        xcsmoe.embed(real_cube, 16, model="csmoe_p16", weights=tiny_checkpoint, device="cpu")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        xcsmoe.embed(real_cube, 16, model=TINY, weights=truncated, device="cpu")
    # without model=, the variant is the checkpoint's; patch must agree with it
    emb = xcsmoe.embed(real_cube, 16, weights=tiny_checkpoint, window=64, device="cpu")
    assert emb.attrs["model"] == TINY
    with pytest.raises(ConfigError, match="patch: expected 16, the patch size of csmoe_tiny"):
        xcsmoe.embed(real_cube, 32, weights=tiny_checkpoint, device="cpu")


def test_embed_to_zarr_refuses_before_a_store_or_cluster_exists(
    real_cube, tiny_checkpoint, tmp_path
):
    store = tmp_path / "emb.zarr"
    bad = [
        ({"model": "csmoe_p16", "weights": tiny_checkpoint}, CheckpointError),
        ({"model": TINY, "weights": "random", "window": 64.0}, ConfigError),
        ({"model": TINY, "weights": "random", "dtype": "int8"}, ConfigError),
        ({"model": TINY, "weights": "random", "output": ("pixels",)}, ConfigError),
    ]
    if not torch.cuda.is_available():
        bad.append(({"model": TINY, "weights": "random", "device": "cuda"}, ConfigError))
    for kwargs, error in bad:
        with pytest.raises(error):
            embed_to_zarr(real_cube, store, patch=16, progress=False, **kwargs)
        assert not store.exists()
