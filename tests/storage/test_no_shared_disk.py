"""A cluster that shares no disk: a scheduler and two ``dask worker`` processes, each
started in its own empty working directory (with its own ``--local-directory`` and
``XCSMOE_CACHE``). The workers read the imagery from the bucket and write the store to
the bucket; one worker is killed mid-job and the output is still identical."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import xarray as xr

from xcsmoe.embedding.batch import MARKER, embed_to_zarr
from xcsmoe.stac.load import load_cube

pytestmark = pytest.mark.slow
JOB = {"model": "csmoe_tiny", "weights": "random", "window": 64, "progress": False}


def test_worker_loss_on_a_cluster_sharing_no_disk_gives_identical_output(
    isolated_cluster, bucket_catalog, moto_server
):
    client, workers, folders = isolated_cluster
    items = bucket_catalog.items()
    access = {"endpoint": moto_server.endpoint, "unsigned": True}
    cube = load_cube(items["s2"][:1], items["s1"][:1], chunks=64, access=access)
    bucket = f"s3://{moto_server.new_bucket()}"
    options = moto_server.options()
    reference = embed_to_zarr(
        cube, f"{bucket}/reference.zarr", client=client, storage_options=options, **JOB
    )
    assert reference.computed == reference.regions == 4

    fs = moto_server.filesystem()
    marker_keys = f"{bucket[5:]}/killed.zarr/{MARKER}/c/"
    before = {f: sorted(p.name for p in f.iterdir()) for f in folders}

    def kill_one_worker_after_the_first_region() -> None:
        deadline = time.monotonic() + 120
        while not fs.exists(marker_keys) and time.monotonic() < deadline:
            time.sleep(0.02)
            fs.invalidate_cache()
        os.killpg(workers[0].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker_after_the_first_region)
    killer.start()
    report = embed_to_zarr(
        cube, f"{bucket}/killed.zarr", client=client, storage_options=options, **JOB
    )
    killer.join()
    assert workers[0].poll() is not None, "the worker was not killed"
    assert report.computed == 4
    a = xr.open_zarr(f"{bucket}/reference.zarr", storage_options=options).load()
    b = xr.open_zarr(f"{bucket}/killed.zarr", storage_options=options).load()
    xr.testing.assert_identical(a, b)
    assert np.isfinite(b.cls.values).all()
    # every artefact is in the bucket: the workers' folders hold only dask's own scratch
    after = {f: sorted(p.name for p in f.iterdir()) for f in folders}
    for folder in folders:
        assert not list(folder.rglob("*.zarr")), f"a store was written under {folder}"
        assert set(after[folder]) - set(before[folder]) <= {"dask", "cache"}
