"""Weights by URL or registered name, served by a real HTTP server on loopback.

The server (``http.server`` in a thread) serves checkpoint bytes, honours ``Range`` and
can misbehave on demand: answer an HTTP error, or close the connection after some bytes
of the body. Every test points ``XCSMOE_CACHE`` at its own temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from xcsmoe.errors import ConfigError, DownloadError
from xcsmoe.model import hub
from xcsmoe.model.checkpoint import load_checkpoint, save_checkpoint
from xcsmoe.model.download import UnpinnedWeightsWarning
from xcsmoe.model.registry import create_model

TINY = "csmoe_tiny"


@dataclass
class Behaviour:
    """What the loopback server serves, how it misbehaves, and the requests it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, str | None]] = field(default_factory=list)
    status: int | None = None  # answer every request with this HTTP error
    cut: int | None = None  # bytes of a body sent before the connection is closed...
    cuts: int = 0  # ...for this many responses
    ranges: bool = True  # honour Range headers (206), or always send the whole file (200)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        served: Behaviour = self.server.behaviour  # type: ignore[attr-defined]
        served.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if served.status is not None:
            self.send_error(served.status)
            return
        body = served.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        asked = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if asked and served.ranges:
            start = int(asked.group(1))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        part = body[start:]
        if served.cuts > 0 and served.cut is not None:
            served.cuts -= 1
            part = part[: served.cut]
        self.wfile.write(part)  # HTTP/1.0: the connection closes after this

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    """``(base URL, behaviour)`` of a fresh HTTP server on 127.0.0.1."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.behaviour = Behaviour()  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.behaviour  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A private weights cache and an empty in-process registry for every test."""
    monkeypatch.setenv("XCSMOE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "_REGISTERED", {})
    return tmp_path / "cache" / "weights"


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """``(path, bytes, sha256)`` of a saved csmoe_tiny encoder."""
    torch.manual_seed(0)
    path = save_checkpoint(create_model(TINY), tmp_path_factory.mktemp("w") / "tiny.safetensors")
    data = path.read_bytes()
    return path, data, hashlib.sha256(data).hexdigest()


def _serve(server, name: str, data: bytes) -> str:
    base, served = server
    served.files[f"/{name}"] = data
    return f"{base}/{name}"


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _cache_files(cache) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_download_once_verified_then_reused_offline(server, tiny_file, cache):
    path, data, sha = tiny_file
    url = _serve(server, "tiny.safetensors", data) + f"#sha256={sha}"
    first = hub.weights_path(url, progress=False)
    assert first == cache / sha / "tiny.safetensors" and first.read_bytes() == data
    assert not first.with_name("tiny.safetensors.part").exists()
    served = server[1]
    assert len(served.requests) == 1
    assert hub.weights_path(url, progress=False) == first
    model = create_model(TINY, weights=url)
    assert len(served.requests) == 1  # reuse touches no network
    assert _same_weights(model, create_model(TINY, weights=path))


def test_wrong_checksum_names_both_digests_and_deletes_the_file(server, tiny_file, cache):
    _, data, sha = tiny_file
    wrong = "0" * 64
    url = _serve(server, "tiny.safetensors", data) + f"#sha256={wrong}"
    with pytest.raises(DownloadError, match=f"expected {wrong}, got {sha}"):
        hub.weights_path(url, progress=False)
    assert [n for n in _cache_files(cache) if not n.endswith(".lock")] == []


def test_truncated_body_fails_keeps_no_final_file_and_resumes_later(server, tiny_file, cache):
    _, data, sha = tiny_file
    url = _serve(server, "tiny.safetensors", data) + f"#sha256={sha}"
    served = server[1]
    served.cut, served.cuts = 1000, 100  # every answer stops after 1000 bytes of its body
    with pytest.raises(DownloadError, match="shorter than its Content-Length"):
        hub.weights_path(url, progress=False)
    final = cache / sha / "tiny.safetensors"
    assert not final.exists()
    part = final.with_name("tiny.safetensors.part")
    assert part.stat().st_size == 3000  # three attempts, each resumed where the last stopped
    assert [r["range"] for r in served.requests] == [None, "bytes=1000-", "bytes=2000-"]
    served.cuts = 0  # the server recovers: the next call resumes from the partial file
    assert hub.weights_path(url, progress=False).read_bytes() == data
    assert served.requests[-1]["range"] == "bytes=3000-" and not part.exists()


def test_dropped_connection_resumes_with_a_range_request(server, tiny_file):
    _, data, sha = tiny_file
    url = _serve(server, "tiny.safetensors", data) + f"#sha256={sha}"
    served = server[1]
    served.cut, served.cuts = len(data) // 3, 1
    assert hub.weights_path(url, progress=False).read_bytes() == data
    assert [r["range"] for r in served.requests] == [None, f"bytes={len(data) // 3}-"]


def test_a_server_without_ranges_restarts_the_download(server, tiny_file):
    _, data, sha = tiny_file
    url = _serve(server, "tiny.safetensors", data) + f"#sha256={sha}"
    served = server[1]
    served.cut, served.cuts, served.ranges = len(data) // 2, 1, False
    assert hub.weights_path(url, progress=False).read_bytes() == data
    assert len(served.requests) == 2


def test_server_error_is_named(server, tiny_file, cache):
    url = _serve(server, "tiny.safetensors", tiny_file[1])
    server[1].status = 500
    with pytest.raises(DownloadError, match="HTTP 500"):
        create_model(TINY, weights=url)
    assert [n for n in _cache_files(cache) if not n.endswith(".lock")] == []


def test_unreachable_host_fails_within_the_timeout():
    silent = socket.socket()  # accepts connections (backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1"):
            hub.weights_path(f"http://127.0.0.1:{silent.getsockname()[1]}/w.ckpt", timeout=0.5)
        assert time.monotonic() - start < 5
    finally:
        silent.close()


def test_url_without_digest_warns_with_the_digest_it_got(server, tiny_file, cache):
    _, data, sha = tiny_file
    url = _serve(server, "tiny.safetensors", data)
    with pytest.warns(UnpinnedWeightsWarning, match=f"{url}#sha256={sha}"):
        path = hub.weights_path(url, progress=False)
    assert path.read_bytes() == data
    assert path.with_name("tiny.safetensors.sha256").read_text().split()[0] == sha
    assert hub.weights_path(url, progress=False) == path and len(server[1].requests) == 1


def test_registered_name_downloads_its_file(server, tiny_file):
    path, data, sha = tiny_file
    url = _serve(server, "tiny.safetensors", data)
    hub.register_weights("tiny-test", url, sha, model=TINY, licence="CC-BY-4.0")
    assert hub.list_weights() == ["tiny-test"]
    hub.register_weights("tiny-test", url, sha, model=TINY, licence="CC-BY-4.0")  # same: no-op
    assert _same_weights(create_model(TINY, weights="tiny-test"), create_model(TINY, weights=path))
    from xcsmoe.embedding.runtime import resolve_model, weights_digest

    spec, config = resolve_model(None, "tiny-test", patch=32)  # the variant from the registry
    assert spec.name == TINY and config.name == TINY
    assert weights_digest(spec) == sha


def test_bad_names_and_registrations_are_refused(tiny_file):
    _, _, sha = tiny_file
    url = "https://example.org/w.safetensors"
    with pytest.raises(ConfigError, match="none registered yet"):
        create_model(TINY, weights="csmoe-p16-bigearthnet")
    hub.register_weights("mine", url, sha, model=TINY)
    with pytest.raises(ConfigError, match=r"registered name \(mine\)"):
        hub.weights_path("csmoe-p16-bigearthnet")
    for name in ("random", "csmoe_p16", "has/slash", "has.dot"):
        with pytest.raises(ConfigError, match="name"):
            hub.register_weights(name, url, sha, model=TINY)
    with pytest.raises(ConfigError, match="already points to"):
        hub.register_weights("mine", url + "?v=2", sha, model=TINY)
    with pytest.raises(ConfigError, match="64 hexadecimal digits"):
        hub.register_weights("other", url, "abc", model=TINY)
    with pytest.raises(ConfigError, match="model"):
        hub.register_weights("other", url, sha, model="csmoe_p17")
    with pytest.raises(ConfigError, match="https"):
        hub.register_weights("other", "ftp://example.org/w.ckpt", sha, model=TINY)
    with pytest.raises(ConfigError, match="#sha256"):
        hub.weights_path(url + "#md5=abc")


def test_shipped_registry_is_empty_and_read(tmp_path, tiny_file, monkeypatch):
    assert hub.list_weights() == []  # nothing is published yet: nothing pretends to be
    _, _, sha = tiny_file
    listed = tmp_path / "weights.json"
    entry = {
        "name": "pub",
        "url": "https://example.org/p.safetensors",
        "sha256": sha,
        "model": TINY,
    }
    listed.write_text(json.dumps({"weights": [entry]}))
    monkeypatch.setattr(hub, "_REGISTRY_FILE", listed)
    assert hub.list_weights() == ["pub"] and hub.weights_model("pub") == TINY
    with pytest.raises(ConfigError, match="already points to"):
        hub.register_weights("pub", "https://example.org/q.safetensors", sha, model=TINY)


def test_csmae_lightning_checkpoint_loads_by_url(server, tmp_path):
    """The CSMAE layout: a Lightning ``.ckpt`` whose ``state_dict`` keys start ``backbone.``."""
    torch.manual_seed(3)
    encoder = create_model(TINY)
    ckpt = tmp_path / "epoch=99.ckpt"
    state = {f"backbone.{k}": v for k, v in encoder.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 99}, ckpt)
    data = ckpt.read_bytes()
    url = _serve(server, "epoch%3D99.ckpt", data) + f"#sha256={hashlib.sha256(data).hexdigest()}"
    assert _same_weights(create_model(TINY, weights=url), encoder)
    assert _same_weights(load_checkpoint(url, create_model(TINY)), encoder)
    assert len(server[1].requests) == 1


def test_embedding_with_url_weights_equals_the_local_file(server, tiny_file):
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    import xcsmoe  # noqa: F401  (registers ds.csmoe)
    from xcsmoe.sensors import S1, S2

    path, data, sha = tiny_file
    url = _serve(server, "tiny.safetensors", data) + f"#sha256={sha}"
    geobox = GeoBox.from_bbox((600_000, 5_100_000, 600_640, 5_100_640), "EPSG:32633", resolution=10)
    rng = np.random.default_rng(0)
    bands = {
        b: (("y", "x"), rng.standard_normal((64, 64), dtype=np.float32))
        for b in S1.bands + S2.bands
    }
    import xarray as xr

    cube = xr.Dataset(bands, coords=xr_coords(geobox))
    options = {"patch": 16, "window": 64, "normalise": False, "device": "cpu", "dtype": "float32"}
    local = cube.csmoe.embed(weights=path, **options).compute()
    remote = cube.csmoe.embed(weights=url, **options).compute()
    assert remote.attrs["model"] == TINY == local.attrs["model"]
    assert len(server[1].requests) == 1  # downloaded on the client, once
    for name in local.data_vars:
        np.testing.assert_array_equal(remote[name].values, local[name].values)


def test_recipes_keep_urls_and_names_and_resolve_paths(tmp_path, tiny_file):
    import yaml

    from xcsmoe.evaluation.recipe import load_recipe as load_evaluation
    from xcsmoe.pretraining.recipe import load_recipe as load_pretraining

    _, _, sha = tiny_file
    url = f"https://example.org/tiny.safetensors#sha256={sha}"
    hub.register_weights("tiny-test", "https://example.org/t.safetensors", sha, model=TINY)
    models = [
        {"name": TINY, "weights": url, "label": "url"},
        {"name": TINY, "weights": "tiny-test", "label": "name"},
        {"name": TINY, "weights": "enc.safetensors", "label": "file"},
    ]
    recipe = tmp_path / "evaluate.yaml"
    recipe.write_text(
        yaml.safe_dump({"dataset": {"kind": "sample_catalog"}, "output": "out", "models": models})
    )
    got = [m.weights for m in load_evaluation(recipe).models]
    assert got == [url, "tiny-test", str((tmp_path / "enc.safetensors").resolve())]
    fields = {"variant": TINY, "store": "s.zarr", "output": "run", "batch_size": 2, "lr": 1e-3}
    recipe = tmp_path / "pretrain.yaml"
    recipe.write_text(yaml.safe_dump(fields | {"max_steps": 1, "init_weights": url}))
    assert load_pretraining(recipe).init_weights == url
