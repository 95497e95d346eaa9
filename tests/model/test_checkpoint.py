"""Checkpoints: bit-identical round trip, CSMAE Lightning layout, strict errors, resampling."""

from __future__ import annotations

import pytest
import torch

from xcsmoe.errors import CheckpointError
from xcsmoe.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from xcsmoe.model.encoder import CSMoE
from xcsmoe.model.pos_embed import resample_pos_embed
from xcsmoe.model.pretrain import CSMoEForPretraining
from xcsmoe.model.registry import create_model


def _seeded(name: str = "csmoe_tiny", seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_model(name, **kw)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip_is_bit_identical(tmp_path, images):
    model = _seeded().eval()
    path = save_checkpoint(model, tmp_path / "tiny.safetensors")
    _, config = read_checkpoint(path)
    assert config == model.config
    loaded = load_checkpoint(path).eval()  # rebuilt from the stored config
    assert isinstance(loaded, CSMoE)
    _assert_same_state(model, loaded)
    via_registry = create_model("csmoe_tiny", weights=path).eval()
    _assert_same_state(model, via_registry)
    s1, s2 = images(2)
    with torch.no_grad():
        assert torch.equal(model(s1, s2).tokens["s2"], loaded(s1, s2).tokens["s2"])


def test_pretraining_round_trip_and_encoder_only_weights(tmp_path):
    full = _seeded(pretraining=True)
    path = save_checkpoint(full, tmp_path / "pre.safetensors")
    again = load_checkpoint(path)
    assert isinstance(again, CSMoEForPretraining)
    _assert_same_state(full, again)
    # the encoder part of a pretraining checkpoint loads into a plain encoder ...
    encoder = create_model("csmoe_tiny", weights=path)
    _assert_same_state(full.backbone, encoder)
    # ... and encoder-only weights load into a pretraining model's backbone
    enc_path = save_checkpoint(encoder, tmp_path / "enc.safetensors")
    with pytest.raises(CheckpointError, match="missing"):
        create_model("csmoe_tiny", pretraining=True, weights=enc_path)  # decoders missing
    partial = _seeded(pretraining=True, seed=5)
    load_checkpoint(enc_path, partial, strict=False)
    _assert_same_state(encoder, partial.backbone)


def test_csmae_lightning_layout_loads_into_csmae_p15(tmp_path, images):
    source = _seeded("csmae_p15", seed=1)
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    d = source.config.embed_dim
    state.update(
        {
            "backbone.fc_norm.weight": torch.ones(d),  # timm leftover of global_pool="avg"
            "backbone.fc_norm.bias": torch.zeros(d),
            "decoder_s1_to_s2.decoder_embed.weight": torch.zeros(512, d),
            "decoder_s2_to_s1.mask_token": torch.zeros(1, 1, 512),
        }
    )
    path = tmp_path / "csmae.ckpt"
    torch.save({"state_dict": state, "epoch": 149, "hyper_parameters": {"lr": 1e-4}}, path)
    target = create_model("csmae_p15", weights=path)
    _assert_same_state(source, target)
    s1, s2 = images(1, 120)
    with torch.no_grad():
        torch.testing.assert_close(source.eval()(s1, s2).cls["s1"], target.eval()(s1, s2).cls["s1"])


def test_strict_error_lists_missing_unexpected_and_misshaped(tmp_path):
    state = _seeded().state_dict()
    del state["norm.weight"]
    state["blocks.0.mlp.extra"] = torch.zeros(3)
    state["cls_token_s2"] = torch.zeros(1, 1, 32)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        create_model("csmoe_tiny", weights=path)
    message = str(info.value)
    assert "missing 1 [norm.weight]" in message
    assert "unexpected 1 [blocks.0.mlp.extra]" in message
    assert "cls_token_s2: checkpoint (1, 1, 32) vs model (1, 1, 64)" in message
    assert isinstance(info.value, ValueError)


def test_variant_mismatch_is_rejected(tmp_path):
    path = save_checkpoint(_seeded(), tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match=r"mis-shaped \d+ \[.*experts"):
        create_model("csmoe_tiny", num_experts=2, weights=path)


def test_pos_embed_is_resampled_for_another_image_size(tmp_path):
    source = _seeded()
    path = save_checkpoint(source, tmp_path / "tiny.safetensors")
    bigger = create_model("csmoe_tiny", img_size=96, weights=path)
    assert bigger.pos_embed.shape == (1, 37, 64)
    torch.testing.assert_close(bigger.pos_embed, resample_pos_embed(source.pos_embed, 6, 6))
    torch.testing.assert_close(bigger.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_unreadable_or_missing_files(tmp_path, content):
    path = tmp_path / "x.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="weights"):
        load_checkpoint(path, _seeded())


def test_pickled_objects_need_trust(tmp_path):
    path = tmp_path / "obj.ckpt"
    torch.save({"state_dict": _seeded().state_dict(), "cfg": _Opaque()}, path)
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        load_checkpoint(path, _seeded())
    model = load_checkpoint(path, _seeded(seed=3), trust_pickle=True)
    _assert_same_state(model, _seeded())
    with pytest.raises(CheckpointError, match=r"trust_pickle=True \(to create_model"):
        create_model("csmoe_tiny", weights=path)
    _assert_same_state(create_model("csmoe_tiny", weights=path, trust_pickle=True), _seeded())


def test_per_expert_linear_layout_is_stacked_on_load(tmp_path):
    model = _seeded()
    state = model.state_dict()
    for key in [k for k in state if k.endswith("experts.fc1_weight")]:
        prefix = key[: -len("fc1_weight")]
        for layer in ("fc1", "fc2"):
            weight = state.pop(f"{prefix}{layer}_weight")
            bias = state.pop(f"{prefix}{layer}_bias")
            for e in range(weight.shape[0]):
                state[f"{prefix}{e}.{layer}.weight"] = weight[e].t().contiguous()
                state[f"{prefix}{e}.{layer}.bias"] = bias[e]
    path = tmp_path / "linear.pt"
    torch.save(state, path)
    _assert_same_state(model, create_model("csmoe_tiny", weights=path))


class _Opaque:
    """Stands in for an arbitrary pickled object (e.g. a config) inside a Lightning file."""
