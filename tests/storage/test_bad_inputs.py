"""Bad store locations get clear, early errors, and nothing is written anywhere.

Every refusal here happens before a cluster is contacted: the jobs are given an
unreachable scheduler address, so an error about the scheduler would mean the store was
checked too late.
"""

from __future__ import annotations

import importlib.util
import socket
import time
from collections.abc import Iterator

import dask
import pytest

import xcsmoe.storage
from xcsmoe.errors import ConfigError, StorageError
from xcsmoe.regionstore import StoreSpec, run_region_job
from xcsmoe.stac.serve import free_port
from xcsmoe.storage import store_location

NO_SCHEDULER = "tcp://127.0.0.1:9"  # never contacted when the store is refused first


def tiny_spec() -> StoreSpec:
    import xarray as xr

    template = xr.Dataset({"v": ("x", dask.array.zeros(4, chunks=2))})
    return StoreSpec(template, {"v": {"chunks": (2,)}}, ("region",), (2,), {"job": 1})


def submit(store: str, options=None, **kwargs):
    return run_region_job(
        store, tiny_spec(), lambda index: None, client=NO_SCHEDULER, progress=False,
        storage_options=options, **kwargs,
    )  # fmt: skip


def buckets(server) -> list[str]:
    return sorted(server.filesystem().ls("", refresh=True))


def test_a_bucket_that_does_not_exist(moto_server):
    before = buckets(moto_server)
    with pytest.raises(StorageError, match="Bucket 'no-such-bucket' does not exist"):
        submit("s3://no-such-bucket/emb.zarr", moto_server.options())
    assert buckets(moto_server) == before, "the bucket must not be created"


def test_wrong_credentials_are_refused_and_nothing_is_written(auth_server):
    name = auth_server.new_bucket()
    wrong = {**auth_server.options(), "secret": "not-the-secret"}
    with pytest.raises(StorageError, match="credentials the object store accepts") as refused:
        submit(f"s3://{name}/emb.zarr", wrong)
    assert "AWS_ACCESS_KEY_ID" in str(refused.value)
    unknown = {**auth_server.options(), "key": "AKIANOSUCHKEY", "secret": "x"}
    with pytest.raises(StorageError, match="credentials"):
        submit(f"s3://{name}/emb.zarr", unknown)
    assert auth_server.filesystem().find(name) == []


def test_an_endpoint_that_refuses_connections_fails_fast():
    port = free_port()  # nothing listens there
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s"}
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"reachable object store|answers within"):
        submit("s3://bucket/emb.zarr", options)
    assert time.monotonic() - start < 30


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_an_endpoint_that_never_answers_does_not_hang(silent_endpoint, monkeypatch):
    monkeypatch.setattr(xcsmoe.storage, "PROBE_TIMEOUT_S", 2.0)
    options = {"endpoint_url": silent_endpoint, "key": "k", "secret": "s"}
    start = time.monotonic()
    with pytest.raises(StorageError, match="answers within 2 s"):
        submit("s3://bucket/emb.zarr", options)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(("scheme", "package"), [("gs", "gcsfs"), ("az", "adlfs")])
def test_a_scheme_without_its_backend_names_the_package(scheme, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(ConfigError, match=f"Install the package {package}"):
        submit(f"{scheme}://bucket/emb.zarr")


@pytest.mark.parametrize(
    ("store", "options", "match"),
    [
        ("ftp2://host/x.zarr", None, "one of the schemes"),
        ("s3://only-a-bucket", None, "a bucket and a key prefix"),
        ("s3://only-a-bucket/", None, "a bucket and a key prefix"),
        ("memory://", None, "a named memory store"),
        ("/tmp/local.zarr", {"key": "k"}, "storage_options: expected nothing for a local path"),
        ("s3://bucket/x.zarr", ["key"], "storage_options: expected a mapping"),
    ],
)
def test_malformed_locations_are_refused_without_io(store, options, match):
    with pytest.raises(ConfigError, match=match):
        store_location(store, options)


def test_file_urls_and_paths_are_the_same_location(tmp_path):
    as_url = store_location((tmp_path / "a b.zarr").as_uri())
    assert as_url == store_location(tmp_path / "a b.zarr")
    assert as_url.is_local and as_url.path == tmp_path / "a b.zarr"


def test_a_non_store_prefix_is_refused_for_the_embedding_job(moto_server, make_cube):
    from xcsmoe.embedding.batch import embed_to_zarr

    name = moto_server.new_bucket()
    moto_server.filesystem().pipe_file(f"{name}/tables/a.csv", b"1,2\n")
    with pytest.raises(ConfigError, match="non-empty prefix that is not a Zarr store"):
        embed_to_zarr(
            make_cube(64, 64), f"s3://{name}/tables", client=NO_SCHEDULER,
            storage_options=moto_server.options(), model="csmoe_tiny", weights="random",
            window=64, normalise=False, progress=False,
        )  # fmt: skip
    assert moto_server.filesystem().find(name) == [f"{name}/tables/a.csv"]
