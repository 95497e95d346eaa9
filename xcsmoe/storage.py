"""Store locations: a local path or a URL (``s3://``, ``gs://``, ``az://``, ``file://``,
``memory://``), checked before any cluster starts or any byte is written.

Backend: **fsspec** (s3fs, gcsfs, adlfs), with zarr's own ``FsspecStore``. We chose it
over obstore because one ``storage_options`` mapping then configures every reader and
writer of a store the same way: ``xr.open_zarr(url, storage_options=...)``,
``zarr.open_group(url, storage_options=...)`` and the few listing/deleting calls xcsmoe
makes itself. Credentials, endpoints and regions follow each backend's conventions
(``storage_options={"endpoint_url": ..., "key": ..., "secret": ...}`` for s3fs, or the
``AWS_*`` environment variables and ``~/.aws`` profiles that botocore reads), and
``memory://`` works out of the box for notebooks and tests.

Functions, in the order a job uses them::

    location = store_location("s3://bucket/run.zarr", {"endpoint_url": ...})  # parse
    listing = inspect_location(location)       # reachable? bucket? what is there?
    zarr.open_group(**location.zarr_args(), mode="r")

:func:`inspect_location` answers within ``timeout`` seconds (an endpoint that does not
answer never hangs a job) and turns missing buckets, refused credentials and unreachable
endpoints into :class:`~xcsmoe.errors.StorageError` messages that say what to fix.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from xcsmoe.errors import ConfigError, StorageError, expected

__all__ = [
    "BACKEND_PACKAGES",
    "StoreListing",
    "StoreLocation",
    "inspect_location",
    "read_root_metadata",
    "store_location",
]

#: URL scheme → the package that provides its fsspec backend.
BACKEND_PACKAGES: Mapping[str, str] = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "memory": "fsspec",
    "file": "fsspec",
}
BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
PROBE_TIMEOUT_S = 15.0
ROOT_KEY = "zarr.json"
# fast failure for the probe only (the writers keep the user's retry settings)
_S3_PROBE_CONFIG = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 2}}

Kind = Literal["absent", "empty", "file", "zarr", "other"]


@dataclass(frozen=True)
class StoreLocation:
    """Where a store lives: an absolute local path, or a URL with its ``storage_options``.

    Picklable (tasks carry it to the workers). ``storage_options`` may hold credentials:
    prefer the backend's environment variables on shared clusters.
    """

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        return urlsplit(self.url).scheme if "://" in self.url else "file"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def path(self) -> Path | str:
        """A :class:`~pathlib.Path` for local stores, the URL otherwise."""
        return Path(self.url) if self.is_local else self.url

    def child(self, name: str) -> StoreLocation:
        """The location of ``name`` inside this store (an array, a key)."""
        return StoreLocation(f"{self.url}/{name}", self.storage_options)

    def zarr_args(self) -> dict[str, Any]:
        """``store=`` (and ``storage_options=``) for ``zarr.open_*``/``xr.open_zarr``."""
        if self.is_local:
            return {"store": self.url}
        return {"store": self.url, "storage_options": dict(self.storage_options)}

    def zarr_store(self, *, read_only: bool = False) -> Any:
        """A zarr store object: ``LocalStore`` for a path, ``FsspecStore`` for a URL."""
        from zarr.storage import FsspecStore, LocalStore

        if self.is_local:
            return LocalStore(self.url, read_only=read_only)
        return FsspecStore.from_url(
            self.url, storage_options=dict(self.storage_options), read_only=read_only
        )

    def filesystem(self, **extra: Any) -> tuple[Any, str]:
        """``(fsspec filesystem, path within it)``; ``extra`` adds backend options."""
        from fsspec.core import url_to_fs

        return url_to_fs(self.url, **{**dict(self.storage_options), **extra})

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class StoreListing:
    """What :func:`inspect_location` found: ``kind`` and the names directly inside."""

    kind: Kind
    names: tuple[str, ...] = ()


def store_location(
    store: str | Path | StoreLocation,
    storage_options: Mapping[str, Any] | None = None,
    *,
    argument: str = "store",
) -> StoreLocation:
    """Parse ``store`` (a path or a URL) into a :class:`StoreLocation`; pure, no I/O.

    Raises :class:`~xcsmoe.errors.ConfigError` for an unknown scheme, a scheme whose
    backend package is not installed (the message names it), a bucket URL without a
    key prefix, or ``storage_options`` given for a local path.
    """
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise ConfigError(expected("storage_options", "a mapping or None", storage_options))
    if isinstance(store, StoreLocation):
        if storage_options:
            return StoreLocation(store.url, {**store.storage_options, **storage_options})
        return store
    if not isinstance(store, (str, Path)) or not str(store):
        raise ConfigError(expected(argument, "a path or a URL such as s3://bucket/x.zarr", store))
    text = str(store)
    if "://" not in text or isinstance(store, Path):
        return _local(Path(text), storage_options, argument)
    scheme = urlsplit(text).scheme.lower()
    if scheme == "file":
        return _local(Path(unquote(urlsplit(text).path)), storage_options, argument)
    _check_backend(scheme, text, argument)
    url = text.rstrip("/")
    if scheme in BUCKET_SCHEMES:
        parts = urlsplit(url)
        if not parts.netloc or parts.path.strip("/") == "":
            raise ConfigError(
                expected(
                    argument,
                    "a URL with a bucket and a key prefix",
                    text,
                    f"Name the store inside the bucket, e.g. {scheme}://bucket/embeddings.zarr.",
                )
            )
    elif scheme == "memory" and urlsplit(url).path.strip("/") == "" and not urlsplit(url).netloc:
        raise ConfigError(
            expected(argument, "a named memory store", text, "e.g. memory://run.zarr")
        )
    return StoreLocation(url, dict(storage_options or {}))


def local_folder(
    store: str | os.PathLike[str],
    *,
    argument: str = "store",
    what: str = "this takes local folders only",
) -> Path:
    """``store`` as a local path (a ``file://`` URL mapped to its path); any other URL is
    refused with a :class:`ConfigError` naming ``argument``: ``what`` says why."""
    text = os.fspath(store)
    if not isinstance(text, str) or "://" not in text:
        return Path(store)
    if urlsplit(text).scheme.lower() != "file":
        raise ConfigError(
            expected(argument, f"a local folder ({what})", text,
                     "Give a local path or a file:// URL; URLs work for embed_to_zarr, "
                     "encode_features and build_patch_store stores.")
        )  # fmt: skip
    return Path(store_location(text).url)


def inspect_location(location: StoreLocation, *, timeout: float | None = None) -> StoreListing:
    """Reading only: is the location reachable, and is it absent, empty, a file, a Zarr
    store or something else? Object stores: a missing bucket, refused credentials and an
    endpoint that does not answer within ``timeout`` s (default :data:`PROBE_TIMEOUT_S`)
    raise :class:`StorageError`."""
    if location.is_local:
        return _inspect_local(Path(location.url))
    limit = PROBE_TIMEOUT_S if timeout is None else timeout
    return _with_deadline(lambda: _inspect_remote(location), location, limit)


def read_root_metadata(location: StoreLocation) -> dict[str, Any] | None:
    """The store's root ``zarr.json`` as a dict (one read), ``None`` if there is none."""
    try:
        if location.is_local:
            raw = (Path(location.url) / ROOT_KEY).read_bytes()
        else:
            fs, path = location.filesystem()
            raw = fs.cat_file(f"{path}/{ROOT_KEY}")
    except FileNotFoundError:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def write_root_metadata(location: StoreLocation, attributes: Mapping[str, Any]) -> None:
    """Write a bare Zarr v3 group ``zarr.json`` with ``attributes`` (one write; on object
    stores a single atomic PUT, replacing any root that was there)."""
    body = json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes)}, indent=2
    ).encode()
    if location.is_local:
        root = Path(location.url)
        root.mkdir(parents=True, exist_ok=True)
        (root / ROOT_KEY).write_bytes(body)
    else:
        fs, path = location.filesystem()
        fs.pipe_file(f"{path}/{ROOT_KEY}", body)


def remove_all_but_root(location: StoreLocation) -> None:
    """Delete everything inside the store except its root ``zarr.json``."""
    if location.is_local:
        import shutil

        for child in Path(location.url).iterdir():
            if child.name == ROOT_KEY:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        return
    fs, path = location.filesystem()
    children = [
        c for c in fs.ls(path, detail=False) if c.rstrip("/").rsplit("/", 1)[-1] != ROOT_KEY
    ]
    if children:
        fs.rm(children, recursive=True)
    fs.invalidate_cache(path)


def _local(path: Path, storage_options: Mapping[str, Any] | None, argument: str) -> StoreLocation:
    if storage_options:
        raise ConfigError(
            expected(
                "storage_options",
                "nothing for a local path",
                dict(storage_options),
                f"Drop storage_options, or give {argument} as a URL (s3://..., gs://...).",
            )
        )
    return StoreLocation(str(path.expanduser().absolute()))


def _check_backend(scheme: str, url: str, argument: str) -> None:
    import fsspec

    package = BACKEND_PACKAGES.get(scheme)
    if package is None:
        raise ConfigError(
            expected(
                argument,
                f"a local path or a URL with one of the schemes {sorted(BACKEND_PACKAGES)}",
                url,
            )
        )
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as error:
        raise ConfigError(
            expected(
                argument,
                f"a {scheme}:// URL with its storage backend installed",
                url,
                f"Install the package {package} (pip install {package}).",
            )
        ) from error


def _inspect_local(path: Path) -> StoreListing:
    if not path.exists():
        return StoreListing("absent")
    if not path.is_dir():
        return StoreListing("file")
    names = tuple(sorted(p.name for p in path.iterdir()))
    if not names:
        return StoreListing("empty")
    return StoreListing("zarr" if (path / ROOT_KEY).is_file() else "other", names)


def _inspect_remote(location: StoreLocation) -> StoreListing:
    extra = {}
    if location.protocol in ("s3", "s3a"):
        config = {**_S3_PROBE_CONFIG, **dict(location.storage_options.get("config_kwargs", {}))}
        extra = {"config_kwargs": config, "skip_instance_cache": True}
    fs, path = location.filesystem(**extra)
    if location.protocol in BUCKET_SCHEMES:
        bucket = path.split("/", 1)[0]
        try:
            fs.info(bucket)
        except FileNotFoundError:
            raise StorageError(
                expected(
                    "store",
                    "a URL in an existing bucket",
                    location.url,
                    f"Bucket {bucket!r} does not exist at this endpoint: create it, or fix "
                    "the bucket name or the endpoint.",
                )
            ) from None
    try:
        children = fs.ls(path, detail=False)
    except FileNotFoundError:
        return StoreListing("absent")
    names = tuple(sorted(c.rstrip("/").rsplit("/", 1)[-1] for c in children))
    if names == (path.rsplit("/", 1)[-1],) and fs.isfile(path):
        return StoreListing("file")
    if not names:
        return StoreListing("empty")
    return StoreListing("zarr" if ROOT_KEY in names else "other", names)


def _with_deadline(probe: Any, location: StoreLocation, timeout: float) -> StoreListing:
    """Run ``probe`` in a daemon thread; translate its errors; give up after ``timeout``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = probe()
        except BaseException as error:  # handed back to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=target, name="xcsmoe-store-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise StorageError(
            expected(
                "store",
                f"an object store that answers within {timeout:g} s",
                location.url,
                "Check the endpoint (storage_options endpoint_url, AWS_ENDPOINT_URL) and "
                "the network.",
            )
        )
    error = outcome.get("error")
    if error is None:
        return outcome["value"]
    if isinstance(error, (ConfigError, StorageError)):
        raise error
    if isinstance(error, PermissionError):
        raise StorageError(
            expected(
                "store",
                "credentials the object store accepts",
                location.url,
                f"It refused them ({error}). Fix the key/secret in storage_options or in "
                "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE).",
            )
        ) from error
    if isinstance(error, (OSError, TimeoutError)) or "Connect" in type(error).__name__:
        raise StorageError(
            expected(
                "store",
                "a reachable object store",
                location.url,
                f"{type(error).__name__}: {error}. Check the endpoint and the network.",
            )
        ) from error
    raise error
