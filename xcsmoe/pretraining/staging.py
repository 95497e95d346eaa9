"""Scan results of a patch store job: which patches of each block were kept, until the
store is complete.

A block's JSON result (``block-<i>.json``) is committed by the worker that scanned it: an
atomic rename in the hidden folder ``.<store>.scan/`` beside a local store, one PUT in
``<store>.scan/<hash of the job>/`` of the same bucket for a store at a URL, so workers
that share no disk commit through the store's filesystem. Results fix the positions of a
tile's patches on a rerun without reading its pixels again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from xcsmoe.errors import InputError, expected
from xcsmoe.storage import StoreLocation

Staging = str | StoreLocation  # a local folder, or a prefix beside a store at a URL


def result_name(index: int) -> str:
    return f"block-{index:07d}.json"


def staged_names(scan_dir: Staging) -> set[str]:
    """Names in the staging (one listing)."""
    if not isinstance(scan_dir, StoreLocation):
        return set(os.listdir(scan_dir))
    fs, root = scan_dir.filesystem()
    fs.invalidate_cache(root)  # workers in other processes wrote there
    try:
        return {_base(p) for p in fs.ls(root, detail=False)}
    except FileNotFoundError:
        return set()


def read_results(scan_dir: Staging, indices: Sequence[int]) -> list[dict[str, Any]]:
    names = [result_name(i) for i in indices]
    if not isinstance(scan_dir, StoreLocation):
        return [json.loads((Path(scan_dir) / n).read_text()) for n in names]
    fs, root = scan_dir.filesystem()
    fs.invalidate_cache(root)  # a listing from before the scan would hide them
    paths = [f"{root}/{n}" for n in names]
    raw = fs.cat(paths, on_error="raise") if paths else {}  # concurrent GETs
    return [json.loads(raw[p]) for p in paths]


def open_staging(location: StoreLocation, local: Path | None, fingerprint_json: str) -> Staging:
    """The staging beside the store, emptied of another job's staging.

    Local: the hidden folder ``.<store>.scan/`` (a ``str``). URL: the prefix
    ``<store>.scan/<hash of the fingerprint>/`` in the same bucket (a
    :class:`StoreLocation`), so workers that share no disk stage through the bucket.
    """
    if local is not None:
        return str(local_staging(local, fingerprint_json))
    digest = hashlib.sha256(fingerprint_json.encode()).hexdigest()[:16]
    parent = StoreLocation(f"{location.url}.scan", location.storage_options)
    fs, root = parent.filesystem()
    fs.invalidate_cache(root)
    try:
        entries = fs.ls(root, detail=False)
    except FileNotFoundError:
        entries = []
    for entry in entries:
        name = _base(entry)
        if name == digest:
            continue
        if not _is_digest(name) or not fs.exists(f"{root}/{name}/job.json"):
            raise InputError(
                expected("store", "a URL whose staging prefix xcsmoe can use",
                         f"{parent.url!r} holding objects xcsmoe did not write",
                         "Remove that prefix or choose another store URL.")
            )  # fmt: skip
        fs.rm(f"{root}/{name}", recursive=True)  # another job's staging
    staging = parent.child(digest)
    job = f"{root}/{digest}/job.json"
    try:
        held = fs.cat_file(job).decode()
    except FileNotFoundError:
        held = None
    if held is not None and held != fingerprint_json:  # a hash collision: start afresh
        fs.rm(f"{root}/{digest}", recursive=True)
        held = None
    if held is None:
        fs.pipe_file(job, fingerprint_json.encode())
    return staging


def local_staging(store: Path, fingerprint_json: str) -> Path:
    """The hidden staging folder beside ``store``, emptied when it holds another job."""
    folder = store.parent / f".{store.name}.scan"
    job = folder / "job.json"
    if folder.exists() and (not job.is_file() or job.read_text() != fingerprint_json):
        if not job.is_file() and any(folder.iterdir()):
            raise InputError(
                expected("store", "a path whose staging folder xcsmoe can use",
                         f"{str(folder)!r} holding files xcsmoe did not write",
                         "Remove that folder or choose another store path.")
            )  # fmt: skip
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not job.is_file():
        job.write_text(fingerprint_json)
    return folder


def remove_staging(scan_dir: Staging) -> None:
    if not isinstance(scan_dir, StoreLocation):
        shutil.rmtree(scan_dir, ignore_errors=True)
        return
    fs, root = scan_dir.filesystem()
    parent = root.rsplit("/", 1)[0]  # <store>.scan: emptied of other jobs at the start
    fs.invalidate_cache(parent)  # list what the workers wrote
    with suppress(FileNotFoundError):
        fs.rm(parent, recursive=True)
    fs.invalidate_cache(parent)


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _is_digest(name: str) -> bool:
    return len(name) == 16 and all(c in "0123456789abcdef" for c in name)


def commit_result(scan_dir: Staging, name: str, result: dict[str, Any]) -> None:
    """Write a block's JSON result, last: its presence marks the block as scanned."""
    if isinstance(scan_dir, StoreLocation):
        fs, root = scan_dir.filesystem()
        fs.pipe_file(f"{root}/{name}", json.dumps(result).encode())  # one atomic PUT
        return
    folder = Path(scan_dir)
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, folder / name)
