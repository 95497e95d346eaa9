"""Region stores (:mod:`xcsmoe.regionstore`) on a real LocalCluster and real Zarr v3 stores.

The job here is deliberately simple: region ``(i, j)`` of a 2-D array is filled with
``value + 10 * i + j``, so every stored byte is known without running a model.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from xcsmoe.errors import ConfigError
from xcsmoe.regionstore import (
    COMPLETE_ATTR,
    StoreSpec,
    check_store,
    read_markers,
    run_region_job,
    write_region,
)

TILE = 4
SHAPE = (2, 3)  # regions
UNREACHABLE = "tcp://127.0.0.1:9"  # the discard port: nothing listens there


def spec(value: float = 1.0, **settings) -> StoreSpec:
    rows, cols = SHAPE[0] * TILE, SHAPE[1] * TILE
    template = xr.Dataset(
        {"field": (("y", "x"), da.zeros((rows, cols), chunks=TILE, dtype=np.float32))},
        coords={"y": np.arange(rows), "x": np.arange(cols)},
    )
    return StoreSpec(
        template=template,
        encoding={"field": {"chunks": (TILE, TILE)}},
        marker_dims=("row", "col"),
        marker_shape=SHAPE,
        fingerprint={"value": value, **settings},
    )


def expected_field(value: float) -> np.ndarray:
    rows = np.repeat(np.arange(SHAPE[0]), TILE)[:, None]
    cols = np.repeat(np.arange(SHAPE[1]), TILE)[None, :]
    return (value + 10 * rows + cols).astype(np.float32)


def fill(path: Path, value: float, index: tuple[int, int], fail_at=None) -> tuple[int, int]:
    if fail_at == "every":
        raise RuntimeError(f"region {index} failed")
    if fail_at is not None and tuple(index) == tuple(fail_at):
        # fail last: a region still being written when the job stops would finish after
        # the test reads the markers (cancelling does not stop a running task)
        deadline = time.monotonic() + 20
        while read_markers(path).sum() < read_markers(path).size - 1:
            assert time.monotonic() < deadline, "the other regions were not written"
            time.sleep(0.05)
        raise RuntimeError(f"region {index} failed")
    i, j = index
    block = np.full((TILE, TILE), value + 10 * i + j, dtype=np.float32)
    where = (slice(i * TILE, (i + 1) * TILE), slice(j * TILE, (j + 1) * TILE))
    return write_region(path, {"field": (where, block)}, index)


def run(path: Path, value: float = 1.0, *, fail_at=None, **kwargs):
    task = dask.delayed(fill, pure=True)
    kwargs.setdefault("progress", False)
    return run_region_job(
        path,
        spec(value, **kwargs.pop("settings", {})),
        lambda index: task(str(path), value, index, fail_at),
        **kwargs,
    )


def snapshot(path: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(path)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_store_is_written_completely_and_opens_without_warning(client, tmp_path):
    report = run(tmp_path / "s.zarr", 1.0, client=client)
    assert (report.regions, report.computed, report.skipped) == (6, 6, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stored = xr.open_zarr(tmp_path / "s.zarr")  # consolidated: no fallback warning
    np.testing.assert_array_equal(stored.field.values, expected_field(1.0))
    assert stored.attrs[COMPLETE_ATTR] is True
    assert read_markers(tmp_path / "s.zarr").all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left behind"


def test_resume_skips_written_regions(client, tmp_path):
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError, match=r"region \(1, 2\) failed"):
        run(path, 2.0, client=client, fail_at=(1, 2))
    done = read_markers(path)
    assert done.sum() == 5 and not done[1, 2]
    assert zarr.open_group(path, mode="r").attrs[COMPLETE_ATTR] is False
    report = run(path, 2.0, client=client)
    assert (report.computed, report.skipped) == (1, 5)
    np.testing.assert_array_equal(xr.open_zarr(path).field.values, expected_field(2.0))


def test_a_partial_store_divided_into_other_regions_is_refused_and_says_why(client, tmp_path):
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError, match="failed"):
        run(path, 3.0, client=client, fail_at=(1, 2))
    regrouped = dataclasses.replace(spec(3.0), marker_shape=(3, 2))  # same settings
    with pytest.raises(ConfigError, match=r"regions \(3, 2\), as this job.*regions \(2, 3\)"):
        check_store(path, regrouped)
    assert check_store(path, regrouped, overwrite=True).replace


def test_refusal_names_every_differing_setting(client, tmp_path):
    path = tmp_path / "s.zarr"
    run(path, 1.0, client=client, settings={"normalise": True, "dtype": "float32"})
    other = spec(1.0, normalise=False, dtype="bfloat16")
    with pytest.raises(ConfigError) as refused:
        check_store(path, other)
    message = str(refused.value)
    assert message.startswith("store: expected")
    assert "normalise: store true, this job false" in message
    assert 'dtype: store "float32", this job "bfloat16"' in message
    assert "value" not in message.split("differ:")[1], "equal settings are not listed"
    assert "overwrite=True" in message
    report = run(path, 3.0, client=client, overwrite=True)
    assert report.computed == 6
    np.testing.assert_array_equal(xr.open_zarr(path).field.values, expected_field(3.0))


def test_a_failed_job_does_not_block_its_corrected_rerun(client, tmp_path):
    path = tmp_path / "s.zarr"
    # fails before any region is written (every task fails): a skeleton with no marker set
    with pytest.raises(RuntimeError):
        run(path, 1.0, client=client, fail_at="every", settings={"bad": True})
    assert not read_markers(path).any()
    # a corrected rerun with other settings needs no overwrite
    report = run(path, 1.0, client=client, settings={"bad": False})
    assert report.computed == 6
    np.testing.assert_array_equal(xr.open_zarr(path).field.values, expected_field(1.0))


def test_a_store_with_written_regions_refuses_another_job(client, tmp_path):
    path = tmp_path / "s.zarr"
    run(path, 1.0, client=client, n_workers=1)
    with pytest.raises(ConfigError, match=r"value: store 1\.0, this job 5\.0"):
        run(path, 5.0, client=client)


def test_an_empty_folder_is_usable_and_other_folders_are_never_deleted(client, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(empty, 1.0, client=client).computed == 6
    np.testing.assert_array_equal(xr.open_zarr(empty).field.values, expected_field(1.0))

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="not a Zarr store"):
            run(folder, 1.0, client=client, overwrite=overwrite)
    assert (folder / "keep.txt").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="a file"):
        run(tmp_path / "file", 1.0, client=client)


def test_a_complete_read_only_store_is_a_no_op(client, tmp_path):
    path = tmp_path / "s.zarr"
    run(path, 1.0, client=client)
    before = snapshot(path)
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        # no cluster is needed: an unreachable scheduler proves none is contacted
        report = run(path, 1.0, client=UNREACHABLE)
    finally:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert (report.computed, report.skipped) == (0, 6)
    assert snapshot(path) == before


def test_unreachable_scheduler_fails_fast_and_writes_nothing(tmp_path):
    path = tmp_path / "s.zarr"
    start = time.monotonic()
    with pytest.raises(ConfigError, match="client: expected a Dask scheduler address"):
        run(path, 1.0, client=UNREACHABLE)
    assert time.monotonic() - start < 15
    assert not path.exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("n_workers", [0, -1, 1.5, True, "2"])
def test_impossible_worker_counts_are_refused_before_anything(tmp_path, n_workers):
    with pytest.raises(ConfigError, match="n_workers: expected a positive integer"):
        run(tmp_path / "s.zarr", 1.0, n_workers=n_workers)
    assert os.listdir(tmp_path) == []


def test_client_of_the_wrong_type_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="client: expected None, a scheduler address"):
        run(tmp_path / "s.zarr", 1.0, client=42)
    assert os.listdir(tmp_path) == []


def test_a_zarr_store_of_someone_else_is_replaced_only_on_request(client, tmp_path):
    path = tmp_path / "theirs.zarr"
    xr.Dataset({"v": ("x", np.arange(3))}).to_zarr(path, zarr_format=3, consolidated=False)
    with pytest.raises(ConfigError, match="not written by an xcsmoe job"):
        run(path, 1.0, client=client)
    np.testing.assert_array_equal(xr.open_zarr(path, consolidated=False).v, np.arange(3))
    assert run(path, 1.0, client=client, overwrite=True).computed == 6
