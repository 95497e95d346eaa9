"""The Soft MoE layer's defining properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xcsmoe.model.soft_moe import Experts, SoftMoE

D, E, H = 16, 4, 32


def make(slot_mode: str = "grouped", seed: int = 0, slots_per_expert: int = 3) -> SoftMoE:
    torch.manual_seed(seed)
    moe = SoftMoE(D, E, H, slot_mode=slot_mode, slots_per_expert=slots_per_expert)
    with torch.no_grad():
        moe.scale.fill_(5.0)  # sharper routing than at init, so tests are not trivially uniform
    return moe


def tokens(n: int = 10, b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, n, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 8, 10, 17])
def test_weights_normalise_as_stated(n):
    moe = make()
    x = tokens(n)
    y, route = moe(x, return_routing=True)
    slots = E * -(-n // E)
    assert y.shape == x.shape
    assert route.dispatch.shape == route.combine.shape == (2, n, slots)
    # dispatch: softmax over tokens; combine: softmax over all slots of all experts
    torch.testing.assert_close(route.dispatch.sum(1), torch.ones(2, slots))
    torch.testing.assert_close(route.combine.sum(2), torch.ones(2, n))
    share = route.expert_share
    assert share.shape == (2, n, E)
    torch.testing.assert_close(share.sum(-1), torch.ones(2, n))
    assert (route.dispatch >= 0).all() and (route.combine >= 0).all()


def test_each_slot_is_processed_by_exactly_one_expert():
    moe = make()
    x = tokens(10)
    y, route = moe(x, return_routing=True)
    s = moe.slots_per_expert(10)
    slots_in = torch.einsum("bnm,bnd->bmd", route.dispatch, x)
    ex = moe.experts
    reference = torch.empty_like(slots_in)
    for m in range(E * s):  # slot m belongs to expert m // S, and only to it
        e = m // s
        hidden = F.gelu(slots_in[:, m] @ ex.fc1_weight[e] + ex.fc1_bias[e])
        reference[:, m] = hidden @ ex.fc2_weight[e] + ex.fc2_bias[e]
    expected = torch.einsum("bnm,bmd->bnd", route.combine, reference)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    # changing expert 2 changes the outputs of its S slots and of no other slot
    before = ex(slots_in.reshape(2, E, s, D))
    with torch.no_grad():
        ex.fc2_bias[2] += 1.0
    after = ex(slots_in.reshape(2, E, s, D))
    changed = (after - before).abs().amax(dim=(0, 3)) > 0  # (E, S)
    assert changed[2].all() and not changed[[0, 1, 3]].any()


@pytest.mark.parametrize("slot_mode", ["grouped", "learned"])
def test_gradients_reach_every_expert_and_the_router(slot_mode):
    moe = make(slot_mode)
    moe(tokens(9)).pow(2).sum().backward()
    for name in ("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"):
        grad = getattr(moe.experts, name).grad
        per_expert = grad.reshape(E, -1).abs().sum(1)
        assert (per_expert > 0).all(), f"{name}: an expert got no gradient"
    assert moe.scale.grad is not None and moe.scale.grad.abs() > 0
    router = moe.slot_proj.weight if slot_mode == "grouped" else moe.slot_embed
    assert router.grad.abs().sum() > 0


def test_grouped_slots_are_equivariant_to_permutations_within_groups_only():
    """Grouped slot embeddings average consecutive groups of E tokens, so Φ depends on which
    tokens share a group: permuting inside groups leaves Φ (and thus every slot) unchanged
    and permutes the output; moving tokens across groups changes Φ and breaks equivariance."""
    moe = make("grouped")
    x = tokens(12)  # 3 full groups of 4
    y = moe(x)
    within = torch.tensor([3, 1, 0, 2, 6, 4, 7, 5, 8, 11, 10, 9])
    torch.testing.assert_close(moe(x[:, within]), y[:, within], rtol=1e-5, atol=1e-5)
    across = torch.tensor([0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
    assert not torch.allclose(moe(x[:, across]), y[:, across], atol=1e-4)


def test_learned_slots_are_equivariant_to_any_permutation():
    moe = make("learned")
    x = tokens(11)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(moe(x[:, perm]), moe(x)[:, perm], rtol=1e-5, atol=1e-5)


def test_samples_do_not_mix_across_the_batch():
    moe = make()
    x = tokens(10, b=3)
    torch.testing.assert_close(moe(x)[1:2], moe(x[1:2]), rtol=1e-5, atol=1e-5)


def test_experts_accept_per_expert_linear_layout():
    torch.manual_seed(0)
    linears = torch.nn.ModuleList(
        torch.nn.ModuleDict({"fc1": torch.nn.Linear(D, H), "fc2": torch.nn.Linear(H, D)})
        for _ in range(E)
    )
    experts = Experts(E, D, H)
    experts.load_state_dict(linears.state_dict())
    slots = torch.randn(1, E, 2, D)
    out = experts(slots)
    for e in range(E):
        ref = linears[e]["fc2"](F.gelu(linears[e]["fc1"](slots[0, e])))
        torch.testing.assert_close(out[0, e], ref, rtol=1e-5, atol=1e-5)


def test_runs_on_meta_device():
    with torch.device("meta"):
        moe = SoftMoE(D, E, H)
        y = moe(torch.empty(2, 7, D))
    assert y.shape == (2, 7, D) and y.device.type == "meta"
