"""Modality-specific MAE decoder (plain transformer), dropped after pretraining."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from xcsmoe.model.blocks import Block
from xcsmoe.model.pos_embed import sincos_2d


class Decoder(nn.Module):
    """Encoder features of the kept tokens → pixel predictions of every patch of one sensor.

    Names follow MAE/CSMAE: ``decoder_embed``, ``mask_token``, ``decoder_pos_embed`` (fixed
    sin-cos), ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        patch_size: int,
        out_chans: int,
        grid_size: int,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.patch_size, self.out_chans, self.grid_size = patch_size, out_chans, grid_size
        self.decoder_embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_2d(dim, grid_size, grid_size), requires_grad=False
        )
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.decoder_blocks = nn.ModuleList(
            Block(dim, num_heads, 4.0, norm_layer=norm) for _ in range(depth)
        )
        self.decoder_norm = norm(dim)
        self.decoder_pred = nn.Linear(dim, patch_size * patch_size * out_chans)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, ids_restore: Tensor, grid: tuple[int, int]) -> Tensor:
        """(B, 1 + K, D_enc) kept tokens ([CLS] first), ids_restore (B, N) → (B, N, P·P·C)."""
        x = self.decoder_embed(x)  # (B, 1 + K, D_dec)
        b, n = ids_restore.shape
        masked = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], masked], dim=1)  # (B, N, D_dec), shuffled order
        index = ids_restore[..., None].expand(-1, -1, x.shape[-1])
        x = torch.cat([x[:, :1], torch.gather(patches, 1, index)], dim=1)  # (B, 1 + N, D_dec)
        if grid == (self.grid_size, self.grid_size):
            pos = self.decoder_pos_embed
        else:
            pos = sincos_2d(x.shape[-1], *grid, device=x.device, dtype=x.dtype)
        x = x + pos.to(x.dtype)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]
