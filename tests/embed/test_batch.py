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
from distributed import Client, LocalCluster

from xcsmoe.embedding.batch import MARKER, embed_to_zarr
from xcsmoe.errors import ConfigError

TINY = "csmoe_tiny"
JOB = {"model": TINY, "weights": "random", "window": 64, "normalise": False, "progress": False}


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


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
    with pytest.raises(ConfigError, match="overwrite=True"):
        embed_to_zarr(cube, tmp_path / "emb.zarr", client=client, **(JOB | {"seed": 1}))
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="not an xcsmoe store"):
        embed_to_zarr(cube, tmp_path / "other", client=client, **JOB)
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
