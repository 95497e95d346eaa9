"""``embed_to_zarr`` on a real ``dask.distributed.LocalCluster`` with real Zarr stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from xcsmoe.embedding.batch import MARKER, embed_to_zarr
from xcsmoe.errors import ConfigError

TINY = "csmoe_tiny"
JOB = {"model": TINY, "weights": "random", "window": 64, "normalise": False, "progress": False}


@pytest.fixture(scope="module")
def big_job(client, make_cube, tmp_path_factory):
    """A Zarr-backed cube of 64 regions (2 times × 4 × 8 windows) and its reference store."""
    root = tmp_path_factory.mktemp("big_job")
    make_cube(256, 512, 2, chunks=64).to_zarr(root / "cube.zarr", consolidated=False)
    cube = xr.open_zarr(root / "cube.zarr", consolidated=False)
    embed_to_zarr(cube, root / "reference.zarr", client=client, **JOB)
    return root, cube, open_store(root / "reference.zarr")


def done_regions(store: Path) -> int:
    try:
        return int(zarr.open_array(store / MARKER, mode="r")[:].sum())
    except Exception:  # store not created yet
        return 0


def open_store(store: Path) -> xr.Dataset:
    return xr.open_zarr(store, consolidated=False).load()


def test_store_matches_in_memory_embedding(client, make_cube, tmp_path):
    cube = make_cube(120, 200, 2, chunks=64)
    report = embed_to_zarr(cube, tmp_path / "emb.zarr", client=client, **JOB)
    assert (report.regions, report.computed, report.skipped) == (16, 16, 0)
    stored = open_store(tmp_path / "emb.zarr")
    expected = cube.csmoe.embed(
        patch=16, **{k: v for k, v in JOB.items() if k != "progress"}
    ).compute()
    np.testing.assert_allclose(stored.tokens.values, expected.tokens.values, atol=1e-5)
    np.testing.assert_allclose(stored.cls.values, expected.cls.values, atol=1e-5)
    assert stored.odc.geobox == expected.odc.geobox
    assert stored.attrs["xcsmoe_complete"] is True
    assert stored[MARKER].values.all()

    again = embed_to_zarr(cube, tmp_path / "emb.zarr", client=client, **JOB)
    assert (again.computed, again.skipped) == (0, 16)


def test_a_store_of_another_job_is_not_touched(client, make_cube, tmp_path):
    cube = make_cube(120, 200, 1, chunks=64)
    embed_to_zarr(cube, tmp_path / "emb.zarr", client=client, **JOB)
    with pytest.raises(ConfigError, match="overwrite=True") as refused:
        embed_to_zarr(cube, tmp_path / "emb.zarr", client=client, **(JOB | {"seed": 1}))
    assert "seed: store 0, this job 1" in str(refused.value)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a store")
    with pytest.raises(ConfigError, match="not a Zarr store"):
        embed_to_zarr(cube, tmp_path / "other", client=client, overwrite=True, **JOB)
    assert (tmp_path / "other" / "notes.txt").read_text() == "not a store"
    report = embed_to_zarr(
        cube, tmp_path / "emb.zarr", client=client, overwrite=True, **(JOB | {"seed": 1})
    )
    assert report.computed == report.regions


def test_killing_a_worker_mid_job_still_gives_identical_output(client, big_job, tmp_path):
    _, cube, a = big_job
    store = tmp_path / "killed.zarr"
    job = threading.Thread(
        target=embed_to_zarr, args=(cube, store), kwargs={"client": client, **JOB}
    )
    job.start()
    deadline = time.monotonic() + 120
    while done_regions(store) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = client.run(os.getpid)
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    killed_at = done_regions(store)
    job.join(timeout=300)
    assert not job.is_alive()
    assert 0 < killed_at < 64
    b = open_store(store)
    assert b.attrs["xcsmoe_complete"] is True
    np.testing.assert_array_equal(a.tokens.values, b.tokens.values)
    np.testing.assert_array_equal(a.cls.values, b.cls.values)


INTERRUPTED_JOB = """
import sys, xarray as xr
from xcsmoe.embedding.batch import embed_to_zarr

if __name__ == "__main__":  # worker processes are spawned: guard the job
    ds = xr.open_zarr(sys.argv[1], consolidated=False)
    embed_to_zarr(ds, sys.argv[2], n_workers=1, model="csmoe_tiny", weights="random",
                  window=64, normalise=False, progress=False)
"""


def test_interrupted_job_resumes_with_identical_output(client, big_job, tmp_path):
    root, cube, a = big_job
    store = tmp_path / "resumed.zarr"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(INTERRUPTED_JOB))
    process = subprocess.Popen(
        [sys.executable, str(script), str(root / "cube.zarr"), str(store)],
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while done_regions(store) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    interrupted_at = done_regions(store)
    assert 0 < interrupted_at < 64, "the job was not interrupted mid-way"
    assert zarr.open_group(store, mode="r").attrs["xcsmoe_complete"] is False

    report = embed_to_zarr(cube, store, client=client, **JOB)
    assert (report.skipped, report.computed) == (interrupted_at, 64 - interrupted_at)
    b = open_store(store)
    np.testing.assert_array_equal(a.tokens.values, b.tokens.values)
    np.testing.assert_array_equal(a.cls.values, b.cls.values)


@pytest.mark.parametrize(
    ("change", "setting"),
    [({"normalise": True}, "normalise"), ({"dtype": "float16"}, "dtype"), ({"seed": 3}, "seed")],
)
def test_resume_with_a_value_affecting_setting_changed_is_refused(
    client, make_cube, tmp_path, change, setting
):
    cube = make_cube(64, 128, 1, chunks=64)
    store = tmp_path / "emb.zarr"
    embed_to_zarr(cube, store, client=client, **JOB)
    before = open_store(store)
    with pytest.raises(ConfigError, match=f"Settings that differ: {setting}: store") as refused:
        embed_to_zarr(cube, store, client=client, **(JOB | change))
    assert "overwrite=True" in str(refused.value)
    np.testing.assert_array_equal(open_store(store).tokens.values, before.tokens.values)


def test_resume_with_other_weights_contents_at_the_same_path_is_refused(
    client, make_cube, tmp_path
):
    import torch

    from xcsmoe.model.checkpoint import save_checkpoint
    from xcsmoe.model.registry import create_model

    weights = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    save_checkpoint(create_model(TINY), weights)
    cube = make_cube(64, 64, 1, chunks=64)
    job = JOB | {"weights": weights}
    embed_to_zarr(cube, tmp_path / "emb.zarr", client=client, **job)
    torch.manual_seed(1)
    save_checkpoint(create_model(TINY), weights)  # same path, other bytes
    with pytest.raises(ConfigError, match="weights_digest: store"):
        embed_to_zarr(cube, tmp_path / "emb.zarr", client=client, **job)


def test_failed_validation_or_a_failed_first_region_never_blocks_the_rerun(
    client, make_cube, tmp_path
):
    cube = make_cube(64, 64, 1, chunks=64)
    store = tmp_path / "emb.zarr"
    with pytest.raises(ConfigError):
        embed_to_zarr(cube, store, client=client, **(JOB | {"window": 60}))
    assert not store.exists(), "validation failed after a byte was written"
    # a job that fails on the workers before any region is written (its source chunks are
    # corrupted after the cube was opened) leaves a skeleton...
    cube.to_zarr(tmp_path / "cube.zarr", consolidated=False)
    broken = xr.open_zarr(tmp_path / "cube.zarr", consolidated=False)
    for chunk in (tmp_path / "cube.zarr" / "B02" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"not a chunk")
    with pytest.raises(Exception, match=r"(?i)decod|codec|compress|zstd|blosc|chunk|bytes"):
        embed_to_zarr(broken, store, client=client, **(JOB | {"seed": 7, "window": 32}))
    assert store.exists() and not zarr.open_array(store / MARKER, mode="r")[:].any()
    # ...which never blocks the corrected rerun, whatever its settings
    report = embed_to_zarr(cube, store, client=client, **JOB)
    assert report.computed == report.regions == 1
    assert open_store(store).attrs["xcsmoe_complete"] is True


def test_complete_read_only_store_is_a_no_op_and_opens_without_warning(make_cube, tmp_path):
    import stat
    import warnings

    cube = make_cube(64, 64, 1, chunks=64)
    store = tmp_path / "emb.zarr"
    embed_to_zarr(cube, store, n_workers=1, **JOB)
    files = sorted(p for p in store.rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in files]
    for p in [store, *store.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:  # an unreachable scheduler: the no-op must not even connect
        report = embed_to_zarr(cube, store, client="tcp://127.0.0.1:9", **JOB)
    finally:
        for p in [store, *store.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert (report.computed, report.skipped) == (0, 1)
    assert [p.stat().st_mtime_ns for p in files] == stamps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr.open_zarr(store).load()
