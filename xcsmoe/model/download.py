"""Download a weights file once into the user cache, verified and written atomically.

:func:`download` keeps a URL's file under ``default_cache_dir("weights")``
(``$XCSMOE_CACHE``): ``weights/<sha256>/<file>`` when the digest is known (a pinned file is
verified before it gets that name), else ``weights/url-<hash of the URL>/<file>``. The
bytes arrive in ``<file>.part``, renamed only once complete, so no half file ever carries
the final name; later calls reuse the file without any network access.

* The sha256 comes from the URL fragment, pip's convention
  ``https://host/csmoe.safetensors#sha256=<64 hex>``, or from the caller (the registry).
  Without one the file is still downloaded, but a :class:`UnpinnedWeightsWarning` gives
  the digest it got (also written beside it as ``<file>.sha256``) so the URL can be pinned.
* A transfer cut short resumes from the ``.part`` file with an HTTP ``Range`` request (it
  restarts when the server ignores ranges), up to three attempts per call; after that the
  partial file is kept for the next call to resume.
* A wrong digest (the file is deleted), a body shorter than its ``Content-Length``, an
  HTTP error or a host that does not answer within ``timeout`` raises
  :class:`~xcsmoe.errors.DownloadError`. One process at a time downloads a given file.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from urllib.parse import unquote, urlsplit

from xcsmoe.cache import default_cache_dir
from xcsmoe.errors import ConfigError, DownloadError, expected

__all__ = [
    "DEFAULT_TIMEOUT",
    "UnpinnedWeightsWarning",
    "cached_file",
    "checked_sha256",
    "download",
    "split_url",
]

DEFAULT_TIMEOUT = 60.0
"""Seconds without an answer (to connect, or between two reads) before a download fails."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ATTEMPTS = 3
_BLOCK = 1 << 20


class UnpinnedWeightsWarning(UserWarning):
    """Weights downloaded from a URL that carried no sha256 to check them against."""


def download(
    url: str,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """The cached copy of ``url`` (no fragment), downloaded first if absent; see the module
    docs for the cache layout, verification and resumption."""
    from filelock import FileLock

    url, pinned = split_url(url)
    if sha256 is not None and pinned is not None and checked_sha256(sha256) != pinned:
        raise ConfigError(expected("sha256", f"the URL's digest {pinned}", sha256))
    sha256 = checked_sha256(sha256) if sha256 is not None else pinned
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(expected("timeout", "a number of seconds > 0", timeout))
    final = cached_file(url, sha256)
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_file():  # another process finished it meanwhile
            return final
        part = final.with_name(final.name + ".part")
        _transfer(url, part, progress=progress, timeout=timeout)
        got = file_sha256(part)
        if sha256 is not None and got != sha256:
            part.unlink()
            raise DownloadError(
                f"weights: {url} does not have the expected sha256 (expected {sha256}, got "
                f"{got}); the file was deleted. Check the digest you were given, or whether "
                "the file at that URL changed."
            )
        if sha256 is None:
            sidecar = final.with_name(final.name + ".sha256")
            sidecar.write_text(f"{got}  {final.name}\n", encoding="utf-8")
            warnings.warn(
                f"weights: {url} was downloaded without a sha256 to check; its sha256 is "
                f"{got}. Pin it: {url}#sha256={got}",
                UnpinnedWeightsWarning,
                stacklevel=3,
            )
        os.replace(part, final)
    return final


def cached_file(url: str, sha256: str | None) -> Path:
    """Where ``url`` is cached: ``weights/<sha256>/<file>`` when pinned, else
    ``weights/url-<hash of the URL>/<file>``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", unquote(Path(urlsplit(url).path).name)) or "weights"
    if name.startswith("."):
        name = "_" + name
    folder = sha256 if sha256 else "url-" + hashlib.sha256(url.encode()).hexdigest()[:20]
    return default_cache_dir("weights", folder, name)


def split_url(url: object) -> tuple[str, str | None]:
    """``(url without fragment, sha256 or None)``; refuses non-HTTP(S) schemes and
    fragments other than ``#sha256=<hex>``."""
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ConfigError(
            expected(
                "weights",
                "an https:// (or http://) URL",
                url,
                "For other stores, copy the file locally and pass its path.",
            )
        )
    base, _, fragment = url.partition("#")
    if not urlsplit(base).netloc:
        raise ConfigError(expected("weights", "a URL with a host", url))
    if not fragment:
        return base, None
    if not fragment.lower().startswith("sha256="):
        raise ConfigError(
            expected("weights", "a URL fragment #sha256=<64 hex digits>", f"#{fragment}")
        )
    return base, checked_sha256(fragment[len("sha256=") :])


def checked_sha256(value: object) -> str:
    """``value`` as a lowercase 64-digit hex sha256; :class:`ConfigError` otherwise."""
    digest = value.lower() if isinstance(value, str) else value
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise ConfigError(
            expected("sha256", "64 hexadecimal digits", value, "Compute it with `sha256sum FILE`.")
        )
    return digest


# ------------------------------------------------------------------------------ transfer


class _Interrupted(Exception):
    """A body that ended (or stalled) before its announced length."""


def _transfer(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``part`` completely, resuming what an earlier attempt left."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            _attempt(url, part, progress=progress, timeout=timeout)
            return
        except _Interrupted as error:
            if attempt == _ATTEMPTS:
                raise DownloadError(
                    f"weights: the download of {url} stopped short {_ATTEMPTS} times ({error}). "
                    f"The partial file {part} is kept; run again to resume, or check the "
                    "server."
                ) from None


def _attempt(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    from http.client import HTTPException
    from urllib.error import HTTPError, URLError
    from urllib.request import ProxyHandler, Request, build_opener

    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.is_file() else 0
    request = Request(url, headers={"User-Agent": "xcsmoe", "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    host = urlsplit(url).hostname or ""
    opener = build_opener(ProxyHandler({})) if host in _LOOPBACK else build_opener()
    try:
        response = opener.open(request, timeout=timeout)
    except HTTPError as error:
        if error.code == 416 and offset:  # the partial file does not fit: start again
            part.unlink()
            raise _Interrupted("the partial file did not match; restarting") from None
        raise DownloadError(
            f"weights: {url} answered HTTP {error.code} {error.reason}. Check the URL; "
            "retry later if the server is having trouble."
        ) from None
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        raise DownloadError(
            f"weights: cannot reach {host} ({reason}). Check the URL and the network (proxy "
            "settings: HTTPS_PROXY), or download the file and pass its path."
        ) from None
    with response:
        resumed = offset and response.status == 206 and _range_start(response) == offset
        if not resumed:
            offset = 0  # the server ignored the range: start again
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = offset + remaining if remaining is not None else None
        received = 0
        with (
            open(part, "ab" if resumed else "wb") as out,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
            ) as bar,
        ):  # fmt: skip
            try:
                while block := response.read(_BLOCK):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            except (OSError, ValueError, HTTPException) as error:  # reset, timeout, short read
                raise _Interrupted(
                    f"{type(error).__name__} after {offset + received} bytes"
                ) from None
            finally:
                out.flush()
                os.fsync(out.fileno())
    if remaining is not None and received != remaining:
        raise _Interrupted(
            f"got {offset + received} of {total} bytes: the body is shorter than its Content-Length"
        )


def _range_start(response: object) -> int | None:
    match = re.match(r"bytes (\d+)-", getattr(response, "headers", {}).get("Content-Range", ""))
    return int(match.group(1)) if match else None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
