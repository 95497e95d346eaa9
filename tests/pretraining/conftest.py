"""Fixtures of the training tests (names prefixed ``train_``).

* ``train_write_store(path, ...)`` — cut real patches from the six sample pairs (through
  ``xcsmoe.load_cube``) and write them in the patch-store layout with xarray (Zarr v3).
* ``train_store`` — such a store, 32 px patches (9 per pair, 54 in all), built once.
* ``train_recipe(tmp_path, **fields)`` — a small recipe for ``csmoe_tiny`` on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
import pytest
import xarray as xr

S2_BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B11", "B12", "B8A")
S1_BANDS = ("vv", "vh")


def write_sample_store(
    path: Path,
    items: dict[str, list[pystac.Item]],
    *,
    patch_size: int = 32,
    chunk: int = 8,
    val_fraction: float = 0.1,
    seed: int = 0,
    s1_bands: tuple[str, ...] = S1_BANDS,
    single_sensor: int = 0,
) -> Path:
    """Write every full ``patch_size`` patch of the sample pairs to ``path``.

    ``single_sensor``: drop S1 from the first ``single_sensor`` patches and S2 from the
    next ``single_sensor`` (flags cleared, arrays filled with nodata).
    """
    import xcsmoe

    s2s, s1s, offsets, tiles, item_s2, item_s1 = [], [], [], [], [], []
    for s2_item, s1_item in zip(items["s2"], items["s1"], strict=True):
        cube = xcsmoe.load_cube([s2_item], [s1_item]).isel(time=0).compute()
        n = cube.sizes["y"] // patch_size
        for row in range(n):
            for col in range(n):
                win = cube.isel(
                    y=slice(row * patch_size, (row + 1) * patch_size),
                    x=slice(col * patch_size, (col + 1) * patch_size),
                )
                s2s.append(np.stack([win[b].values for b in S2_BANDS]).astype("uint16"))
                s1s.append(np.stack([win[b].values for b in S1_BANDS]).astype("float32"))
                offsets.append(float(cube["s2_offset"]))
                tiles.append(f"{s2_item.id}/{row}_{col}")
                item_s2.append(s2_item.id)
                item_s1.append(s1_item.id)
    count = len(s2s)
    s2 = np.stack(s2s)
    s1 = np.stack(s1s)
    has_s1 = np.ones(count, bool)
    has_s2 = np.ones(count, bool)
    if single_sensor:
        has_s1[:single_sensor] = False
        s1[:single_sensor] = np.nan
        has_s2[single_sensor : 2 * single_sensor] = False
        s2[single_sensor : 2 * single_sensor] = 0
    rng = np.random.default_rng(seed)
    split = (rng.random(count) < val_fraction).astype("uint8")
    ds = xr.Dataset(
        {
            "s2": (("patch", "band_s2", "y", "x"), s2),
            "s1": (("patch", "band_s1", "y", "x"), s1),
            "has_s1": ("patch", has_s1),
            "has_s2": ("patch", has_s2),
            "s2_offset": ("patch", np.asarray(offsets, "float32")),
            "split": ("patch", split),
            "tile_id": ("patch", np.asarray(tiles, dtype=str)),
            "item_s2": ("patch", np.asarray(item_s2, dtype=str)),
            "item_s1": ("patch", np.asarray(item_s1, dtype=str)),
            "time_s2": ("patch", pd.to_datetime(["2017-06-13"] * count).values),
        },
        coords={"band_s2": list(S2_BANDS), "band_s1": list(s1_bands)},
        attrs={
            "xcsmoe_patch_store": 1,
            "patch_size": patch_size,
            "bands_s2": list(S2_BANDS),
            "bands_s1": list(s1_bands),
            "val_fraction": val_fraction,
            "seed": seed,
            "require_pairs": not single_sensor,
            "xcsmoe_complete": True,
        },
    )
    encoding = {name: {"chunks": (chunk, *ds[name].shape[1:])} for name in ("s2", "s1")}
    ds.to_zarr(path, zarr_format=3, consolidated=True, mode="w", encoding=encoding)
    return path


@pytest.fixture(scope="session")
def train_write_store(
    sample_items: dict[str, list[pystac.Item]],
) -> Callable[..., Path]:
    """``train_write_store(path, **options)``: see :func:`write_sample_store`."""

    def write(path: Path, **options: Any) -> Path:
        return write_sample_store(path, sample_items, **options)

    return write


@pytest.fixture(scope="session")
def train_store(
    tmp_path_factory: pytest.TempPathFactory, train_write_store: Callable[..., Path]
) -> Path:
    """54 real 32 px patches of the six sample pairs (read-only: copy before damaging)."""
    return train_write_store(tmp_path_factory.mktemp("train-store") / "patches.zarr")


@pytest.fixture
def train_recipe(train_store: Path) -> Callable[..., Any]:
    """``train_recipe(output, **fields)``: a :class:`PretrainRecipe` for ``csmoe_tiny``."""
    from xcsmoe.pretraining.recipe import PretrainRecipe

    def make(output: Path, **fields: Any) -> PretrainRecipe:
        base: dict[str, Any] = {
            "variant": "csmoe_tiny",
            "store": train_store,
            "output": output,
            "max_steps": 12,
            "batch_size": 8,
            "lr": 1e-3,
            "warmup_steps": 3,
            "seed": 0,
            "checkpoint_every": 4,
            "keep_checkpoints": 2,
            "workers": 0,
            "val_every": 0,
            "log_every": 1,
        }
        return PretrainRecipe(**(base | fields))

    return make


@pytest.fixture
def train_one_thread():
    """One torch thread: the shared 2-core machine runs tiny models faster that way."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def read_only():
    """``with read_only(folder):`` nothing can be created, changed or removed in ``folder``.

    A normal user gets ``chmod 555``; root, whom permissions do not stop, gets the
    immutable attribute (``chattr +i``, honoured by the kernel for root too). Skips when
    neither applies (root on a filesystem without the attribute)."""
    import os
    import shutil
    import subprocess
    from contextlib import contextmanager

    @contextmanager
    def lock(folder: Path):
        if os.geteuid() != 0:
            folder.chmod(0o555)
            try:
                yield folder
            finally:
                folder.chmod(0o755)
            return
        chattr = shutil.which("chattr")
        if (
            chattr is None
            or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode
        ):
            pytest.skip("running as root without chattr +i here: no real way to lock a folder")
        try:
            yield folder
        finally:
            subprocess.run([chattr, "-i", str(folder)], check=True)

    return lock


@pytest.fixture
def file_size_limit():
    """``with file_size_limit(nbytes):`` a real full disk for this process: writing past
    ``nbytes`` in any file fails with EFBIG (RLIMIT_FSIZE; Python ignores SIGXFSZ)."""
    import resource
    from contextlib import contextmanager

    @contextmanager
    def limit(nbytes: int):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    return limit
