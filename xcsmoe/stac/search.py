"""Search STAC APIs (pystac-client) and static catalogs (pystac) with one call.

Filters: collections, ``bbox``/``intersects``, ``datetime``, ``query`` (the STAC query
extension, e.g. ``{"eo:cloud_cover": {"lt": 20}}``; ``max_cloud_cover=20`` is short for
that) and ``max_items``. Servers that do not implement the query extension get the same
query applied to the items they return.
"""

from __future__ import annotations

import datetime as dt
import operator
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pystac
import shapely.geometry

from xcsmoe.errors import (
    ConfigError,
    EmptySearchError,
    StacConnectionError,
    UnknownCollectionError,
    expected,
)

__all__ = ["item_matches", "open_static", "search"]

Query = Mapping[str, Mapping[str, Any]]
_PARTIAL = {4: "Y", 7: "M", 10: "D"}  # length of a partial date string -> its period
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "in": lambda value, options: value in options,
}


def search(
    source: str | os.PathLike[str] | pystac.Catalog,
    *,
    collections: str | Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
    intersects: Any = None,
    datetime: Any = None,
    query: Query | None = None,
    max_cloud_cover: float | None = None,
    max_items: int | None = None,
    timeout: float = 10.0,
    modifier: Callable[[Any], Any] | None = None,
) -> pystac.ItemCollection:
    """Items of ``source`` matching every filter given.

    Args:
        source: STAC API URL, provider name (``"planetary-computer"``), path of a static
            catalog (folder or ``catalog.json``), or a :class:`pystac.Catalog`.
        collections: collection id(s) to search; unknown ids raise.
        bbox: ``(west, south, east, north)`` in degrees.
        intersects: GeoJSON geometry (dict or object with ``__geo_interface__``).
        datetime: ``"2020-01-01/2020-02-01"``, one date, a datetime or a (start, end) pair.
        query: STAC query extension mapping.
        max_cloud_cover: keep items with ``eo:cloud_cover <= max_cloud_cover``.
        max_items: stop after this many items.
        timeout: seconds to wait for each API request.
        modifier: pystac-client item modifier, e.g. ``planetary_computer.sign_inplace``.

    Raises:
        StacConnectionError, UnknownCollectionError, EmptySearchError.
    """
    collections = [collections] if isinstance(collections, str) else collections
    query = dict(query or {})
    if max_cloud_cover is not None:
        query["eo:cloud_cover"] = {**query.get("eo:cloud_cover", {}), "lte": max_cloud_cover}
    _check_query(query)
    if max_items is not None and max_items < 1:
        raise ConfigError(expected("max_items", "a positive integer or None", max_items))
    filters = {"bbox": bbox, "intersects": intersects, "datetime": datetime}
    if _is_url(source) or _provider_url(source):
        url = source if _is_url(source) else _provider_url(source)
        found = _search_api(str(url), collections, filters, query, max_items, timeout, modifier)
    else:
        found = _search_static(open_static(source), collections, filters, query, max_items)
    items = list(found)
    if not items:
        described = {k: v for k, v in {"collections": collections, **filters}.items() if v}
        raise EmptySearchError(
            expected(
                "search",
                "at least one matching item",
                f"none for {described}" + (f" with query {query}" if query else ""),
                "Widen bbox/datetime or relax the query.",
            )
        )
    return pystac.ItemCollection(items)


# ---------------------------------------------------------------------- sources


def _is_url(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _provider_url(source: Any) -> str | None:
    if not isinstance(source, str) or "/" in source or source.endswith(".json"):
        return None
    from xcsmoe.stac.providers import list_providers, provider_config

    if source not in list_providers():
        return None
    url = provider_config(source).url
    if not url:
        return None
    return url


def open_static(source: str | os.PathLike[str] | pystac.Catalog) -> pystac.Catalog:
    if isinstance(source, pystac.Catalog):
        return source
    path = Path(source)
    if path.is_dir():
        path = (
            path / "catalog.json" if (path / "catalog.json").is_file() else path / "collection.json"
        )
    if not path.is_file():
        raise ConfigError(
            expected("source", "a STAC API URL, provider name, catalog path or pystac.Catalog",
                     str(source))
        )  # fmt: skip
    return pystac.read_file(str(path))


# ------------------------------------------------------------------------ static


def _search_static(
    catalog: pystac.Catalog,
    collections: Sequence[str] | None,
    filters: dict[str, Any],
    query: Query,
    max_items: int | None,
) -> Iterator[pystac.Item]:
    if collections:
        known = {c.id for c in catalog.get_all_collections()}
        if isinstance(catalog, pystac.Collection):
            known.add(catalog.id)
        _check_collections(collections, known)
    matches = 0
    for item in catalog.get_items(recursive=True):
        if collections and item.collection_id not in collections:
            continue
        if not item_matches(item, **filters, query=query):
            continue
        yield item
        matches += 1
        if max_items is not None and matches >= max_items:
            return


def item_matches(
    item: pystac.Item,
    *,
    bbox: Sequence[float] | None = None,
    intersects: Any = None,
    datetime: Any = None,
    query: Query | None = None,
) -> bool:
    """Whether ``item`` passes the spatial, temporal and property filters."""
    if bbox is not None or intersects is not None:
        if item.geometry is None:
            return False
        footprint = shapely.geometry.shape(item.geometry)
        if bbox is not None and not footprint.intersects(shapely.geometry.box(*bbox)):
            return False
        if intersects is not None and not footprint.intersects(_shape(intersects)):
            return False
    if datetime is not None and not _in_time(item, *_time_range(datetime)):
        return False
    for prop, ops in (query or {}).items():
        value = item.properties.get(prop)
        if value is None or not all(_OPS[op](value, arg) for op, arg in ops.items()):
            return False
    return True


def _shape(geometry: Any) -> Any:
    if hasattr(geometry, "__geo_interface__"):
        geometry = geometry.__geo_interface__
    try:
        return shapely.geometry.shape(geometry)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(expected("intersects", "a GeoJSON geometry", geometry)) from error


def _timestamp(value: Any, *, end: bool) -> pd.Timestamp | None:
    if value in (None, "", ".."):
        return None
    freq = _PARTIAL.get(len(value)) if isinstance(value, str) and value[:4].isdigit() else None
    # "2017", "2017-06", "2017-06-13" as an end: through the end of that period
    stamp = pd.Period(value, freq=freq).end_time if end and freq else pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _time_range(value: Any) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    try:
        if isinstance(value, str):
            start, _, stop = value.partition("/")
            return _timestamp(start, end=False), _timestamp(stop if _ else start, end=True)
        if isinstance(value, (dt.datetime, dt.date, pd.Timestamp)):
            return _timestamp(value, end=False), _timestamp(value, end=True)
        start, stop = value
        return _timestamp(start, end=False), _timestamp(stop, end=True)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            expected("datetime", "'start/end', one date or a (start, end) pair", value)
        ) from error


def _in_time(item: pystac.Item, start: pd.Timestamp | None, stop: pd.Timestamp | None) -> bool:
    props = item.properties
    first = item.datetime or props.get("start_datetime")
    last = item.datetime or props.get("end_datetime")
    if first is None or last is None:
        return False
    first, last = _timestamp(first, end=False), _timestamp(last, end=False)
    return (stop is None or first <= stop) and (start is None or last >= start)


def _check_query(query: Query) -> None:
    for prop, ops in query.items():
        bad = [op for op in ops] if not isinstance(ops, Mapping) else set(ops) - set(_OPS)
        if bad:
            raise ConfigError(
                expected(f"query[{prop!r}]", f"a mapping of operators {sorted(_OPS)}", ops)
            )


def _check_collections(wanted: Iterable[str], known: set[str]) -> None:
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise UnknownCollectionError(expected("collections", f"ids among {sorted(known)}", unknown))


# --------------------------------------------------------------------------- API


def _search_api(
    url: str,
    collections: Sequence[str] | None,
    filters: dict[str, Any],
    query: Query,
    max_items: int | None,
    timeout: float,
    modifier: Callable[[Any], Any] | None,
) -> Iterator[pystac.Item]:
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    # Retry throttling and gateway errors only: a silent or refused endpoint fails fast.
    retry = Retry(total=3, connect=0, read=0, backoff_factor=0.5,
                  status_forcelist=(429, 502, 503, 504))  # fmt: skip
    with _connection_errors(url, timeout):
        io = StacApiIO(timeout=timeout, max_retries=retry)
        client = Client.open(url, timeout=timeout, modifier=modifier, stac_io=io)
        if collections:
            _check_collections(collections, {c.id for c in client.get_collections()})
        server_query = bool(query) and client.conforms_to(ConformanceClasses.QUERY)
        found = client.search(
            collections=collections,
            bbox=filters["bbox"],
            intersects=filters["intersects"],
            datetime=filters["datetime"],
            query=query if server_query else None,
            max_items=max_items if (server_query or not query) else None,
        )
        items = list(found.items())
    matches = 0
    for item in items:
        if query and not server_query and not item_matches(item, query=query):
            continue
        yield item
        matches += 1
        if max_items is not None and matches >= max_items:
            return


class _connection_errors:
    """Turn network failures of pystac-client/requests into StacConnectionError."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url, timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        if error is None or isinstance(error, (UnknownCollectionError, ConfigError)):
            return False
        import requests
        from pystac_client.exceptions import APIError

        if isinstance(error, (requests.RequestException, APIError, OSError)):
            raise StacConnectionError(
                expected(
                    "source",
                    f"a STAC API answering at {self.url} within {self.timeout} s",
                    f"{type(error).__name__}: {error}"[:300],
                    "Check the URL and network, or raise timeout=.",
                )
            ) from error
        return False
