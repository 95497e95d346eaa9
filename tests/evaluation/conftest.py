"""Fixtures of the evaluation tests: the sample catalog as a labelled set, its features.

``sample_set`` — the six real S1+S2 BigEarthNet pairs with their 19-class labels;
``sample_features`` — those encoded once by ``csmoe_tiny`` (random weights, seed 0) with
token grids of blocks 0, 1 and 2, into a session-wide feature store;
``real_dir`` — ``shared/fixtures/real`` (skips when absent).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

TINY = "csmoe_tiny"


@pytest.fixture(scope="session")
def sample_features(sample_set, tmp_path_factory) -> xr.Dataset:
    from xcsmoe.evaluation.features import encode_features

    store = tmp_path_factory.mktemp("features") / "tiny.zarr"
    return encode_features(
        sample_set, store, model=TINY, weights="random", layers=(0, 1, 2), device="cpu",
        batch_size=4, region_size=4, progress=False,
    )  # fmt: skip


@pytest.fixture(scope="session")
def real_dir(shared_dir: Path) -> Path:
    path = shared_dir / "fixtures" / "real"
    if not path.is_dir():
        pytest.skip(f"real fixtures not found at {path}")
    return path
