"""The demo's pictures (PNG, small enough for a README), drawn from computed results.

* :func:`pca_panel` — S2 RGB of each sample cube above the first three principal
  components of its token embeddings, random and pretrained (one PCA per cube and
  weights: colours show structure within a cube, not across cubes);
* :func:`balance_chart` — expert balance per Soft MoE layer, random against pretrained;
* the similarity map, expert-usage map and loss curve come from
  :func:`xcsmoe.plot_similarity`, :func:`xcsmoe.plot_expert_usage` and the pretraining's
  loss-curve plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["balance_chart", "compact_png", "pca_panel", "rgb"]

DPI = 100


def rgb(cube: xr.Dataset) -> np.ndarray:
    """``(y, x, 3)`` S2 true colour (B04, B03, B02) of a cube, 2–98 % stretch."""
    cube = cube.isel(time=0) if "time" in cube.dims else cube
    bands = np.stack(
        [np.asarray(cube[b].values, dtype=np.float32) for b in ("B04", "B03", "B02")], -1
    )
    low, high = np.nanpercentile(bands, [2, 98])
    return np.nan_to_num(np.clip((bands - low) / max(high - low, 1e-6), 0, 1))


def pca_panel(
    cubes: Sequence[xr.Dataset],
    embeddings: Mapping[str, Sequence[xr.Dataset]],
    names: Sequence[str],
    path: Path,
) -> Path:
    """Grid of RGB and token-PCA images: one column per cube, one row per weights label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xcsmoe.embedding.export import save_figure

    rows = 1 + len(embeddings)
    fig, axes = plt.subplots(
        rows, len(cubes), figsize=(1.55 * len(cubes), 1.6 * rows), squeeze=False
    )
    for col, cube in enumerate(cubes):
        axes[0, col].imshow(rgb(cube), interpolation="nearest")
        axes[0, col].set_title(_short(names[col]), fontsize=6)
    for row, (label, embs) in enumerate(embeddings.items(), start=1):
        for col, emb in enumerate(embs):
            axes[row, col].imshow(_token_pca(emb), interpolation="nearest")
        axes[row, 0].set_ylabel(f"{label}\ntokens, PCA", fontsize=7)
    axes[0, 0].set_ylabel("S2 RGB", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Token embeddings, first three principal components (per cube) as RGB", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)


def _token_pca(emb: xr.Dataset) -> np.ndarray:
    """``(y, x, 3)`` PCA RGB of a dataset's ``tokens`` (its own components)."""
    from xcsmoe.embedding.export import pca_rgb

    tokens = emb["tokens"].isel(time=0) if "time" in emb["tokens"].dims else emb["tokens"]
    return np.nan_to_num(pca_rgb(tokens))


def balance_chart(table: pd.DataFrame, labels: Sequence[str], path: Path) -> Path:
    """Bars of the results table's expert-balance rows: one panel per balance measure,
    one group of bars (one per weights label) per Soft MoE layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xcsmoe.demo.scores import BALANCE_TASKS
    from xcsmoe.embedding.export import save_figure

    fig, axes = plt.subplots(1, len(BALANCE_TASKS), figsize=(8.0, 3.2), sharey=True)
    for ax, task in zip(axes, BALANCE_TASKS.values(), strict=True):
        rows = table[table["task"] == task]
        x = np.arange(len(rows))
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, rows[label], width, label=label)
        ax.set_xticks(
            x, [m.replace(" (", "\n(") for m in rows["metric"]], fontsize=5.5, rotation=30
        )
        ax.set_title(task, fontsize=8)
        ax.set_ylim(0, 122)
        ax.axhline(100, color="grey", lw=0.6, ls="--")
        ax.tick_params(axis="y", labelsize=7)
    axes[0].set_ylabel("normalised entropy (%)", fontsize=8)
    axes[-1].legend(fontsize=7, loc="upper right", ncol=len(labels), frameon=False)
    fig.suptitle(
        "Soft MoE expert balance on the sample cubes (100 = every expert equal)", fontsize=8
    )
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)


def compact_png(path: Path, *, budget: int = 100_000) -> Path:
    """Rewrite a PNG larger than ``budget`` bytes with a 256-colour palette when that makes
    it smaller (README-sized pictures; maps and plots survive it nearly unchanged)."""
    from PIL import Image

    before = path.stat().st_size
    if before <= budget:
        return path
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    tmp = path.with_name(f".{path.name}.tmp")
    palette.save(tmp, format="PNG", optimize=True)
    if tmp.stat().st_size < before:
        tmp.replace(path)
    else:
        tmp.unlink()
    return path


def _short(name: str) -> str:
    """``S2A_MSIL2A_20170613T101031_87_48`` → ``2017-06-13 87_48``."""
    parts = name.split("_")
    if len(parts) >= 5 and len(parts[2]) >= 8:
        day = parts[2][:8]
        return f"{day[:4]}-{day[4:6]}-{day[6:8]} {parts[3]}_{parts[4]}"
    return name
