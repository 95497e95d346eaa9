"""The one exception hierarchy of xcsmoe.

Every error raised on bad user input derives from :class:`XcsmoeError` and, where apt,
from the builtin a caller would expect (``ValueError``, ``KeyError``, ``LookupError``,
``ConnectionError``), so ``except ValueError`` keeps working.

Messages follow one pattern: name the argument, say what was expected, say what was got,
and say how to fix it. :func:`expected` builds that sentence.
"""

from __future__ import annotations

__all__ = [
    "CRSError",
    "CheckpointError",
    "ConfigError",
    "DownloadError",
    "EmptySearchError",
    "GridError",
    "InputError",
    "MissingBandError",
    "SamplingError",
    "StacConnectionError",
    "StacError",
    "StorageError",
    "UnknownCollectionError",
    "WeightsRequiredError",
    "XcsmoeError",
    "expected",
]


def expected(argument: str, wanted: str, got: object, fix: str | None = None) -> str:
    """One-line error message: ``argument: expected <wanted>, got <got>. <fix>``."""
    message = f"{argument}: expected {wanted}, got {got!r}."
    return f"{message} {fix}" if fix else message


class XcsmoeError(Exception):
    """Base class of every error xcsmoe raises on purpose."""


class ConfigError(XcsmoeError, ValueError):
    """Unknown model/provider name, bad override, inconsistent configuration."""


class InputError(XcsmoeError, ValueError):
    """Data handed to a function does not have the shape, dtype or values it needs."""


class MissingBandError(XcsmoeError, KeyError):
    """A band/variable the sensor spec requires is absent from an item or a dataset."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class CRSError(InputError):
    """Missing, geographic where projected is needed, or mixed coordinate reference systems."""


class GridError(InputError):
    """Grids that do not fit: no overlap, bbox outside all items, chunks vs. windows."""


class CheckpointError(XcsmoeError, ValueError):
    """A checkpoint that cannot be read or does not match the model."""


class WeightsRequiredError(XcsmoeError, ValueError):
    """Inference asked for without weights (and without an explicit random init)."""


class DownloadError(XcsmoeError, ConnectionError):
    """Weights that could not be downloaded intact: host unreachable, HTTP error, body
    shorter than announced, or a sha256 other than the expected one."""


class StorageError(XcsmoeError, ConnectionError):
    """A store location that cannot be used: a bucket that does not exist, refused
    credentials, or an object-store endpoint that does not answer."""


class StacError(XcsmoeError):
    """Base class of STAC search/catalog errors."""


class StacConnectionError(StacError, ConnectionError):
    """A STAC API that does not answer (refused, timed out, not a STAC API)."""


class UnknownCollectionError(StacError, KeyError):
    """A collection id the catalog or provider configuration does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EmptySearchError(StacError, LookupError):
    """A search that matched no item."""


class SamplingError(XcsmoeError, ValueError):
    """Bad archive, raster or target for descriptor-driven sampling."""
