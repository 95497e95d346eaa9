"""Registry, config validation, the paper's figures and the CLI."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from xcsmoe.cli import main
from xcsmoe.errors import ConfigError
from xcsmoe.model.cli import PAPER_FIGURES
from xcsmoe.model.config import CSMoEConfig
from xcsmoe.model.figures import MacCounter, model_figures
from xcsmoe.model.registry import create_model, model_config


def test_list_models_and_public_api():
    import xcsmoe

    names = xcsmoe.list_models()
    assert {"csmoe_p14", "csmoe_p16", "csmoe_p28", "csmoe_p32", "csmae_p15", "csmoe_tiny"} <= set(
        names
    )
    for name in (
        "CSMoE",
        "CSMoEConfig",
        "CSMoEForPretraining",
        "SoftMoE",
        "create_model",
        "load_checkpoint",
        "save_checkpoint",
        "model_figures",
    ):
        assert getattr(xcsmoe, name) is not None


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError) as info:
        create_model("csmoe_p15")
    assert "csmoe_p16" in str(info.value) and "csmae_p15" in str(info.value)


def test_bad_overrides():
    with pytest.raises(ConfigError, match="unknown_field") as info:
        create_model("csmoe_tiny", unknown_field=1)
    assert "num_experts" in str(info.value)  # lists the valid fields
    with pytest.raises(ConfigError, match="img_size"):
        model_config("csmoe_tiny", img_size=70)
    with pytest.raises(ConfigError, match="slot_mode"):
        model_config("csmoe_tiny", slot_mode="random")
    with pytest.raises(ConfigError, match="num_heads"):
        model_config("csmoe_tiny", num_heads=3)


def test_config_is_frozen_and_serialisable():
    config = model_config("csmoe_p16")
    assert (config.img_size, config.embed_dim, config.num_heads, config.num_experts) == (
        224,
        768,
        12,
        8,
    )
    assert (
        config.depth_specific,
        config.depth_shared,
        config.decoder_dim,
        config.decoder_depth,
    ) == (4, 2, 256, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.patch_size = 8  # type: ignore[misc]
    assert CSMoEConfig.from_dict(config.to_dict()) == config
    csmae = model_config("csmae_p15")
    assert (csmae.img_size, csmae.patch_size, csmae.num_experts, csmae.depth_specific) == (
        120,
        15,
        0,
        10,
    )


@pytest.mark.parametrize("name", sorted(PAPER_FIGURES))
def test_paper_figures_within_one_percent(name):
    figures = model_figures(name)  # meta device: no memory, no arithmetic
    params, gmacs = PAPER_FIGURES[name]
    assert figures.params_m == pytest.approx(params, rel=0.01)
    assert figures.gmacs == pytest.approx(gmacs, rel=0.01)
    assert figures.c2c == pytest.approx(figures.params_m / figures.gmacs)
    # torch's counter: FLOPs = 2 MACs plus the attention products we leave out
    assert figures.torch_gflops > 2 * figures.gmacs


def test_p16_macs_match_the_closed_form():
    d, e, h, n = 768, 8, 3072, 197
    s = math.ceil(n / e)
    attention = n * 4 * d * d
    moe = s * d * d * e + 3 * n * e * s * d + e * s * 2 * d * h
    patch = 196 * 10 * 16 * 16 * d
    assert model_figures("csmoe_p16").macs == patch + 6 * (attention + moe)


def test_figures_of_an_instance_match_the_name_and_s1_is_cheaper():
    torch.manual_seed(0)
    model = create_model("csmoe_tiny")
    assert model_figures(model) == model_figures("csmoe_tiny")
    assert model_figures(model, sensor="s1").macs < model_figures(model, sensor="s2").macs
    assert model_figures(model, img_size=128).macs > model_figures(model).macs
    with pytest.raises(ConfigError, match="sensor"):
        model_figures(model, sensor="s3")


def test_mac_counter_counts_linear_and_conv_only():
    lin = torch.nn.Linear(8, 4)
    with MacCounter() as counter:
        lin(torch.zeros(3, 8))
        torch.nn.functional.scaled_dot_product_attention(*(torch.zeros(1, 5, 8),) * 3)
    assert counter.macs == 3 * 8 * 4


def test_cli_model_figures(capsys):
    assert main(["model", "figures", "csmoe_tiny", "csmoe_p16"]) == 0
    out = capsys.readouterr().out
    assert "csmoe_p16" in out and "10.089" in out and "271.30" in out
    assert main(["model", "list"]) == 0
    assert "csmoe_tiny" in capsys.readouterr().out
