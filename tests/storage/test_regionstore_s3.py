"""Region stores on object storage (a loopback ``moto_server``): same bytes as on disk,
resume, refusal, object-store-safe creation, and a constant request count per region.

The job is the one of ``tests/test_regionstore.py``: region ``(i, j)`` is filled with
``value + 10 * i + j``, so every stored value is known without a model.
"""

from __future__ import annotations

import warnings
from collections import Counter

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster

from xcsmoe.errors import ConfigError
from xcsmoe.regionstore import (
    COMPLETE_ATTR,
    JOB_ATTR,
    StoreSpec,
    check_store,
    read_markers,
    run_region_job,
    write_region,
)
from xcsmoe.storage import StoreLocation, store_location, write_root_metadata

TILE = 4


def spec(value: float = 1.0, shape: tuple[int, int] = (2, 3), **settings) -> StoreSpec:
    rows, cols = shape[0] * TILE, shape[1] * TILE
    template = xr.Dataset(
        {"field": (("y", "x"), da.zeros((rows, cols), chunks=TILE, dtype=np.float32))},
        coords={"y": np.arange(rows), "x": np.arange(cols)},
    )
    return StoreSpec(
        template=template,
        encoding={"field": {"chunks": (TILE, TILE)}},
        marker_dims=("row", "col"),
        marker_shape=shape,
        fingerprint={"value": value, "shape": list(shape), **settings},
    )


def expected_field(value: float, shape: tuple[int, int] = (2, 3)) -> np.ndarray:
    rows = np.repeat(np.arange(shape[0]), TILE)[:, None]
    cols = np.repeat(np.arange(shape[1]), TILE)[None, :]
    return (value + 10 * rows + cols).astype(np.float32)


def fill(location: StoreLocation, value: float, index, fail_at=None):
    if fail_at is not None and tuple(index) == tuple(fail_at):
        raise RuntimeError(f"region {index} failed")
    i, j = index
    block = np.full((TILE, TILE), value + 10 * i + j, dtype=np.float32)
    where = (slice(i * TILE, (i + 1) * TILE), slice(j * TILE, (j + 1) * TILE))
    return write_region(location, {"field": (where, block)}, index)


def run(url: str, options, value: float = 1.0, *, shape=(2, 3), fail_at=None, **kwargs):
    location = store_location(url, options)
    task = dask.delayed(fill, pure=True)
    kwargs.setdefault("progress", False)
    return run_region_job(
        url, spec(value, shape, **kwargs.pop("settings", {})),
        lambda index: task(location, value, index, fail_at),
        storage_options=options, **kwargs,
    )  # fmt: skip


def opened(url: str, options) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated: no fallback warning
        return xr.open_zarr(url, storage_options=options).load()


def keys(fs, url: str) -> dict[str, bytes]:
    prefix = url.split("://", 1)[1]
    return {k: fs.cat_file(k) for k in fs.find(prefix)} if fs.exists(prefix) else {}


def test_store_on_s3_equals_the_local_store(client, bucket, tmp_path):
    url, options = bucket
    report = run(f"{url}/s.zarr", options, client=client)
    assert (report.regions, report.computed, report.skipped) == (6, 6, 0)
    assert report.store == f"{url}/s.zarr"
    run(tmp_path / "s.zarr", None, client=client)
    remote, local = opened(f"{url}/s.zarr", options), xr.open_zarr(tmp_path / "s.zarr").load()
    xr.testing.assert_identical(remote, local)
    np.testing.assert_array_equal(remote.field.values, expected_field(1.0))
    assert remote.attrs[COMPLETE_ATTR] is True
    assert read_markers(f"{url}/s.zarr", storage_options=options).all()


@pytest.mark.slow  # starts a cluster of its own
def test_killed_job_resumes_computing_only_missing_regions(client, bucket):
    url, options = bucket
    store = f"{url}/s.zarr"
    with pytest.raises(RuntimeError, match=r"region \(1, 2\) failed"):
        run(store, options, 2.0, n_workers=1, fail_at=(1, 2))  # its own cluster: shut down
    done = read_markers(store, storage_options=options)
    written = int(done.sum())
    assert written < 6 and not done[1, 2]  # the failure cancels what had not run yet
    assert opened(store, options).attrs[COMPLETE_ATTR] is False
    report = run(store, options, 2.0, client=client)
    assert (report.computed, report.skipped) == (6 - written, written)
    np.testing.assert_array_equal(opened(store, options).field.values, expected_field(2.0))


def test_a_region_whose_upload_was_cut_short_is_redone(client, bucket, moto_server):
    url, options = bucket
    store = f"{url}/s.zarr"
    run(store, options, 3.0, client=client)
    fs = moto_server.filesystem()
    prefix = store.split("://", 1)[1]
    # an upload cut after the chunk of region (0, 1), before its marker
    fs.pipe_file(f"{prefix}/field/c/0/1", b"garbage, not a chunk")
    fs.rm(f"{prefix}/region_done/c/0/1")
    assert read_markers(store, storage_options=options).sum() == 5
    report = run(store, options, 3.0, client=client)
    assert (report.computed, report.skipped) == (1, 5)
    np.testing.assert_array_equal(opened(store, options).field.values, expected_field(3.0))


def test_a_store_of_another_job_is_refused_and_untouched(client, bucket, moto_server):
    url, options = bucket
    store = f"{url}/s.zarr"
    run(store, options, 1.0, client=client, settings={"normalise": True})
    fs = moto_server.filesystem()
    before = keys(fs, store)
    with pytest.raises(ConfigError, match="normalise: store true, this job false") as refused:
        run(store, options, 1.0, client=client, settings={"normalise": False})
    assert "overwrite=True" in str(refused.value)
    assert keys(fs, store) == before
    assert run(store, options, 4.0, client=client, overwrite=True).computed == 6
    np.testing.assert_array_equal(opened(store, options).field.values, expected_field(4.0))


def test_a_skeleton_cut_short_is_replaced_without_overwrite(client, bucket, moto_server):
    """A kill during creation leaves a root with a fingerprint and no consolidated
    metadata: it holds no computed value, so the next job (any job) replaces it."""
    url, options = bucket
    store = f"{url}/s.zarr"
    location = store_location(store, options)
    write_root_metadata(location, {JOB_ATTR: spec(9.0).fingerprint_json, COMPLETE_ATTR: False})
    moto_server.filesystem().pipe_file(f"{store.split('://')[1]}/field/c/0/0", b"stale")
    status = check_store(store, spec(1.0), storage_options=options)
    assert status.replace and not status.exists
    assert run(store, options, 1.0, client=client).computed == 6
    assert opened(store, options).attrs[JOB_ATTR] == spec(1.0).fingerprint_json
    np.testing.assert_array_equal(opened(store, options).field.values, expected_field(1.0))


def test_a_prefix_that_is_not_a_store_is_never_written(client, bucket, moto_server):
    url, options = bucket
    fs = moto_server.filesystem()
    fs.pipe_file(f"{url.split('://')[1]}/data/keep.txt", b"precious")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="non-empty prefix that is not a Zarr store"):
            run(f"{url}/data", options, client=client, overwrite=overwrite)
    assert keys(fs, f"{url}/data") == {f"{url.split('://')[1]}/data/keep.txt": b"precious"}


def write_requests(moto_server, url, options, client, shape) -> Counter:
    start = len(moto_server.requests())
    run(url, options, 1.0, shape=shape, client=client)
    return Counter(method for method, _ in moto_server.requests()[start:])


def test_requests_per_written_region_do_not_grow_with_the_store(client, bucket, moto_server):
    """Total requests of a job are ``a + b * regions``: the same ``b`` for small and
    large stores (the final check reads each marker once per job)."""
    url, options = bucket
    counts = {n: write_requests(moto_server, f"{url}/s{n}.zarr", options, client, (1, n))
              for n in (2, 6, 10)}  # fmt: skip
    totals = {n: sum(c.values()) for n, c in counts.items()}
    per_region = (totals[6] - totals[2]) / 4
    assert per_region == (totals[10] - totals[6]) / 4, totals
    # written region: metadata HEAD + GET, chunk PUT, marker PUT; final check: marker HEAD + GET
    assert per_region <= 6, (f"{per_region} requests per region", counts)
    # each written region: one chunk PUT and one marker PUT, nothing more
    puts = {n: counts[n]["PUT"] for n in counts}
    assert puts[10] - puts[6] == puts[6] - puts[2] == 4 * 2, puts


def test_memory_store_is_refused_for_process_workers_and_works_in_process(tmp_path):
    with pytest.raises(ConfigError, match="memory:// lives in one process"):
        run("memory://proc.zarr", None, n_workers=1)
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as threads,
    ):
        assert run("memory://threads.zarr", None, 5.0, client=threads).computed == 6
    stored = xr.open_zarr("memory://threads.zarr", chunks=None)  # read here, not on a cluster
    np.testing.assert_array_equal(stored.field.values, expected_field(5.0))
