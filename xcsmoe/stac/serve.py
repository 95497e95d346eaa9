"""A real STAC API on loopback: ``rustac serve`` over item and collection JSON files."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pystac

from xcsmoe.errors import ConfigError, StacConnectionError, expected

__all__ = ["api_files", "free_port", "rustac_executable", "serve_stac"]


def rustac_executable() -> str:
    """Path of the ``rustac`` command (beside the running Python first, then ``PATH``)."""
    beside = Path(sys.executable).with_name("rustac")
    if beside.is_file():
        return str(beside)
    found = shutil.which("rustac")
    if found is None:
        raise ConfigError(
            expected("rustac", "the rustac command", None, "Install it: pip install rustac.")
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def api_files(catalog: pystac.Catalog, folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``catalog`` as flat files a STAC server loads: collections, then their items.

    Each collection becomes ``<id>.collection.json`` (without links) and its items one
    ``<id>.items.json`` FeatureCollection; asset hrefs are made absolute.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    collections, item_sets = [], []
    for child in catalog.get_all_collections():
        body = child.to_dict(include_self_link=False, transform_hrefs=False)
        body["links"] = []
        path = folder / f"{child.id}.collection.json"
        path.write_text(json.dumps(body))
        collections.append(path)
        features = []
        for item in child.get_items():
            feature = item.clone()
            feature.make_asset_hrefs_absolute()
            data = feature.to_dict(include_self_link=False, transform_hrefs=False)
            data["links"] = []
            data["collection"] = child.id
            features.append(data)
        path = folder / f"{child.id}.items.json"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        item_sets.append(path)
    return collections + item_sets


@contextmanager
def serve_stac(
    source: pystac.Catalog | Sequence[str | os.PathLike[str]],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[str]:
    """Serve a catalog (or collection/item JSON files) as a STAC API on loopback.

    Yields the API URL and stops the server on exit. Files must list collections before
    their items; a :class:`pystac.Catalog` is flattened with :func:`api_files` first.
    """
    if isinstance(source, pystac.Catalog):
        with (
            tempfile.TemporaryDirectory(prefix="xcsmoe-api-") as folder,
            serve_stac(
                api_files(source, folder), host=host, port=port, startup_timeout=startup_timeout
            ) as url,
        ):
            yield url
        return
    hrefs = list(source)
    if not hrefs:
        raise ConfigError(expected("hrefs", "at least one collection or item JSON file", []))
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    command = [rustac_executable(), "serve", "--addr", f"{host}:{port}", *map(str, hrefs)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_ready(url, process, startup_timeout, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(url: str, process: subprocess.Popen, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")[-2000:]
            raise StacConnectionError(
                expected("rustac serve", "a running server", f"exit {process.returncode}", output)
            )
        try:
            with urllib.request.urlopen(f"{url}/collections", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    process.kill()
    raise StacConnectionError(
        expected("rustac serve", f"an answer within {timeout} s", "no answer", url)
    )
