"""Segmentation probe: a compact UPerNet decoder over multi-level ViT token grids.

segmentation_models_pytorch's UPerNet takes its multi-scale features from a CNN encoder
it builds itself (ResNet-like stages at strides 4…32); a frozen ViT gives same-stride
token grids that we already hold in a feature store, so it does not fit. The decoder
here follows UPerNet (Xiao et al., 2018) as ViT segmentation codebases adapt it:

1. **rescale** the L token grids (B, D, g, g) to a pyramid, ×4, ×2, ×1, ×½ for four
   levels (transposed convolutions / max-pooling, the "simple feature pyramid");
2. **PPM** on the coarsest level (average pooling to 1, 2, 3, 6 cells);
3. **FPN**: lateral 1×1 convolutions, top-down sum, 3×3 convolutions;
4. **fuse** every level at the finest resolution, 3×3 convolution, 1×1 classifier; the
   logits are upsampled bilinearly to the label grid.

Group normalisation replaces batch normalisation so that a batch of one works.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor, nn
from tqdm.auto import tqdm

from xcsmoe.errors import ConfigError, InputError, expected

__all__ = ["SegmentationConfig", "UPerNet", "segmentation_probe"]

_SCALES = (4.0, 2.0, 1.0, 0.5)


def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


def _rescale(dim: int, scale: float) -> nn.Module:
    if scale == 4:
        return nn.Sequential(
            nn.ConvTranspose2d(dim, dim, 2, 2),
            nn.GroupNorm(1, dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim, 2, 2),
        )
    if scale == 2:
        return nn.ConvTranspose2d(dim, dim, 2, 2)
    if scale == 1:
        return nn.Identity()
    return nn.MaxPool2d(2)


class UPerNet(nn.Module):
    """(B, L, D, g, g) token grids → (B, classes, H, W) logits (module doc)."""

    def __init__(
        self,
        dim: int,
        levels: int,
        num_classes: int,
        *,
        channels: int = 128,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
    ) -> None:
        super().__init__()
        if not 1 <= levels <= len(_SCALES):
            raise ConfigError(expected("layers", f"1 to {len(_SCALES)} token levels", levels))
        self.rescale = nn.ModuleList(_rescale(dim, s) for s in _SCALES[:levels])
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv(dim, channels, 1)) for s in pool_scales
        )
        self.bottleneck = _conv(dim + len(pool_scales) * channels, channels)
        self.lateral = nn.ModuleList(_conv(dim, channels, 1) for _ in range(levels - 1))
        self.fpn = nn.ModuleList(_conv(channels, channels) for _ in range(levels - 1))
        self.fuse = _conv(levels * channels, channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, grids: Tensor, size: tuple[int, int]) -> Tensor:
        pyramid = [rescale(grids[:, i]) for i, rescale in enumerate(self.rescale)]
        top = pyramid[-1]
        pooled = [
            F.interpolate(branch(top), top.shape[-2:], mode="bilinear", align_corners=False)
            for branch in self.ppm
        ]
        laterals = [lateral(x) for lateral, x in zip(self.lateral, pyramid[:-1], strict=True)]
        laterals.append(self.bottleneck(torch.cat([top, *pooled], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], laterals[i - 1].shape[-2:], mode="bilinear", align_corners=False
            )
        outs = [fpn(x) for fpn, x in zip(self.fpn, laterals[:-1], strict=True)] + [laterals[-1]]
        finest = outs[0].shape[-2:]
        fused = self.fuse(
            torch.cat(
                [F.interpolate(x, finest, mode="bilinear", align_corners=False) for x in outs],
                dim=1,
            )
        )
        return F.interpolate(self.classifier(fused), size, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class SegmentationConfig:
    """Hyperparameters of the segmentation probe (50 epochs as in the paper; its learning
    rate did not survive the text extraction)."""

    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 8
    weight_decay: float = 0.0
    channels: int = 128
    sensor: str = "s2"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(expected(name, "a positive integer", value))


def segmentation_probe(
    features: xr.Dataset,
    config: SegmentationConfig | None = None,
    *,
    labels: np.ndarray | None = None,
    train_split: str | tuple[str, ...] = "train",
    eval_split: str | tuple[str, ...] = "test",
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train a UPerNet on the stored token grids of ``config.sensor`` and report mIoU.

    ``labels``: (N, H, W) class maps (-1 = unlabelled) replacing the store's own.
    Returns ``{"metric": "mIoU", "value": …, "losses": […], "config": {…}}``.
    """
    from xcsmoe.evaluation.features import splits_of
    from xcsmoe.evaluation.metrics import mean_iou

    config = config or SegmentationConfig()
    if "tokens" not in features:
        raise InputError(
            expected(
                "features",
                "token grids (encode_features(..., layers=(...)))",
                sorted(map(str, features.data_vars)),
            )
        )
    maps = np.asarray(labels if labels is not None else features["labels"].values)
    if maps.ndim != 3 or maps.shape[0] != features.sizes["sample"]:
        raise InputError(
            expected("labels", f"(N={features.sizes['sample']}, H, W) class maps", maps.shape)
        )
    classes = len(features.attrs.get("classes") or []) or int(maps.max()) + 1
    if int(maps.max()) >= classes:
        raise InputError(expected("labels", f"class indices below {classes}", int(maps.max())))
    grids = (
        features["tokens"].sel(sensor=config.sensor).values.astype(np.float32)
    )  # (N, L, D, g, g)
    splits = splits_of(features)
    train = np.flatnonzero(
        np.isin(splits, [train_split] if isinstance(train_split, str) else list(train_split))
    )
    test = np.flatnonzero(
        np.isin(splits, [eval_split] if isinstance(eval_split, str) else list(eval_split))
    )
    if train.size == 0 or test.size == 0:
        raise InputError(
            expected(
                "train_split/eval_split",
                f"splits with samples among {sorted(set(splits))}",
                (train_split, eval_split),
            )
        )
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = UPerNet(grids.shape[2], grids.shape[1], classes, channels=config.channels).to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    x = torch.from_numpy(grids).to(device)
    y = torch.from_numpy(maps.astype(np.int64)).to(device)
    size = tuple(maps.shape[1:])
    losses = []
    model.train()
    for _ in tqdm(
        range(config.epochs), desc="segmentation probe", unit="epoch", disable=not progress
    ):
        order = train[torch.randperm(train.size, generator=generator).numpy()]
        total = 0.0
        for start in range(0, order.size, config.batch_size):
            batch = torch.from_numpy(order[start : start + config.batch_size]).to(device)
            loss = F.cross_entropy(model(x[batch], size), y[batch], ignore_index=-1)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * batch.numel()
        losses.append(total / train.size)
    model.eval()
    with torch.inference_mode():
        pred = torch.cat(
            [
                model(x[torch.from_numpy(test[i : i + config.batch_size])], size).argmax(1).cpu()
                for i in range(0, test.size, config.batch_size)
            ]
        )
    value = mean_iou(pred, maps[test], classes, ignore_index=-1)
    return {"metric": "mIoU", "value": value, "losses": losses, "config": asdict(config)}
