"""Patch stores in a bucket of a loopback ``moto_server``: built from the sample catalog
(its GeoTIFFs read over ``http`` from the bucket) into ``s3://``, equal to the store built
on disk from the local GeoTIFFs, read back by the training loader from the URL, refused
early when unusable; the scan staging lives beside the store in the bucket and is removed
once the store is complete."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import xarray as xr
from distributed import Client, LocalCluster

from xcsmoe.errors import ConfigError, InputError, StorageError
from xcsmoe.model.registry import model_config
from xcsmoe.pretraining.loader import open_patch_store, patch_loader, store_plan
from xcsmoe.pretraining.patch_store import build_patch_store
from xcsmoe.regionstore import read_markers
from xcsmoe.storage import StoreLocation

PATCH = 60
JOB = {"patch_size": PATCH, "chunk_patches": 4, "region_chunks": 2, "progress": False}


def _items(catalog, which: str = "remote") -> list:
    pairs = catalog.items(which)
    return [item for pair in zip(pairs["s2"], pairs["s1"], strict=True) for item in pair]


def _writes(requests: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [r for r in requests if r[0] in ("PUT", "POST", "DELETE")]


def _objects(server, bucket: str) -> dict[str, bytes]:
    fs = server.filesystem()
    return {key: fs.cat_file(key) for key in sorted(fs.find(bucket))}


@pytest.fixture(scope="module")
def local(https_catalog, threaded_client, tmp_path_factory) -> Path:
    """The store built on disk from the sample's local GeoTIFFs."""
    store = tmp_path_factory.mktemp("patch_store_s3") / "local.zarr"
    build_patch_store(_items(https_catalog, "local"), store, client=threaded_client, **JOB)
    return store


@pytest.fixture(scope="module")
def remote(https_catalog, threaded_client) -> tuple[str, dict]:
    """``(url, storage_options)`` of the store built in a new bucket, reading the
    GeoTIFFs from the bucket."""
    server = https_catalog.server
    url = f"s3://{server.new_bucket()}/patches.zarr"
    options = server.options()
    report = build_patch_store(
        _items(https_catalog), url, client=threaded_client, storage_options=options, **JOB
    )
    assert report.store == url
    assert (report.patches, report.blocks_scanned, report.regions_written) == (24, 6, 3)
    return url, options


def test_store_in_a_bucket_equals_the_local_store(local, remote, moto_server):
    url, options = remote
    bucket = url.removeprefix("s3://").split("/")[0]
    on_disk = xr.open_zarr(local).load()
    in_bucket = xr.open_zarr(url, storage_options=options).load()
    xr.testing.assert_identical(in_bucket, on_disk)  # values, per-patch metadata, attrs
    assert in_bucket.attrs["xcsmoe_complete"] is True
    xr.testing.assert_identical(open_patch_store(url, storage_options=options).load(), on_disk)
    # the staging is gone: the bucket holds the store and nothing else
    keys = list(_objects(moto_server, bucket))
    assert keys and all(k.startswith(f"{bucket}/patches.zarr/") for k in keys), keys
    assert not list(local.parent.glob(".*.scan"))


def test_a_complete_store_in_a_bucket_is_returned_without_a_write(
    https_catalog, remote, threaded_client, moto_server
):
    url, options = remote
    before = len(moto_server.requests())
    again = build_patch_store(
        _items(https_catalog), url, client=threaded_client, storage_options=options, **JOB
    )
    assert (again.patches, again.blocks_scanned, again.regions_written) == (24, 0, 0)
    assert _writes(moto_server.requests()[before:]) == []


def test_plan_and_a_loader_batch_from_the_url_equal_the_local_ones(local, remote):
    url, options = remote
    config = model_config("csmoe_tiny")
    plans = {
        "local": store_plan(local, config),
        "url": store_plan(url, config, storage_options=options),
        "location": store_plan(StoreLocation(url, options), config),
    }
    assert plans["url"].path == url and plans["url"].indices == plans["local"].indices
    assert plans["location"] == plans["url"]
    assert "secret" not in repr(plans["url"])  # storage_options stay out of the repr
    batches = {
        name: next(iter(patch_loader(plan, batch_size=4, seed=1))) for name, plan in plans.items()
    }
    # a spawned loader worker opens the bucket itself, with the plan's storage_options
    batches["worker"] = next(iter(patch_loader(plans["url"], batch_size=4, seed=1, workers=1)))
    for name in ("url", "location", "worker"):
        for key, value in batches["local"].items():
            torch.testing.assert_close(batches[name][key], value, rtol=0, atol=0)
    from xcsmoe.pretraining.module import PatchDataModule

    data = PatchDataModule(StoreLocation(url, options), config, batch_size=4, validation=False)
    assert data.train_plan == plans["url"]
    assert data.train_plan.storage_options == options
    in_memory = dataclasses.replace(plans["url"], path="memory://x.zarr", storage_options={})
    with pytest.raises(ConfigError, match="workers: expected 0 for a memory:// store"):
        patch_loader(in_memory, batch_size=4, workers=1)


def test_an_interrupted_job_in_a_bucket_resumes_without_rescanning(
    https_catalog, threaded_client, local, moto_server, monkeypatch
):
    from xcsmoe.pretraining import patch_pipeline

    bucket = moto_server.new_bucket()
    url, options = f"s3://{bucket}/patches.zarr", moto_server.options()
    real = patch_pipeline.write_patch_region

    def fail_on_region_1(store, index, sources, scanned):
        if index == 1:
            raise RuntimeError("connection lost")
        return real(store, index, sources, scanned)

    monkeypatch.setattr(patch_pipeline, "write_patch_region", fail_on_region_1)
    with (  # noqa: SIM117  its own cluster, closed before the store is looked at
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as failing,
    ):
        with pytest.raises(RuntimeError, match="connection lost"):
            build_patch_store(
                _items(https_catalog), url, client=failing, storage_options=options, **JOB
            )
    monkeypatch.undo()
    keys = _objects(moto_server, bucket)
    assert any("/patches.zarr.scan/" in k for k in keys)  # scan results stay for the rerun
    assert not any(k.endswith(".npy") for k in keys)  # pixels never go through the bucket
    done = read_markers(url, storage_options=options)
    report = build_patch_store(
        _items(https_catalog), url, client=threaded_client, storage_options=options, **JOB
    )
    # 4 patches per tile, 8 per region: only the two tiles of each unwritten region are
    # read again
    assert not done[1] and report.blocks_scanned == 2 * int((done[:3] == 0).sum())
    assert 1 <= report.regions_written < report.regions
    xr.testing.assert_identical(
        xr.open_zarr(url, storage_options=options).load(), xr.open_zarr(local).load()
    )
    assert all(k.startswith(f"{bucket}/patches.zarr/") for k in _objects(moto_server, bucket))


def test_a_store_of_another_job_in_the_bucket_is_refused_and_untouched(
    https_catalog, threaded_client, moto_server
):
    server = https_catalog.server
    bucket = server.new_bucket()
    url, options = f"s3://{bucket}/patches.zarr", server.options()
    build_patch_store(
        _items(https_catalog), url, client=threaded_client, storage_options=options, **JOB
    )
    before = _objects(moto_server, bucket)
    seen = len(moto_server.requests())
    with pytest.raises(ConfigError, match=r"patch_size: store 60, this job 40"):
        build_patch_store(
            _items(https_catalog), url, client=threaded_client, storage_options=options,
            **{**JOB, "patch_size": 40},
        )  # fmt: skip
    assert _writes(moto_server.requests()[seen:]) == []
    assert _objects(moto_server, bucket) == before


def test_a_missing_bucket_or_a_prefix_without_a_store_is_refused(
    https_catalog, threaded_client, moto_server, bucket
):
    options = moto_server.options()
    missing = "s3://no-such-bucket-xcsmoe/patches.zarr"
    with pytest.raises(StorageError, match="does not exist"):
        build_patch_store(
            _items(https_catalog), missing, client=threaded_client, storage_options=options, **JOB
        )
    with pytest.raises(StorageError, match="does not exist"):
        open_patch_store(missing, storage_options=options)
    url, options = bucket
    with pytest.raises(InputError, match="store: expected a patch store"):
        store_plan(f"{url}/nothing.zarr", model_config("csmoe_tiny"), storage_options=options)
    assert moto_server.filesystem().find(url.removeprefix("s3://")) == []


# ------------------------------------------------------------ a cluster sharing no disk


def test_workers_sharing_no_disk_commit_and_write_through_the_bucket(
    isolated_cluster, https_catalog, local, moto_server
):
    client, _, folders = isolated_cluster
    before = {f: sorted(p.name for p in f.iterdir()) for f in folders}
    bucket = moto_server.new_bucket()
    url, options = f"s3://{bucket}/patches.zarr", moto_server.options()
    report = build_patch_store(
        _items(https_catalog), url, client=client, storage_options=options, **JOB
    )
    assert (report.patches, report.blocks_scanned, report.regions_written) == (24, 6, 3)
    put = {path for method, path in moto_server.requests() if method == "PUT"}
    assert any(f"/{bucket}/patches.zarr.scan/" in path for path in put)  # results there
    assert not any(path.endswith(".npy") for path in put)  # pixels only in the store
    xr.testing.assert_identical(
        xr.open_zarr(url, storage_options=options).load(), xr.open_zarr(local).load()
    )
    assert all(k.startswith(f"{bucket}/patches.zarr/") for k in _objects(moto_server, bucket))
    for folder in folders:  # the workers' folders hold only dask's own scratch
        after = sorted(p.name for p in folder.iterdir())
        assert set(after) - set(before[folder]) <= {"dask", "cache"}
        assert not list(folder.rglob("*.npy")) and not list(folder.rglob("*.zarr"))
