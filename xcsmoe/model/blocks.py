"""Transformer building blocks (timm-compatible parameter names: ``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) with an injectable MLP layer."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from xcsmoe.model.soft_moe import RoutingWeights, SoftMoE


class Attention(nn.Module):
    """Multi-head self-attention: (B, N, D) → (B, N, D) via fused SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, D/heads)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Dense ``fc1 → GELU → fc2`` MLP."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


DEFAULT_NORM = partial(nn.LayerNorm, eps=1e-6)

MlpFactory = Callable[[int, int], nn.Module]
"""``(dim, hidden_dim) -> module`` mapping (B, N, D) → (B, N, D)."""


class Block(nn.Module):
    """Pre-norm transformer block ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``.

    ``mlp_layer`` builds the MLP: :class:`Mlp` (dense) or a :class:`SoftMoE` factory.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        *,
        qkv_bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = DEFAULT_NORM,
        mlp_layer: MlpFactory = Mlp,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio))

    @property
    def is_moe(self) -> bool:
        return isinstance(self.mlp, SoftMoE)

    def forward(
        self, x: Tensor, *, return_routing: bool = False
    ) -> Tensor | tuple[Tensor, RoutingWeights | None]:
        """(B, N, D) → (B, N, D) [, routing of the Soft MoE or None for a dense MLP]."""
        x = x + self.attn(self.norm1(x))
        routing = None
        if return_routing and self.is_moe:
            y, routing = self.mlp(self.norm2(x), return_routing=True)
        else:
            y = self.mlp(self.norm2(x))
        x = x + y
        return (x, routing) if return_routing else x


def soft_moe_factory(
    num_experts: int, *, slot_mode: str = "grouped", slots_per_expert: int = 1
) -> MlpFactory:
    """An ``mlp_layer`` for :class:`Block` building a :class:`SoftMoE`."""

    def build(dim: int, hidden_dim: int) -> nn.Module:
        return SoftMoE(
            dim, num_experts, hidden_dim, slot_mode=slot_mode, slots_per_expert=slots_per_expert
        )

    return build
