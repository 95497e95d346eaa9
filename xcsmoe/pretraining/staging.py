"""Scan staging of a patch store: the kept patches of each scanned block, until written.

A block's arrays (``block-<i>-s2.npy``, ``block-<i>-s1.npy``) are staged first and its JSON
result last, so the result's presence commits the block and a rerun skips it. Local
stores stage in the hidden folder ``.<store>.scan/`` (atomic renames, memory-mapped
reads); stores at a URL stage in ``<store>.scan/<hash of the job>/`` of the same bucket
(one PUT per object, no renames), so workers that share no disk stage through it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from xcsmoe.errors import InputError, expected
from xcsmoe.storage import StoreLocation

Staging = str | StoreLocation  # a local folder, or a prefix beside a store at a URL


def stage_array(scan_dir: Staging, name: str, array: np.ndarray) -> None:
    """Stage one ``.npy`` array (uncompressed: it is read back once, soon)."""
    if isinstance(scan_dir, StoreLocation):
        buffer = io.BytesIO()
        np.save(buffer, array)
        fs, root = scan_dir.filesystem()
        fs.pipe_file(f"{root}/{name}", buffer.getvalue())
    else:
        save_atomic(Path(scan_dir) / name, array)


def save_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary name, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


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


def load_staged(scan_dir: Staging, name: str) -> np.ndarray | None:
    """A staged array (memory-mapped from a local folder), ``None`` if it was not staged."""
    if not isinstance(scan_dir, StoreLocation):
        path = Path(scan_dir) / name
        return np.load(path, mmap_mode="r") if path.is_file() else None
    fs, root = scan_dir.filesystem()
    try:
        raw = fs.cat_file(f"{root}/{name}")  # one GET, whether or not it exists
    except FileNotFoundError:
        return None
    return np.load(io.BytesIO(raw))


def remove_staged(scan_dir: Staging, names: Sequence[str]) -> None:
    """Remove staged arrays once they are written (names that were never staged are
    skipped); JSON results stay until the store is complete."""
    if not isinstance(scan_dir, StoreLocation):
        for name in names:
            with suppress(FileNotFoundError):
                os.remove(Path(scan_dir) / name)
        return
    fs, root = scan_dir.filesystem()
    for name in names:
        with suppress(FileNotFoundError):
            fs.rm_file(f"{root}/{name}")


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
