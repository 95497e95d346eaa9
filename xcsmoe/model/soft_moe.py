"""Soft Mixture-of-Experts layer (Puigcerver et al., ICLR 2024) as CSMoE uses it.

Tokens ``X`` (B, N, D) and slot embeddings ``Φ`` (B, M, D) with ``M = E · S`` slots
(``S`` per expert) give logits ``L = scale · norm(X) · norm(Φ)ᵀ`` (B, N, M), both sides
L2-normalised over D and ``scale`` a learned scalar (inverse temperature). Then

* dispatch ``= softmax(L, over tokens)``: each slot is a convex mix of the tokens,
* combine ``= softmax(L, over all M slots of all experts)``: each output token is a convex
  mix of the slot outputs,
* slot ``m = e·S + s`` is processed by expert ``e`` only (expert-major slot order).

Slot embeddings (``slot_mode``):

* ``"grouped"`` (default, reproduces the paper's figures): learned projections of the input
  features — tokens averaged in consecutive groups of ``E`` (``S = ceil(N / E)`` groups, the
  last one possibly shorter), mapped by a bias-free linear ``D → D·E`` and split into the
  ``E`` slots of each group. Because groups follow token order, permuting tokens across
  groups changes the slots, so the layer is permutation-equivariant only for permutations
  that keep every token inside its group.
* ``"learned"``: static learned slot parameters as in the original Soft MoE; ``S`` is fixed
  and the layer is permutation-equivariant over all tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcsmoe.errors import ConfigError, expected
from xcsmoe.model.config import SLOT_MODES


@dataclass
class RoutingWeights:
    """Routing of one Soft MoE call (slot order is expert-major: ``m = e·S + s``)."""

    dispatch: Tensor  # (B, N, M) softmax over tokens (dim 1)
    combine: Tensor  # (B, N, M) softmax over slots (dim 2)
    slots: Tensor  # (B, M, D) or (M, D) slot embeddings Φ
    num_experts: int

    @property
    def expert_share(self) -> Tensor:
        """(B, N, E): combine weight each expert receives per token (sums to 1 over E)."""
        b, n, m = self.combine.shape
        return self.combine.reshape(b, n, self.num_experts, m // self.num_experts).sum(-1)


class Experts(nn.Module):
    """``E`` GELU MLPs ``D → H → D`` with stacked weights, applied batched (one per slot group).

    Parameters: ``fc1_weight`` (E, D, H), ``fc1_bias`` (E, H), ``fc2_weight`` (E, H, D),
    ``fc2_bias`` (E, D). Per-expert ``nn.Linear`` checkpoints (``{e}.fc1.weight`` of shape
    (H, D), ...) are stacked on load.
    """

    def __init__(
        self, num_experts: int, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU
    ) -> None:
        super().__init__()
        self.num_experts, self.dim, self.hidden_dim = num_experts, dim, hidden_dim
        self.fc1_weight = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.fc1_bias = nn.Parameter(torch.zeros(num_experts, hidden_dim))
        self.fc2_weight = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.fc2_bias = nn.Parameter(torch.zeros(num_experts, dim))
        self.act = act_layer()
        self.reset_parameters()
        self._register_load_state_dict_pre_hook(stack_linear_experts)

    def reset_parameters(self) -> None:
        """Xavier-uniform per expert (as ``nn.Linear`` layers are in MAE), zero biases."""
        for weight in (self.fc1_weight, self.fc2_weight):
            bound = math.sqrt(6.0 / (weight.shape[1] + weight.shape[2]))
            nn.init.uniform_(weight, -bound, bound)
        nn.init.zeros_(self.fc1_bias)
        nn.init.zeros_(self.fc2_bias)

    def forward(self, slots: Tensor) -> Tensor:
        """(B, E, S, D) slot inputs → (B, E, S, D) slot outputs, slot group ``e`` by expert ``e``."""
        hidden = torch.einsum("besd,edh->besh", slots, self.fc1_weight)
        hidden = self.act(hidden + self.fc1_bias[:, None, :])
        out = torch.einsum("besh,ehd->besd", hidden, self.fc2_weight)
        return out + self.fc2_bias[:, None, :]


def stack_linear_experts(state_dict, prefix, *_args) -> None:
    """Accept ``{prefix}{e}.fc{1,2}.{weight,bias}`` (nn.Linear layout) and stack it."""
    first = f"{prefix}0.fc1.weight"
    if first not in state_dict:
        return
    count = 0
    while f"{prefix}{count}.fc1.weight" in state_dict:
        count += 1
    for layer in ("fc1", "fc2"):
        weights = [state_dict.pop(f"{prefix}{e}.{layer}.weight") for e in range(count)]
        biases = [state_dict.pop(f"{prefix}{e}.{layer}.bias") for e in range(count)]
        state_dict[f"{prefix}{layer}_weight"] = torch.stack([w.t() for w in weights])
        state_dict[f"{prefix}{layer}_bias"] = torch.stack(biases)


class SoftMoE(nn.Module):
    """Soft MoE replacing a transformer MLP: (B, N, D) → (B, N, D).

    Args:
        dim: token width ``D``.
        num_experts: ``E``.
        hidden_dim: hidden width of each expert MLP (``4·D`` in CSMoE).
        slot_mode: ``"grouped"`` (input-dependent, see module docs) or ``"learned"``.
        slots_per_expert: ``S`` for ``"learned"`` slots (ignored for ``"grouped"``).
        act_layer: expert activation.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        hidden_dim: int,
        *,
        slot_mode: str = "grouped",
        slots_per_expert: int = 1,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        if slot_mode not in SLOT_MODES:
            raise ConfigError(expected("slot_mode", f"one of {SLOT_MODES}", slot_mode))
        if num_experts < 1:
            raise ConfigError(expected("num_experts", "an int >= 1", num_experts))
        self.dim, self.num_experts, self.slot_mode = dim, num_experts, slot_mode
        if slot_mode == "grouped":
            self.slot_proj = nn.Linear(dim, dim * num_experts, bias=False)
            nn.init.xavier_uniform_(self.slot_proj.weight)
        else:
            self.slot_embed = nn.Parameter(torch.randn(num_experts * slots_per_expert, dim))
        self.scale = nn.Parameter(torch.ones(()))
        self.experts = Experts(num_experts, dim, hidden_dim, act_layer)

    def slots_per_expert(self, num_tokens: int) -> int:
        """``S``: ``ceil(N / E)`` for grouped slots, fixed for learned ones."""
        if self.slot_mode == "grouped":
            return -(-num_tokens // self.num_experts)
        return self.slot_embed.shape[0] // self.num_experts

    def slot_embeddings(self, x: Tensor) -> Tensor:
        """Φ: (B, N, D) tokens → (B, E·S, D) grouped slots, or (E·S, D) learned ones."""
        if self.slot_mode == "learned":
            return self.slot_embed
        b, n, d = x.shape
        e = self.num_experts
        groups = self.slots_per_expert(n)
        pad = groups * e - n
        summed = F.pad(x, (0, 0, 0, pad)).reshape(b, groups, e, d).sum(2)  # (B, S, D)
        counts = torch.full((groups, 1), float(e), dtype=x.dtype, device=x.device)
        counts[-1] = e - pad
        phi = self.slot_proj(summed / counts)  # (B, S, E·D)
        return phi.reshape(b, groups, e, d).transpose(1, 2).reshape(b, e * groups, d)

    def routing(self, x: Tensor) -> RoutingWeights:
        """Dispatch and combine weights (B, N, E·S) for tokens ``x`` (B, N, D)."""
        phi = self.slot_embeddings(x)
        xn = F.normalize(x, dim=-1)
        pn = F.normalize(phi, dim=-1)
        if pn.dim() == 2:
            logits = torch.einsum("bnd,md->bnm", xn, pn)
        else:
            logits = torch.einsum("bnd,bmd->bnm", xn, pn)
        logits = logits * self.scale
        return RoutingWeights(
            dispatch=logits.softmax(dim=1),
            combine=logits.softmax(dim=2),
            slots=phi,
            num_experts=self.num_experts,
        )

    def forward(
        self, x: Tensor, *, return_routing: bool = False
    ) -> Tensor | tuple[Tensor, RoutingWeights]:
        """(B, N, D) → (B, N, D) [, routing]."""
        b, _, d = x.shape
        route = self.routing(x)
        slots_in = torch.einsum("bnm,bnd->bmd", route.dispatch, x)  # (B, M, D)
        slots_out = self.experts(slots_in.reshape(b, self.num_experts, -1, d))
        y = torch.einsum("bnm,bmd->bnd", route.combine, slots_out.reshape(b, -1, d))
        return (y, route) if return_routing else y
