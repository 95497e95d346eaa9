"""A cluster that shares no disk: a scheduler and two ``dask worker`` processes, each
started in its own empty working directory (with its own ``--local-directory`` and
``XCSMOE_CACHE``). The workers read the imagery from the bucket and write the store to
the bucket; one worker is killed mid-job and the output is still identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from distributed import Client

from xcsmoe.embedding.batch import MARKER, embed_to_zarr
from xcsmoe.stac.load import load_cube
from xcsmoe.stac.serve import free_port

pytestmark = pytest.mark.slow
JOB = {"model": "csmoe_tiny", "weights": "random", "window": 64, "progress": False}


def _wait_for_workers(client: Client, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(client.scheduler_info()["workers"]) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"{n} workers did not join within {timeout} s")
        time.sleep(0.2)


@pytest.fixture
def isolated_cluster(tmp_path):
    """``(client, worker processes, worker folders)``; every worker has its own folder."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XCSMOE_"))}
    spawn = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        cwd=tmp_path, env=env, **spawn,
    )  # fmt: skip
    folders, workers = [], []
    for n in range(2):
        folder = tmp_path / f"worker-{n}"
        folder.mkdir()
        folders.append(folder)
        workers.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    f"tcp://127.0.0.1:{port}",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--local-directory",
                    str(folder / "dask"),
                    "--no-dashboard",
                ],
                cwd=folder,
                env={**env, "XCSMOE_CACHE": str(folder / "cache")},
                **spawn,
            )
        )
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            _wait_for_workers(client, 2)
            yield client, workers, folders
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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
