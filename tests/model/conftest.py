from __future__ import annotations

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny():
    """A freshly seeded csmoe_tiny encoder in eval mode."""
    from xcsmoe.model.registry import create_model

    torch.manual_seed(0)
    return create_model("csmoe_tiny").eval()


def _images(batch: int = 2, size: int | tuple[int, int] = 64, seed: int = 0):
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, h, w, generator=g), torch.randn(batch, 10, h, w, generator=g)


@pytest.fixture
def images():
    """``images(batch, size, seed)`` → seeded normalised S1 (B, 2, H, W), S2 (B, 10, H, W)."""
    return _images
