"""Fixed 2-D sin-cos position embeddings (MAE convention) and their resampling.

For a grid of ``gh × gw`` patches the embedding of patch (row ``i``, column ``j``) is
``[sincos_1d(D/2, j), sincos_1d(D/2, i)]`` where ``sincos_1d(d, p) = [sin(p·ω), cos(p·ω)]``
with ``ω_k = 10000^(-k/(d/2))``; a [CLS] row of zeros comes first. The embedding of a grid is
the top-left part of the embedding of any larger grid, so the encoder evaluates it for the
actual grid of each input instead of interpolating.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """(P,) positions → (P, dim) ``[sin, cos]`` embedding (float64)."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(
    dim: int,
    grid_h: int,
    grid_w: int,
    *,
    cls_token: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(1 [+1], grid_h·grid_w, dim) fixed embedding, rows in row-major patch order."""
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, device=device).repeat(grid_h)
    emb = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)
    if cls_token:
        emb = torch.cat([emb.new_zeros(1, dim), emb], dim=0)
    return emb.to(dtype).unsqueeze(0)


def resample_pos_embed(
    pos_embed: Tensor, grid_h: int, grid_w: int, *, num_prefix: int = 1
) -> Tensor:
    """Bicubically resample (1, prefix + h·w, D) to (1, prefix + grid_h·grid_w, D).

    The old grid must be square (as every checkpoint of this model family is).
    """
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    side = math.isqrt(grid.shape[1])
    if side * side != grid.shape[1]:
        raise ValueError(f"pos_embed: expected a square grid, got {grid.shape[1]} positions")
    if (side, side) == (grid_h, grid_w):
        return pos_embed
    dim = grid.shape[-1]
    image = grid.reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    grid = image.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
