"""``embed_to_zarr`` into a bucket of a loopback ``moto_server``: the same store as on
disk, and a job killed mid-way that resumes computing only the missing regions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

from xcsmoe.embedding.batch import MARKER, embed_to_zarr

JOB = {
    "model": "csmoe_tiny",
    "weights": "random",
    "window": 64,
    "normalise": False,
    "progress": False,
}
REGIONS = 16  # 2 times x 2 x 4 windows of 64 px


@pytest.fixture(scope="module")
def job(client, make_cube, tmp_path_factory):
    """A Zarr-backed cube of 16 regions and its store written to local disk."""
    root = tmp_path_factory.mktemp("s3_job")
    make_cube(128, 256, 2, chunks=64).to_zarr(root / "cube.zarr", consolidated=False)
    cube = xr.open_zarr(root / "cube.zarr", consolidated=False)
    embed_to_zarr(cube, root / "local.zarr", client=client, **JOB)
    return root, cube, xr.open_zarr(root / "local.zarr").load()


def markers_set(fs, url: str) -> int:
    return len(fs.find(f"{url.split('://', 1)[1]}/{MARKER}/c/"))


def test_store_in_a_bucket_equals_the_local_store(client, job, bucket, moto_server):
    _, cube, local = job
    url, options = bucket
    report = embed_to_zarr(cube, f"{url}/emb.zarr", client=client, storage_options=options, **JOB)
    assert (report.regions, report.computed, report.store) == (REGIONS, REGIONS, f"{url}/emb.zarr")
    remote = xr.open_zarr(f"{url}/emb.zarr", storage_options=options).load()
    xr.testing.assert_identical(remote, local)
    assert remote.attrs["xcsmoe_complete"] is True
    again = embed_to_zarr(cube, f"{url}/emb.zarr", client=client, storage_options=options, **JOB)
    assert (again.computed, again.skipped) == (0, REGIONS)


INTERRUPTED_JOB = """
import json, sys, xarray as xr
from xcsmoe.embedding.batch import embed_to_zarr

if __name__ == "__main__":  # worker processes are spawned: guard the job
    ds = xr.open_zarr(sys.argv[1], consolidated=False)
    embed_to_zarr(ds, sys.argv[2], storage_options=json.loads(sys.argv[3]), n_workers=1,
                  model="csmoe_tiny", weights="random", window=64, normalise=False,
                  progress=False)
"""


@pytest.mark.slow  # a subprocess job with its own cluster, killed and resumed
def test_a_job_killed_mid_way_resumes_only_the_missing_regions(
    client, job, bucket, moto_server, tmp_path
):
    root, cube, local = job
    url, options = bucket
    store = f"{url}/resumed.zarr"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(INTERRUPTED_JOB))
    process = subprocess.Popen(
        [sys.executable, str(script), str(root / "cube.zarr"), store, json.dumps(options)],
        start_new_session=True,
    )
    fs = moto_server.filesystem()
    deadline = time.monotonic() + 120
    while markers_set(fs, store) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the client and its workers, mid-upload
    process.wait()
    interrupted_at = markers_set(fs, store)
    assert 0 < interrupted_at < REGIONS, "the job was not interrupted mid-way"

    report = embed_to_zarr(cube, store, client=client, storage_options=options, **JOB)
    assert (report.skipped, report.computed) == (interrupted_at, REGIONS - interrupted_at)
    xr.testing.assert_identical(xr.open_zarr(store, storage_options=options).load(), local)
    np.testing.assert_array_equal(
        xr.open_zarr(store, storage_options=options)[MARKER].values, np.ones((2, 2, 4), np.uint8)
    )
