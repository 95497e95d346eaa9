"""Patch store → xbatcher → torch DataLoader, on real sample patches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

import xcsmoe
from xcsmoe.errors import InputError, MissingBandError
from xcsmoe.model.registry import model_config
from xcsmoe.pretraining.loader import (
    PatchDataset,
    PatchSampler,
    open_patch_store,
    patch_loader,
    store_plan,
)

TINY = model_config("csmoe_tiny")  # img 64, patch 16
NATIVE = model_config("csmoe_tiny", img_size=32)  # = the store's patch size: no resize


def _epoch(loader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def test_batches_have_model_shapes_and_dtypes(train_store: Path) -> None:
    plan = store_plan(train_store, TINY)
    batch = next(iter(patch_loader(plan, batch_size=4)))
    assert batch["s1"].shape == (4, 2, 64, 64) and batch["s1"].dtype == torch.float32
    assert batch["s2"].shape == (4, 10, 64, 64) and batch["s2"].dtype == torch.float32
    assert batch["has_s1"].dtype == torch.bool and bool(batch["has_s1"].all())
    assert batch["patch"].dtype == torch.int64
    assert torch.isfinite(batch["s1"]).all() and torch.isfinite(batch["s2"]).all()


def test_values_are_the_sensor_normalisation_of_the_source_cube(
    train_store: Path, sample_items
) -> None:
    """Without flips or resize a sample equals xcsmoe.normalise of the source cube window,
    channels in the model's band order (here S1 as VH, VV like CSMAE)."""
    config = NATIVE.replace(s1_bands=("vh", "vv"))
    plan = store_plan(train_store, config)
    dataset = PatchDataset(plan)
    store = open_patch_store(train_store)
    by_id = {item.id: i for i, item in enumerate(sample_items["s2"])}
    for position in (0, len(plan.indices) // 2, len(plan.indices) - 1):
        sample = dataset[(position, 0)]
        patch = plan.indices[position]
        item_id, cell = str(store["tile_id"].values[patch]).split("/")
        row, col = (int(v) for v in cell.split("_"))
        i = by_id[item_id]
        cube = xcsmoe.load_cube([sample_items["s2"][i]], [sample_items["s1"][i]])
        norm = xcsmoe.normalise(cube).isel(
            time=0, y=slice(row * 32, row * 32 + 32), x=slice(col * 32, col * 32 + 32)
        )
        want_s1 = np.stack([norm[b].values for b in config.bands("s1")])
        want_s2 = np.stack([norm[b].values for b in config.bands("s2")])
        np.testing.assert_allclose(sample["s1"].numpy(), want_s1, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sample["s2"].numpy(), want_s2, rtol=1e-5, atol=1e-5)
        assert sample["patch"].item() == patch


def test_s2_offset_is_applied_per_patch(tmp_path: Path, train_store: Path) -> None:
    store = tmp_path / "offset.zarr"
    shutil.copytree(train_store, store)
    ds = xr.open_zarr(store)
    offsets = ds["s2_offset"].values.copy()
    offsets[1] = -1000.0
    ds[["s2_offset"]].assign(s2_offset=("patch", offsets)).to_zarr(store, mode="r+")
    plan = store_plan(store, NATIVE)
    dataset = PatchDataset(plan)
    changed = plan.indices.index(1) if 1 in plan.indices else None
    if changed is None:
        pytest.skip("patch 1 is in the validation split")
    base = PatchDataset(store_plan(train_store, NATIVE))[(changed, 0)]["s2"]
    shifted = dataset[(changed, 0)]["s2"]
    _, std = xcsmoe.S2.stats(NATIVE.bands("s2"))
    expected = base - 1000.0 / torch.from_numpy(std)[:, None, None]
    torch.testing.assert_close(shifted, expected, rtol=1e-5, atol=1e-4)


def test_flips_are_shared_by_both_sensors_and_resize_is_bilinear(train_store: Path) -> None:
    native = PatchDataset(store_plan(train_store, NATIVE))
    resized = PatchDataset(store_plan(train_store, TINY))
    plain = native[(3, 0)]
    for code, dims in ((1, [-1]), (2, [-2]), (3, [-1, -2])):
        flipped = native[(3, code)]
        for sensor in ("s1", "s2"):
            torch.testing.assert_close(flipped[sensor], plain[sensor].flip(dims))
    big = resized[(3, 0)]
    for sensor in ("s1", "s2"):
        want = F.interpolate(plain[sensor][None], size=(64, 64), mode="bilinear", antialias=True)[0]
        torch.testing.assert_close(big[sensor], want)


def test_splits_are_disjoint_and_cover_the_store(train_store: Path) -> None:
    train = store_plan(train_store, TINY, split="train")
    val = store_plan(train_store, TINY, split="validation")
    assert not set(train.indices) & set(val.indices)
    assert len(train.indices) + len(val.indices) == open_patch_store(train_store).sizes["patch"]
    seen = {
        int(p)
        for b in _epoch(patch_loader(train, batch_size=4, drop_last=False))
        for p in b["patch"]
    }
    assert seen == set(train.indices)
    val_seen = {
        int(p)
        for b in patch_loader(val, batch_size=2, shuffle=False, drop_last=False)
        for p in b["patch"]
    }
    assert val_seen == set(val.indices)


def test_same_seed_same_order_other_seed_or_epoch_another(train_store: Path) -> None:
    plan = store_plan(train_store, TINY)

    def order(seed: int, epoch: int = 0) -> list[int]:
        loader = patch_loader(plan, batch_size=4, seed=seed)
        loader.sampler.set_epoch(epoch)
        return [int(p) for b in loader for p in b["patch"]]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert order(3, epoch=0) != order(3, epoch=1)


def test_sampler_resumes_mid_epoch_and_shards_ranks() -> None:
    full = list(PatchSampler(20, seed=1))
    resumed = PatchSampler(20, seed=1)
    resumed.resume_at(0, 8)
    assert list(resumed) == full[8:]
    assert list(resumed) == full  # the skip applies once
    ranks = [list(PatchSampler(21, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 11
    assert {p for r in ranks for p, _ in r} == set(range(21))


def test_spawned_workers_give_the_same_batches(train_store: Path) -> None:
    plan = store_plan(train_store, TINY)
    serial = _epoch(patch_loader(plan, batch_size=8, seed=5))
    parallel = _epoch(patch_loader(plan, batch_size=8, seed=5, workers=2))
    assert len(serial) == len(parallel) > 0
    for a, b in zip(serial, parallel, strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key])


def test_single_sensor_patches_carry_flags_and_zeros(tmp_path: Path, train_write_store) -> None:
    store = train_write_store(tmp_path / "single.zarr", single_sensor=3, val_fraction=0.0)
    dataset = PatchDataset(store_plan(store, TINY))
    no_s1, no_s2, both = dataset[(0, 0)], dataset[(3, 0)], dataset[(6, 0)]
    assert not no_s1["has_s1"] and no_s1["has_s2"] and not no_s1["s1"].any()
    assert no_s2["has_s1"] and not no_s2["has_s2"] and not no_s2["s2"].any()
    assert both["has_s1"] and both["has_s2"] and both["s1"].abs().sum() > 0


# ------------------------------------------------------------------------ bad stores


def test_store_of_another_band_set_is_refused(tmp_path: Path, train_write_store) -> None:
    store = train_write_store(tmp_path / "hh.zarr", s1_bands=("hh", "hv"))
    with pytest.raises(MissingBandError, match=r"another band set.*missing \['vv', 'vh'\]"):
        store_plan(store, TINY)


def test_a_patch_size_other_than_the_model_image_is_resized(train_store: Path) -> None:
    """32 px patches feed csmae_p15 (120 px images, patch 15) after resizing."""
    plan = store_plan(train_store, model_config("csmae_p15"))
    sample = PatchDataset(plan)[(0, 0)]
    assert sample["s1"].shape == (2, 120, 120) and sample["s2"].shape == (10, 120, 120)


def test_not_a_store_and_unfinished_store_are_refused(tmp_path: Path, train_store: Path) -> None:
    with pytest.raises(InputError, match="patch store folder"):
        store_plan(tmp_path / "missing.zarr", TINY)
    store = tmp_path / "unfinished.zarr"
    shutil.copytree(train_store, store)
    import zarr

    group = zarr.open_group(store, mode="r+")
    group.attrs["xcsmoe_complete"] = False
    zarr.consolidate_metadata(store)
    with pytest.raises(InputError, match="unfinished"):
        store_plan(store, TINY)


def test_corrupted_chunk_stops_with_patch_and_chunk_named(
    tmp_path: Path, train_store: Path
) -> None:
    store = tmp_path / "corrupt.zarr"
    shutil.copytree(train_store, store)
    chunk = store / "s2" / "c" / "1" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(np.random.default_rng(0).bytes(chunk.stat().st_size))
    plan = store_plan(store, TINY)
    dataset = PatchDataset(plan)
    position = next(i for i, p in enumerate(plan.indices) if p // 8 == 1)
    with pytest.raises(InputError, match=rf"patch {plan.indices[position]} \(chunk 1 "):
        dataset[(position, 0)]
    # a patch of an intact chunk still reads
    assert torch.isfinite(dataset[(0, 0)]["s2"]).all()


def test_nodata_in_a_flagged_sensor_is_reported(tmp_path: Path, train_store: Path) -> None:
    store = tmp_path / "nodata.zarr"
    shutil.copytree(train_store, store)
    ds = xr.open_zarr(store)
    s1 = ds["s1"].values.copy()
    s1[0, 0, 5, 5] = np.nan
    ds[["s1"]].assign(s1=(ds["s1"].dims, s1)).to_zarr(store, mode="r+")
    plan = store_plan(store, TINY)
    position = plan.indices.index(0)
    with pytest.raises(InputError, match="patch 0 has nodata or non-finite s1"):
        PatchDataset(plan)[(position, 0)]
