"""Pretraining objectives of CSMoE (each a scalar tensor).

* :func:`masked_mse` — MAE reconstruction error (per-patch MSE averaged over masked patches);
  used uni-modally and cross-modally.
* :func:`nt_xent` — normalised temperature-scaled cross-entropy between projected [CLS]
  tokens of paired S1/S2 images (mutual-information loss, temperature 0.5).
* :func:`slot_repulsion` — mean squared cosine similarity between distinct slot embeddings
  (0 when slots are orthogonal); lowers their correlation.
* :func:`expert_entropy` — ``log E − H(p)`` with ``p`` the mean combine share of each expert
  over batch and tokens (0 when all experts are used equally).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from xcsmoe.model.soft_moe import RoutingWeights


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) → (B, H/P · W/P, P·P·C), row-major patches, (p, q, c) inside (MAE order)."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, patch_size: int, chans: int, grid: tuple[int, int]) -> Tensor:
    """Inverse of :func:`patchify`: (B, gh·gw, P·P·C) → (B, C, gh·P, gw·P)."""
    b = patches.shape[0]
    gh, gw = grid
    p = patch_size
    x = patches.reshape(b, gh, gw, p, p, chans)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, chans, gh * p, gw * p)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked patches (``mask`` 1 = removed) of the per-patch MSE; (B, N, K) inputs."""
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent over the 2B projected views (B, K) each; pairs (z1[i], z2[i]) are positives."""
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=-1)
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def slot_repulsion(routes: Sequence[RoutingWeights]) -> Tensor:
    """Mean over layers of the mean squared off-diagonal cosine similarity of slot embeddings."""
    terms = []
    for route in routes:
        phi = F.normalize(route.slots, dim=-1)
        if phi.dim() == 2:
            phi = phi[None]
        m = phi.shape[1]
        gram = phi @ phi.transpose(1, 2)
        off = gram - torch.diag_embed(torch.diagonal(gram, dim1=1, dim2=2))
        terms.append(off.pow(2).sum(dim=(1, 2)).mean() / max(m * (m - 1), 1))
    return torch.stack(terms).mean() if terms else torch.zeros(())


def expert_entropy(routes: Sequence[RoutingWeights]) -> Tensor:
    """Mean over layers of ``log E − H(mean expert share)`` (≥ 0, 0 = balanced usage)."""
    terms = []
    for route in routes:
        usage = route.expert_share.mean(dim=(0, 1))  # (E,)
        entropy = -(usage * usage.clamp_min(1e-12).log()).sum()
        terms.append(math.log(route.num_experts) - entropy)
    return torch.stack(terms).mean() if terms else torch.zeros(())
