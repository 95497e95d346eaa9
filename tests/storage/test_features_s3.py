"""Feature stores in a bucket of a loopback ``moto_server``: the same store as on disk,
opened from the URL, written by cluster workers, and refused early when unusable."""

from __future__ import annotations

import pandas as pd
import pytest
import xarray as xr
from distributed import Client, LocalCluster

from xcsmoe.errors import ConfigError, StorageError
from xcsmoe.evaluation.datasets import read_generic
from xcsmoe.evaluation.features import encode_features, open_features

TINY = "csmoe_tiny"
JOB = {
    "model": TINY,
    "weights": "random",
    "layers": (0, 2),
    "device": "cpu",
    "batch_size": 4,
    "region_size": 4,
    "progress": False,
}


@pytest.fixture(scope="module")
def local(sample_set, tmp_path_factory) -> xr.Dataset:
    store = tmp_path_factory.mktemp("features_s3") / "local.zarr"
    return encode_features(sample_set, store, **JOB).load()


def test_store_in_a_bucket_equals_the_local_store(sample_set, local, bucket, moto_server):
    url, options = bucket
    store = f"{url}/features.zarr"
    written = encode_features(sample_set, store, storage_options=options, **JOB)
    assert written.attrs["xcsmoe_complete"] is True
    xr.testing.assert_identical(written.load(), local)
    assert moto_server.filesystem().isfile(f"{store.removeprefix('s3://')}/zarr.json")

    opened = open_features(store, model=TINY, weights="random", storage_options=options)
    xr.testing.assert_identical(opened.load(), local)
    before = len(moto_server.requests())
    again = encode_features(sample_set, store, storage_options=options, **JOB)  # complete
    xr.testing.assert_identical(again.load(), local)
    puts = [r for r in moto_server.requests()[before:] if r[0] in ("PUT", "POST", "DELETE")]
    assert puts == [], "a complete store of the same job was written to"


def test_cluster_workers_write_the_store_in_a_bucket(sample_set, local, bucket):
    url, options = bucket
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        written = encode_features(
            sample_set, f"{url}/cluster.zarr", storage_options=options, client=client, **JOB
        )
    assert written.attrs["xcsmoe_complete"] is True
    tol = {"rtol": 1e-5, "atol": 1e-5}  # another thread count sums in another order
    for name in ("cls", "token_mean", "tokens"):
        xr.testing.assert_allclose(written[name].load(), local[name], **tol)


def test_a_missing_bucket_is_refused_before_any_encoding(sample_set, moto_server):
    with pytest.raises(StorageError, match="does not exist"):
        encode_features(
            sample_set, "s3://no-such-bucket-xcsmoe/f.zarr",
            storage_options=moto_server.options(), **JOB,
        )  # fmt: skip
    with pytest.raises(StorageError, match="does not exist"):
        open_features("s3://no-such-bucket-xcsmoe/f.zarr", storage_options=moto_server.options())


def test_memory_store_for_process_workers_is_refused_before_a_cluster_starts(sample_set):
    with pytest.raises(ConfigError, match="store: expected a location every worker can reach"):
        encode_features(sample_set, "memory://features-far.zarr", n_workers=1, **JOB)


def test_an_empty_prefix_is_not_a_feature_store(bucket):
    url, options = bucket
    with pytest.raises(ValueError, match="features: expected a feature store"):
        open_features(f"{url}/nothing.zarr", storage_options=options)


def test_read_generic_reads_a_zarr_store_at_a_url(sample_set, bucket):
    url, options = bucket
    ids = {name: sample_set[name].values.astype(object) for name in ("sample", "split")}
    images = sample_set.drop_vars("labels").assign_coords(
        sample=ids["sample"], split=("sample", ids["split"])
    )  # object strings: Zarr v3's variable-length string type
    images.to_zarr(f"{url}/images.zarr", storage_options=options, consolidated=False)
    classes = list(sample_set.attrs["classes"])
    table = pd.DataFrame(
        {
            "sample": [str(i) for i in sample_set["sample"].values],
            "labels": [
                [c for c, on in zip(classes, row, strict=True) if on]
                for row in sample_set["labels"].values
            ],
        }
    )
    read = read_generic(
        f"{url}/images.zarr", table, task="multilabel", classes=classes, storage_options=options
    )
    xr.testing.assert_equal(read["B04"], sample_set["B04"])
    xr.testing.assert_equal(read["labels"], sample_set["labels"])
