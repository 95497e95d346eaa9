"""The CSMoE encoder: sensor combinations, shapes, routing, position embeddings, bad inputs."""

from __future__ import annotations

import pytest
import torch

from xcsmoe.errors import InputError
from xcsmoe.model.encoder import CSMoE, EncoderOutput, PatchEmbed
from xcsmoe.model.pos_embed import resample_pos_embed, sincos_2d
from xcsmoe.model.registry import create_model

D = 64  # csmoe_tiny


@pytest.mark.parametrize("size", [64, 96, 112, (64, 96)])
def test_sensor_combinations_and_shapes(tiny, size, images):
    s1, s2 = images(3, size)
    h, w = (size, size) if isinstance(size, int) else size
    n = (h // 16) * (w // 16)
    with torch.no_grad():
        both = tiny.forward_features(s1, s2)
        only1 = tiny.forward_features(s1=s1)
        only2 = tiny.forward_features(s2=s2)
    assert isinstance(both, EncoderOutput)
    assert set(both.cls) == set(both.tokens) == {"s1", "s2"}
    assert set(only1.cls) == {"s1"} and set(only2.tokens) == {"s2"}
    for sensor in ("s1", "s2"):
        assert both.cls[sensor].shape == (3, D)
        assert both.tokens[sensor].shape == (3, n, D)
        assert torch.isfinite(both.tokens[sensor]).all()
    # each sensor is encoded on its own path: single-sensor calls give the same features
    torch.testing.assert_close(only1.cls["s1"], both.cls["s1"])
    torch.testing.assert_close(only2.tokens["s2"], both.tokens["s2"])
    assert not torch.allclose(both.cls["s1"], both.cls["s2"])
    assert both.routing == {}


def test_forward_equals_forward_features_and_head_is_raw_cls(tiny, images):
    s1, s2 = images(2)
    with torch.no_grad():
        a = tiny(s1, s2)
        b = tiny.forward_features(s1, s2)
    torch.testing.assert_close(a.cls["s2"], b.cls["s2"])
    head = tiny.forward_head(a)
    assert head.shape == (2, 2 * D)
    torch.testing.assert_close(head[:, D:], a.cls["s2"])


def test_routing_shares_per_layer_and_token(tiny, images):
    s1, s2 = images(2, 96)
    with torch.no_grad():
        out = tiny.forward_features(s1, s2, return_routing=True)
    cfg = tiny.config
    for sensor in ("s1", "s2"):
        layers = out.routing[sensor]
        assert len(layers) == cfg.depth_specific + cfg.depth_shared
        for share in layers:
            assert share.shape == (2, 1 + 36, cfg.num_experts)
            torch.testing.assert_close(share.sum(-1), torch.ones(2, 37))
    assert tiny.expert_weights is out.routing
    # routing does not change the features
    with torch.no_grad():
        plain = tiny.forward_features(s1, s2)
    torch.testing.assert_close(plain.tokens["s1"], out.tokens["s1"])


def test_batch_items_are_independent(tiny, images):
    _, s2 = images(4)
    with torch.no_grad():
        full = tiny.forward_features(s2=s2)
        single = tiny.forward_features(s2=s2[2:3])
    torch.testing.assert_close(full.tokens["s2"][2:3], single.tokens["s2"], rtol=1e-4, atol=1e-5)


def test_dense_variant_has_no_routing(images):
    torch.manual_seed(0)
    model = create_model("csmoe_tiny", num_experts=0).eval()
    s1, _ = images(1)
    with torch.no_grad():
        out = model.forward_features(s1=s1, return_routing=True)
    assert out.routing == {"s1": []}
    assert not any("experts" in k for k in model.state_dict())


def test_position_embeddings_native_and_recomputed(tiny):
    native = tiny.position_embedding(4, 4, torch.zeros(1))
    torch.testing.assert_close(native, sincos_2d(D, 4, 4))
    larger = tiny.position_embedding(6, 7, torch.zeros(1))
    assert larger.shape == (1, 1 + 42, D)
    # a grid's embedding is the top-left part of a larger grid's (row-major)
    grid = larger[0, 1:].reshape(6, 7, D)
    torch.testing.assert_close(grid[:4, :4].reshape(16, D), native[0, 1:])
    assert torch.equal(larger[0, 0], torch.zeros(D))


def test_resample_pos_embed_keeps_prefix_and_identity():
    pos = sincos_2d(32, 4, 4)
    assert resample_pos_embed(pos, 4, 4) is pos
    out = resample_pos_embed(pos, 6, 6)
    assert out.shape == (1, 37, 32)
    torch.testing.assert_close(out[:, :1], pos[:, :1])


def test_gradients_flow_to_both_sensor_paths(tiny, images):
    s1, s2 = images(2)
    out = tiny.train().forward_features(s1, s2)
    (out.cls["s1"].sum() + out.tokens["s2"].pow(2).mean()).backward()
    assert tiny.patch_embed.proj.weight.grad.abs().sum() > 0
    assert tiny.patch_embed_s2.proj.weight.grad.abs().sum() > 0
    assert tiny.blocks[0].mlp.experts.fc1_weight.grad.abs().sum() > 0
    assert tiny.pos_embed.grad is None  # fixed


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, ["s1/s2", "at least one"]),
        ({"s2": torch.zeros(1, 3, 64, 64)}, ["s2 channels", "10 bands", "3"]),
        ({"s1": torch.zeros(1, 10, 64, 64)}, ["s1 channels", "2 bands"]),
        ({"s2": torch.zeros(1, 10, 60, 64)}, ["s2 height/width", "patch size 16", "(60, 64)"]),
        ({"s2": torch.zeros(10, 64, 64)}, ["s2", "(B, 10, H, W)", "x[None]"]),
        ({"s2": torch.zeros(1, 10, 64, 64, dtype=torch.int32)}, ["s2 dtype", "floating"]),
        ({"s1": torch.full((1, 2, 64, 64), float("nan"))}, ["s1", "finite", "NaN"]),
        ({"s1": torch.full((1, 2, 64, 64), float("inf"))}, ["s1", "finite"]),
        ({"s1": [[1.0]]}, ["s1", "list"]),
    ],
)
def test_bad_inputs_raise_input_error_naming_the_argument(tiny, kwargs, words):
    with pytest.raises(InputError) as info:
        tiny.forward_features(**kwargs)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


def test_constructs_and_runs_on_meta_device():
    with torch.device("meta"):
        model = create_model("csmoe_p16")
        out = model.forward_features(s2=torch.empty(1, 10, 224, 224))
    assert isinstance(model, CSMoE)
    assert out.tokens["s2"].shape == (1, 196, 768)


@pytest.mark.parametrize("channels", [2, 10, 12])
def test_patch_embedding_equals_its_convolution_also_under_bf16_autocast(channels):
    """The matmul form gives the stride-P convolution's numbers, in float32 and in bf16.

    oneDNN's bf16 stride-16 convolution returned vectors with cosine ≈ 0 to float32 for
    10 channels on an AVX512-BF16 CPU; the patch embedding must not inherit that.
    """
    torch.manual_seed(0)
    embed = PatchEmbed(16, channels, 64)
    x = torch.randn(2, channels, 48, 64)
    with torch.no_grad():
        conv = embed.proj(x).flatten(2).transpose(1, 2)  # float32 reference, (B, N, D)
        torch.testing.assert_close(embed(x), conv, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = embed(x).float()
    cosine = torch.nn.functional.cosine_similarity(low, conv, dim=-1)
    assert cosine.min() > 0.999, float(cosine.min())
