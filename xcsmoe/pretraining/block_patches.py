"""Patches of a block in the patch store's dtypes, cut from band arrays (pure numpy).

Sources (:mod:`xcsmoe.pretraining.tiles`) return :class:`BlockPatches` from
``read_patches``: the ``n = rows * cols`` patches of a window that is a whole number of
patches, row-major, with per-patch validity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Arrays", "BlockPatches", "cut_into", "patches_from_arrays", "per_patch"]

Arrays = dict[str, np.ndarray | None]  # "s2": (10, h, w), "s1": (2, h, w) float32 or None


@dataclass(frozen=True)
class BlockPatches:
    """The ``n = rows * cols`` patches of a window, row-major, in the patch store's dtypes.

    ``s2``: ``(n, len(bands_s2), P, P)`` uint16 DN, ``s1``: ``(n, len(bands_s1), P, P)``
    float32 linear power (``None`` when the tile lacks the sensor; values of invalid
    patches are unspecified); ``valid_s2``/``valid_s1``: ``(n,)`` bool, every pixel of every
    band of that sensor holds data.
    """

    s2: np.ndarray | None
    s1: np.ndarray | None
    valid_s2: np.ndarray
    valid_s1: np.ndarray


def cut_into(patches: np.ndarray, band: int, values: np.ndarray) -> None:
    """Copy a ``(rows*P, cols*P)`` band into ``patches[:, band]`` of ``(n, C, P, P)``."""
    patch = patches.shape[-1]
    rows, cols = values.shape[0] // patch, values.shape[1] // patch
    grid = patches.reshape(rows, cols, *patches.shape[1:])
    grid[:, :, band] = values.reshape(rows, patch, cols, patch).transpose(0, 2, 1, 3)


def per_patch(valid: np.ndarray, patch: int) -> np.ndarray:
    """``(rows*P, cols*P)`` pixel validity → ``(rows*cols,)``: every pixel of the patch."""
    rows, cols = valid.shape[0] // patch, valid.shape[1] // patch
    return valid.reshape(rows, patch, cols, patch).all(axis=(1, 3)).reshape(-1)


def patches_from_arrays(arrays: Arrays, patch: int) -> BlockPatches:
    """:class:`BlockPatches` of float32 arrays with NaN for nodata (``read``'s output)."""
    present = [v for v in arrays.values() if v is not None]
    n = (present[0].shape[1] // patch) * (present[0].shape[2] // patch) if present else 0
    cuts: dict[str, np.ndarray | None] = {}
    valid: dict[str, np.ndarray] = {}
    for sensor, dtype in (("s2", np.uint16), ("s1", np.float32)):
        values = arrays.get(sensor)
        if values is None:
            cuts[sensor], valid[sensor] = None, np.zeros(n, dtype=bool)
            continue
        finite = np.isfinite(values)
        cut = np.empty((n, values.shape[0], patch, patch), dtype=dtype)
        for b in range(values.shape[0]):
            cut_into(cut, b, np.where(finite[b], values[b], 0) if dtype == np.uint16 else values[b])
        cuts[sensor], valid[sensor] = cut, per_patch(finite.all(axis=0), patch)
    return BlockPatches(cuts["s2"], cuts["s1"], valid["s2"], valid["s1"])
