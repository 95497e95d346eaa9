"""An S3-compatible object store on loopback for the storage tests.

* ``moto_server`` — PyPI ``moto[server]``'s ``moto_server`` started on a free loopback
  port for the session and stopped at the end (skips when moto or s3fs is missing).
  :meth:`S3Server.requests` reads the server's own access log, so tests count the real
  HTTP requests every process (client and workers) made.
* ``bucket`` — a new, empty bucket per test: ``(s3 url of the bucket, storage_options)``.
* ``bucket_catalog`` — the sample catalog's GeoTIFFs uploaded to a public-read bucket,
  and the catalog cloned with ``s3://`` asset hrefs (``https_catalog``: path-style
  ``http://`` hrefs of the same objects).
* ``make_cube`` — factory of synthetic standard-normal S1+S2 cubes on a UTM 10 m grid.
* ``auth_server`` — a second moto server that checks signatures against an IAM user
  (``INITIAL_NO_AUTH_ACTION_COUNT``): its ``credentials`` work, anything else is refused.

Nothing here reaches a real cloud: every endpoint is ``http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from xcsmoe.stac.serve import free_port

_REQUEST = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/[\d.]+"')


@dataclass
class S3Server:
    """A running ``moto_server``: endpoint, access log, and the credentials it accepts."""

    endpoint: str
    log: Path
    process: subprocess.Popen
    credentials: dict[str, str] = field(default_factory=lambda: {"key": "test", "secret": "test"})

    @property
    def host(self) -> str:
        return self.endpoint.split("://", 1)[1]

    def options(self, **extra: Any) -> dict[str, Any]:
        """s3fs ``storage_options`` for this server."""
        return {"endpoint_url": self.endpoint, **self.credentials, **extra}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.options(), skip_instance_cache=True)

    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request the server has answered so far."""
        text = self.log.read_text(errors="replace")
        return [(m.group(1), m.group(2)) for m in _REQUEST.finditer(text)]

    def new_bucket(self, *, public: bool = False) -> str:
        name = f"xcsmoe-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name, **({"acl": "public-read"} if public else {}))
        return name


def _start(tmp: Path, env: dict[str, str]) -> S3Server:
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = free_port()
    log = tmp / f"moto-{port}.log"
    handle = log.open("w")
    process = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"moto_server exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return S3Server(endpoint, log, process)
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    process.kill()
    pytest.fail("moto_server did not answer within 30 s")


def _stop(server: S3Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = _start(tmp_path_factory.mktemp("moto"), {})
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture
def bucket(moto_server: S3Server) -> tuple[str, dict[str, Any]]:
    """A new empty bucket: ``("s3://<name>", storage_options)``."""
    return f"s3://{moto_server.new_bucket()}", moto_server.options()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto server that verifies signatures; ``credentials`` is an IAM user's key."""
    import boto3

    server = _start(tmp_path_factory.mktemp("moto-auth"), {"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        iam = boto3.client(
            "iam", endpoint_url=server.endpoint, region_name="us-east-1",
            aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
        )  # fmt: skip
        iam.create_user(UserName="xcsmoe-test")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="xcsmoe-test", PolicyName="all", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName="xcsmoe-test")["AccessKey"]
        server.credentials = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def make_cube():
    """``make_cube(height, width, times, chunks=64)``: a normalised-looking S1+S2 cube."""
    import numpy as np
    import pandas as pd
    import xarray as xr
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    from xcsmoe.sensors import S1, S2

    def make(height: int, width: int, times: int = 1, *, chunks: int = 64) -> xr.Dataset:
        bbox = (600_000, 5_100_000, 600_000 + 10 * width, 5_100_000 + 10 * height)
        coords = dict(xr_coords(GeoBox.from_bbox(bbox, "EPSG:32633", resolution=10)))
        coords["time"] = pd.date_range("2021-06-01", periods=times, freq="5D").values
        rng = np.random.default_rng(0)
        shape = (times, height, width)
        data = {
            name: (("time", "y", "x"), rng.standard_normal(shape, dtype=np.float32))
            for name in S1.bands + S2.bands
        }
        return xr.Dataset(data, coords=coords).chunk({"time": 1, "y": chunks, "x": chunks})

    return make


@dataclass(frozen=True)
class BucketCatalog:
    """The sample catalog in a bucket: local catalog, bucket-backed clone, server."""

    local: Any
    remote: Any
    bucket: str
    server: S3Server

    def items(self, which: str = "remote") -> dict[str, list]:
        from xcsmoe.stac.sample_catalog import iter_pairs

        pairs = list(iter_pairs(getattr(self, which)))
        return {"s2": [s2 for s2, _ in pairs], "s1": [s1 for _, s1 in pairs]}


def _upload_catalog(catalog, server: S3Server, bucket: str, base: str):
    """Upload every asset of ``catalog`` to ``bucket``; a clone whose hrefs start with
    ``base`` (``s3://<bucket>`` or ``<endpoint>/<bucket>``)."""
    from urllib.parse import unquote, urlparse

    fs = server.filesystem()
    clone = catalog.full_copy()
    for item in clone.get_items(recursive=True):
        for key, asset in item.assets.items():
            source = Path(unquote(urlparse(asset.href).path))
            target = f"{item.collection_id}/{item.id}/{key}.tif"
            if not fs.exists(f"{bucket}/{target}"):
                fs.put_file(str(source), f"{bucket}/{target}", acl="public-read")
            asset.href = f"{base}/{target}"
    return clone


@pytest.fixture(scope="session")
def bucket_catalog(sample_catalog, moto_server) -> BucketCatalog:
    name = moto_server.new_bucket(public=True)
    remote = _upload_catalog(sample_catalog, moto_server, name, f"s3://{name}")
    return BucketCatalog(sample_catalog, remote, name, moto_server)


@pytest.fixture(scope="session")
def https_catalog(bucket_catalog) -> BucketCatalog:
    c = bucket_catalog
    remote = _upload_catalog(c.local, c.server, c.bucket, f"{c.server.endpoint}/{c.bucket}")
    return BucketCatalog(c.local, remote, c.bucket, c.server)


# ------------------------------------------------------------ a cluster sharing no disk


def _wait_for_workers(client: Any, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(client.scheduler_info()["workers"]) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"{n} workers did not join within {timeout} s")
        time.sleep(0.2)


@pytest.fixture
def isolated_cluster(tmp_path):
    """``(client, worker processes, worker folders)``: a scheduler and two ``dask worker``
    processes, each in its own empty working directory with its own scratch folder and
    ``XCSMOE_CACHE``, so nothing can depend on a path shared with the client."""
    from distributed import Client

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
