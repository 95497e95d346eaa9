"""The demo's pretraining cache: one folder per distinct training, published atomically.

The key is a hash of everything that determines the pretrained weights: the training
values of :class:`~xcsmoe.demo.settings.DemoSettings`, the decoded content of the patch
store, and the versions of the cache format, xcsmoe, torch and Lightning. Entries live in
``default_cache_dir("demo", "pretrain", <key>)``:

* a run trains into a hidden sibling ``.<key>.<pid>.<random>.tmp``;
* when it has finished, the manifest ``demo-cache.json`` (with the encoder's sha256) is
  written last, then the folder is renamed to ``<key>`` in one step;
* a lookup accepts only a folder whose manifest names the key and whose encoder has the
  recorded sha256, so a killed run (a leftover ``.tmp`` folder) or a damaged entry is
  never reused. Leftovers of processes that no longer run are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xcsmoe.cache import default_cache_dir
from xcsmoe.model.download import file_sha256

__all__ = [
    "CACHE_FORMAT",
    "MANIFEST",
    "CacheEntry",
    "cache_key",
    "cache_root",
    "lookup",
    "publish",
    "staging_folder",
    "store_digest",
]

CACHE_FORMAT = 1
MANIFEST = "demo-cache.json"
ENCODER = "encoder.safetensors"
_STORE_ATTRS_IGNORED = ("xcsmoe_job", "xcsmoe_complete")


@dataclass(frozen=True)
class CacheEntry:
    """A complete pretraining result: ``folder`` holds ``encoder.safetensors`` and the
    Lightning logs (``logs/csv/metrics.csv``)."""

    folder: Path
    key: str
    hit: bool

    @property
    def encoder(self) -> Path:
        return self.folder / ENCODER

    @property
    def metrics(self) -> Path:
        return self.folder / "logs" / "csv" / "metrics.csv"


def cache_root() -> Path:
    """``default_cache_dir("demo", "pretrain")`` (follows ``$XCSMOE_CACHE``)."""
    return default_cache_dir("demo", "pretrain")


def store_digest(store: str | os.PathLike[str]) -> str:
    """sha256 of a patch store's decoded content: every variable's name, dtype, shape and
    values, and the store's attributes (less the job/complete markers)."""
    import xarray as xr

    digest = hashlib.sha256()
    with xr.open_zarr(store, chunks=None) as ds:
        attrs = {k: v for k, v in ds.attrs.items() if k not in _STORE_ATTRS_IGNORED}
        digest.update(json.dumps(attrs, sort_keys=True, default=str).encode())
        for name in sorted(map(str, ds.variables)):
            values = np.asarray(ds[name].values)
            digest.update(f"{name}|{values.dtype.kind}|{values.shape}".encode())
            if values.dtype.kind in "OUT":
                digest.update("\x00".join(map(str, values.ravel())).encode())
            else:
                digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def cache_key(training: Mapping[str, Any], store: str) -> tuple[str, dict[str, Any]]:
    """``(key, inputs)``: the cache key of a training and the values it hashes."""
    from importlib.metadata import version

    from xcsmoe import __version__

    inputs = {
        "format": CACHE_FORMAT,
        "xcsmoe": __version__,
        "torch": version("torch"),
        "lightning": version("lightning"),
        "training": dict(sorted(training.items())),
        "patch_store": store,
    }
    text = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24], inputs


def lookup(key: str, *, root: Path | None = None) -> CacheEntry | None:
    """The complete, intact entry of ``key``, or ``None``."""
    folder = (root or cache_root()) / key
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("key") != key:
        return None
    if manifest.get("format") != CACHE_FORMAT:
        return None
    entry = CacheEntry(folder, key, hit=True)
    if not entry.metrics.is_file() or not entry.encoder.is_file():
        return None
    if file_sha256(entry.encoder) != manifest.get("encoder_sha256"):
        return None
    return entry


def staging_folder(key: str, *, root: Path | None = None) -> Path:
    """A fresh hidden folder to train ``key`` in (leftovers of dead processes removed)."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(".*.tmp"):
        if not _owner_alive(old):
            shutil.rmtree(old, ignore_errors=True)
    folder = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    folder.mkdir()
    return folder


def publish(staging: Path, key: str, inputs: Mapping[str, Any]) -> CacheEntry:
    """Seal ``staging`` (manifest last) and rename it to the entry of ``key``.

    Training checkpoints are dropped (the encoder and the logs are the result). When
    another process published ``key`` first, its entry is kept and ``staging`` removed;
    a damaged entry of ``key`` is replaced.
    """
    root = staging.parent
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "inputs": dict(inputs),
        "encoder_sha256": file_sha256(staging / ENCODER),
    }
    tmp = staging / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, staging / MANIFEST)
    final = root / key
    if final.exists():
        if lookup(key, root=root) is not None:
            shutil.rmtree(staging, ignore_errors=True)
            return CacheEntry(final, key, hit=False)
        shutil.rmtree(final)  # damaged: its manifest or encoder does not check out
    os.rename(staging, final)
    return CacheEntry(final, key, hit=False)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _owner_alive(folder: Path) -> bool:
    """Whether the process named in a staging folder (``.<key>.<pid>.<rand>.tmp``) runs."""
    parts = folder.name.split(".")
    try:
        pid = int(parts[2])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
