"""Weights a user can fetch: a local path, an ``http(s)://`` URL or a registered name.

:func:`weights_path` turns any of them into a local checkpoint file; every ``weights=``
argument of xcsmoe goes through it on the client, before a model is built or a cluster
starts.

* **URL**: downloaded once into the cache, verified against its sha256 (pip's convention
  ``https://host/csmoe.safetensors#sha256=<64 hex>``) and reused offline afterwards; see
  :mod:`xcsmoe.model.download`.
* **Name**: an entry of the registry, the package's ``weights.json`` (empty until CSMoE
  weights are published) plus :func:`register_weights` calls of this process; it gives
  the URL, the sha256 and the variant. A registered name wins over a file of the same name
  in the working directory (write ``./name`` for the file).
* **Path**: anything else (``str`` or :class:`os.PathLike`), returned as is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from os import PathLike
from pathlib import Path

from xcsmoe.errors import ConfigError, expected
from xcsmoe.model.download import DEFAULT_TIMEOUT, checked_sha256, download, split_url

__all__ = [
    "WeightsEntry",
    "is_remote",
    "list_weights",
    "register_weights",
    "weights_model",
    "weights_path",
]

RANDOM_WEIGHTS = "random"
_REGISTRY_FILE = Path(__file__).with_name("weights.json")
_REGISTERED: dict[str, WeightsEntry] = {}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class WeightsEntry:
    """A registered name: where its file is, its sha256, and the variant it loads into."""

    name: str
    url: str
    sha256: str
    model: str
    description: str = ""
    licence: str = ""


# ------------------------------------------------------------------------------ registry


def register_weights(
    name: str,
    url: str,
    sha256: str,
    *,
    model: str,
    description: str = "",
    licence: str = "",
) -> WeightsEntry:
    """Make ``name`` usable as ``weights=name`` in this process.

    ``url``: ``https://`` (or ``http://``) address of a ``.safetensors`` file or a CSMAE
    ``.ckpt``; ``sha256``: its digest (64 hex digits); ``model``: the variant it loads into
    (one of :func:`~xcsmoe.list_models`). Names are letters, digits, ``_`` and ``-`` and may
    not be a model variant, ``"random"`` or an already registered name with other values
    (registering the same entry again is a no-op). Returns the entry.
    """
    entry = _checked_entry(
        {
            "name": name,
            "url": url,
            "sha256": sha256,
            "model": model,
            "description": description,
            "licence": licence,
        },
        source="register_weights",
    )
    known = _all_entries().get(entry.name)
    if known is not None and known != entry:
        raise ConfigError(
            expected(
                "name",
                "a name not registered yet",
                entry.name,
                f"It already points to {known.url}; pick another name.",
            )
        )
    _REGISTERED[entry.name] = entry
    return entry


def list_weights() -> list[str]:
    """Registered weight names (the package's registry file and :func:`register_weights`)."""
    return sorted(_all_entries())


def weights_entry(name: str) -> WeightsEntry | None:
    """The registry entry of ``name``, or ``None``."""
    return _all_entries().get(name)


def weights_model(weights: object) -> str | None:
    """The variant a registered name loads into (``None`` for paths, URLs, unknown names)."""
    entry = weights_entry(weights) if isinstance(weights, str) else None
    return entry.model if entry is not None else None


def _all_entries() -> dict[str, WeightsEntry]:
    return {**_shipped_entries(_REGISTRY_FILE), **_REGISTERED}


@lru_cache(maxsize=4)
def _shipped_entries(path: Path) -> dict[str, WeightsEntry]:
    """Entries of a registry file: ``{"weights": [{name, url, sha256, model, ...}, ...]}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"weights registry {path} cannot be read ({error}).") from error
    items = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(expected(str(path), 'a JSON object {"weights": [...]}', type(items)))
    entries = [_checked_entry(item, source=f"{path} entry {i}") for i, item in enumerate(items)]
    return {entry.name: entry for entry in entries}


def _checked_entry(values: object, *, source: str) -> WeightsEntry:
    from xcsmoe.model.registry import list_models

    fields = set(WeightsEntry.__dataclass_fields__)
    if not isinstance(values, dict) or not {"name", "url", "sha256", "model"} <= set(values):
        raise ConfigError(expected(source, "a mapping with name, url, sha256 and model", values))
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(expected(source, f"only the fields {sorted(fields)}", unknown))
    name, url, model = values["name"], values["url"], values["model"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(expected("name", "letters, digits, '_' and '-' (at most 64)", name))
    if name == RANDOM_WEIGHTS or name in list_models():
        raise ConfigError(expected("name", "a name that is not a model variant nor 'random'", name))
    if model not in list_models():
        raise ConfigError(expected("model", f"one of {list_models()}", model))
    base, pinned = split_url(url)
    sha256 = checked_sha256(values["sha256"])
    if pinned is not None and pinned != sha256:
        raise ConfigError(expected("url", f"no digest or #sha256={sha256}", url))
    text = {k: values.get(k, "") for k in ("description", "licence")}
    for key, value in text.items():
        if not isinstance(value, str):
            raise ConfigError(expected(key, "a string", value))
    return WeightsEntry(name=name, url=base, sha256=sha256, model=model, **text)


# ------------------------------------------------------------------------------ resolution


def is_url(weights: object) -> bool:
    """Whether ``weights`` is a ``str`` with a URL scheme (``https://...``)."""
    return isinstance(weights, str) and bool(_SCHEME.match(weights))


def is_remote(weights: object) -> bool:
    """Whether ``weights`` names a download (a URL or a registered name), not a path."""
    return is_url(weights) or (isinstance(weights, str) and weights_entry(weights) is not None)


def weights_path(
    weights: str | PathLike[str],
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """The local file behind ``weights`` (a path, an http(s) URL or a registered name).

    URLs and names are downloaded into the cache the first time (see the module docs);
    paths are returned as given (``~`` expanded), without checking that they exist. An
    unknown name raises :class:`~xcsmoe.errors.ConfigError` listing the registered ones.
    """
    if isinstance(weights, PathLike):
        return Path(weights).expanduser()
    if not isinstance(weights, str):
        raise ConfigError(
            expected("weights", "a path, an https URL or a registered name", type(weights).__name__)
        )
    entry = weights_entry(weights)
    if entry is not None:
        return download(entry.url, sha256=entry.sha256, progress=progress, timeout=timeout)
    if is_url(weights):
        url, sha256 = split_url(weights)
        return download(url, sha256=sha256, progress=progress, timeout=timeout)
    path = Path(weights).expanduser()
    if _NAME.match(weights) and weights != RANDOM_WEIGHTS and not path.exists():
        names = list_weights()
        raise ConfigError(
            expected(
                "weights",
                f"a registered name ({', '.join(names) if names else 'none registered yet'}), "
                "an existing file or an https URL",
                weights,
                "Register the name with xcsmoe.register_weights(), or pass the checkpoint's "
                "path or URL.",
            )
        )
    return path
