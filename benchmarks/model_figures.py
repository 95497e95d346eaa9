"""Parameters, GMACs and C2C ratio of every CSMoE variant beside the paper's Table I/IV.

One S2 image (224 px; CSMAE 120 px) through the encoder path, counted on the meta device.
GMACs follow the paper (multiply-accumulates of linear/conv/matmul/einsum; attention
products q·kᵀ and attn·v not counted); the last column is torch's FlopCounterMode total
(FLOPs, attention included).

    python benchmarks/model_figures.py
"""

from __future__ import annotations

import sys
import time

from xcsmoe.model.cli import PAPER_FIGURES, figures_table
from xcsmoe.model.figures import model_figures


def main() -> int:
    start = time.perf_counter()
    names = list(PAPER_FIGURES)
    print(figures_table(names, sensor="s2"))
    worst = max(
        max(
            abs(model_figures(n).params_m / PAPER_FIGURES[n][0] - 1),
            abs(model_figures(n).gmacs / PAPER_FIGURES[n][1] - 1),
        )
        for n in names
    )
    print(f"\nlargest deviation from the paper: {100 * worst:.2f} % (target < 1 %)")
    print(f"counted in {time.perf_counter() - start:.1f} s")
    return 0 if worst < 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
