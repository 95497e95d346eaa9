"""Pretraining model: masking, every loss term, and a tiny model overfitting a fixed batch."""

from __future__ import annotations

import math

import pytest
import torch

from xcsmoe.errors import InputError
from xcsmoe.model.losses import expert_entropy, nt_xent, patchify, unpatchify
from xcsmoe.model.pretrain import LOSS_TERMS, CSMoEForPretraining, random_masking
from xcsmoe.model.registry import create_model
from xcsmoe.model.soft_moe import RoutingWeights


@pytest.fixture
def pretrainer() -> CSMoEForPretraining:
    torch.manual_seed(0)
    return create_model("csmoe_tiny", pretraining=True)


def test_every_term_is_finite_and_total_is_the_weighted_sum(pretrainer, images):
    s1, s2 = images(4)
    out = pretrainer(s1, s2, generator=torch.Generator().manual_seed(0))
    for key in (*LOSS_TERMS, "uni_s1", "uni_s2", "cross_s1", "cross_s2", "total"):
        assert out.losses[key].dim() == 0 and torch.isfinite(out.losses[key]), key
    c = pretrainer.config
    weighted = (
        c.weight_uni * out.losses["uni"]
        + c.weight_cross * out.losses["cross"]
        + c.weight_mim * out.losses["mim"]
        + c.weight_repulsion * out.losses["repulsion"]
        + c.weight_entropy * out.losses["entropy"]
    )
    torch.testing.assert_close(out.loss, weighted)
    assert out.losses["repulsion"] > 0 and out.losses["entropy"] >= 0
    # independent masks per sensor, ratio 0.5 of the 16 patches
    assert out.mask["s1"].shape == (4, 16)
    assert (out.mask["s1"].sum(1) == 8).all() and (out.mask["s2"].sum(1) == 8).all()
    assert not torch.equal(out.mask["s1"], out.mask["s2"])
    assert out.pred["s1"].shape == out.pred["s2_to_s1"].shape == (4, 16, 16 * 16 * 2)
    assert out.pred["s2"].shape == out.pred["s1_to_s2"].shape == (4, 16, 16 * 16 * 10)


def test_total_decreases_when_overfitting_a_fixed_batch(pretrainer, images):
    s1, s2 = images(4, seed=1)
    optimiser = torch.optim.AdamW(pretrainer.parameters(), lr=2e-3)
    totals = []
    for step in range(30):
        out = pretrainer(s1, s2, generator=torch.Generator().manual_seed(step % 2))
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        totals.append(out.loss.item())
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-5:]) / 5 < 0.8 * sum(totals[:5]) / 5, totals


def test_dense_model_has_zero_routing_losses(images):
    torch.manual_seed(0)
    model = create_model("csmoe_tiny", pretraining=True, num_experts=0)
    out = model(*images(2))
    assert out.losses["repulsion"] == 0 and out.losses["entropy"] == 0
    assert torch.isfinite(out.loss)


def test_unpaired_inputs_are_rejected(pretrainer, images):
    s1, s2 = images(2)
    with pytest.raises(InputError, match="paired"):
        pretrainer(s1, s2[:1])
    with pytest.raises(InputError, match="s2 channels"):
        pretrainer(s1, s2[:, :3])


def test_random_masking_keeps_and_restores():
    x = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)
    kept, mask, restore = random_masking(x, 0.5, torch.Generator().manual_seed(0))
    assert kept.shape == (2, 5, 3) and mask.sum() == 10
    for b in range(2):
        kept_rows = {tuple(r.tolist()) for r in kept[b]}
        unmasked = {tuple(x[b, i].tolist()) for i in range(10) if mask[b, i] == 0}
        assert kept_rows == unmasked
    assert torch.equal(restore.sort(1).values, torch.arange(10).expand(2, 10))


def test_patchify_round_trip():
    images = torch.randn(2, 3, 32, 48)
    patches = patchify(images, 16)
    assert patches.shape == (2, 6, 16 * 16 * 3)
    assert torch.equal(patches[0, 1].reshape(16, 16, 3).permute(2, 0, 1), images[0, :, :16, 16:32])
    assert torch.equal(unpatchify(patches, 16, 3, (2, 3)), images)


def test_nt_xent_rewards_aligned_pairs():
    z = torch.eye(8)[:4] * 3
    aligned = nt_xent(z, z, 0.5)
    shuffled = nt_xent(z, z[[1, 2, 3, 0]], 0.5)
    assert aligned < shuffled


def test_expert_entropy_is_zero_for_balanced_use():
    balanced = RoutingWeights(
        dispatch=torch.zeros(1),
        combine=torch.full((1, 3, 8), 1 / 8),
        slots=torch.zeros(1),
        num_experts=4,
    )
    skewed = RoutingWeights(
        dispatch=torch.zeros(1),
        combine=torch.tensor([[[1.0, 0, 0, 0, 0, 0, 0, 0]]]).expand(1, 3, 8),
        slots=torch.zeros(1),
        num_experts=4,
    )
    assert abs(expert_entropy([balanced]).item()) < 1e-6
    assert expert_entropy([skewed]).item() == pytest.approx(math.log(4), rel=1e-5)


# ----------------------------------------------------------- single-sensor batches
# A sample without S1 (``has_s1`` False; the loader fills its image with zeros) feeds
# only its S2 reconstruction: no term may read the absent sensor's pixels.

SINGLE_SENSOR_BATCHES = {
    "s2 only": [False, False, False],
    "mixed": [True, False, False],  # one pair, two S2-only samples
}
RECONSTRUCTION_TERMS = ("uni_s1", "uni_s2", "cross_s1", "cross_s2", "uni", "cross", "mim")


def _losses_with_absent_s1(model, images, has_s1: list[bool]) -> list[dict[str, torch.Tensor]]:
    """Losses of one batch (same masks) with the absent S1 images zero, then random."""
    s1, s2 = images(3, seed=2)
    flags = torch.tensor(has_s1)
    runs = []
    for fill in (torch.zeros_like(s1), 5 * torch.randn(s1.shape)):
        absent_changed = torch.where(flags[:, None, None, None], s1, fill)
        with torch.no_grad():
            out = model(
                absent_changed, s2, generator=torch.Generator().manual_seed(1),
                has_s1=flags, has_s2=torch.ones(3, dtype=torch.bool),
            )  # fmt: skip
        runs.append(out.losses)
    return runs


@pytest.mark.parametrize("has_s1", SINGLE_SENSOR_BATCHES.values(), ids=SINGLE_SENSOR_BATCHES)
def test_absent_sensor_pixels_do_not_reach_the_reconstruction_terms(pretrainer, images, has_s1):
    zeros, noise = _losses_with_absent_s1(pretrainer, images, has_s1)
    for key in RECONSTRUCTION_TERMS:
        torch.testing.assert_close(zeros[key], noise[key], msg=key)
    assert torch.isfinite(zeros["uni_s2"]) and zeros["uni_s2"] > 0
    if not any(has_s1):
        assert zeros["uni_s1"] == 0 and zeros["cross_s1"] == 0 and zeros["cross_s2"] == 0


@pytest.mark.parametrize("has_s1", SINGLE_SENSOR_BATCHES.values(), ids=SINGLE_SENSOR_BATCHES)
def test_absent_sensor_pixels_leave_every_loss_term_unchanged(pretrainer, images, has_s1):
    zeros, noise = _losses_with_absent_s1(pretrainer, images, has_s1)
    for key in zeros:
        torch.testing.assert_close(zeros[key], noise[key], msg=key)
