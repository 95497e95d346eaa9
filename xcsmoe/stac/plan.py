"""Parse and plan a cube load: pure functions on STAC metadata, no pixels read.

``plan_cube`` sorts items into sensors, checks bands and grids, fixes the output
geobox, groups items into time steps and matches Sentinel-1 time steps to Sentinel-2
ones. :mod:`xcsmoe.stac.load` executes the plan with odc-stac.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pystac
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, box, unary_union
from odc.stac import ParsedItem, output_geobox, parse_items

from xcsmoe.errors import ConfigError, CRSError, GridError, MissingBandError, expected
from xcsmoe.sensors import S1, S2, SENSORS, s2_offset
from xcsmoe.stac.providers import CollectionConfig, ProviderConfig, collection_config

__all__ = ["CubePlan", "SensorPlan", "match_times", "plan_cube"]

GroupKey = Callable[[pystac.Item, ParsedItem, int], Any]


@dataclass(frozen=True)
class SensorPlan:
    """Items of one sensor, their configuration and their time grouping."""

    sensor: str
    bands: tuple[str, ...]
    items: list[pystac.Item]
    parsed: list[ParsedItem] = field(repr=False)
    config: CollectionConfig
    stac_cfg: dict[str, Any] = field(repr=False)
    groups: list[list[int]] = field(repr=False)  # item indices per time step, odc order

    @property
    def times(self) -> np.ndarray:
        """Time of each step: the first item's datetime (odc-stac's convention)."""
        first = [self.parsed[g[0]].nominal_datetime.replace(tzinfo=None) for g in self.groups]
        return np.array(first, dtype="datetime64[ns]")


@dataclass(frozen=True)
class CubePlan:
    """Everything needed to load a cube: grid, per-sensor items, S1-to-S2 time match."""

    geobox: GeoBox
    groupby: GroupKey = field(repr=False)
    s2: SensorPlan | None
    s1: SensorPlan | None
    s1_index: np.ndarray | None = None  # per output time step: S1 step or -1
    s2_offsets: np.ndarray | None = None


def plan_cube(
    s2_items: Iterable[pystac.Item] | None,
    s1_items: Iterable[pystac.Item] | None,
    *,
    bands: Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
    geobox: GeoBox | None = None,
    resolution: float = 10,
    crs: Any = None,
    groupby: str | GroupKey = "solar_day",
    s1_tolerance: str | pd.Timedelta = "3D",
    provider: str | ProviderConfig | None = None,
) -> CubePlan:
    """Plan a cube load; raises on bad inputs before any pixel is read."""
    by_sensor = _split_items([*(s2_items or []), *(s1_items or [])], provider)
    wanted = _wanted_bands(bands, by_sensor)
    if not wanted:
        raise ConfigError(
            expected("s2_items/s1_items", "at least one Sentinel-1 or Sentinel-2 item", 0)
        )
    configs = {s: _configure(s, by_sensor[s], wanted[s], provider) for s in wanted}
    parsed = {s: list(parse_items(by_sensor[s], cfg=configs[s][1])) for s in wanted}
    grid_sensor = "s2" if "s2" in wanted else "s1"
    gbox = _plan_geobox(
        parsed[grid_sensor], wanted[grid_sensor], bbox=bbox, geobox=geobox,
        resolution=resolution, crs=crs,
    )  # fmt: skip
    key = _group_key(groupby, gbox)
    plans: dict[str, SensorPlan] = {}
    for sensor in wanted:
        keep = _overlapping(parsed[sensor], gbox, wanted[sensor])
        if not keep:
            other = " the Sentinel-2 grid" if sensor != grid_sensor else " the requested area"
            raise GridError(
                expected(
                    f"{sensor}_items",
                    f"items that overlap{other} {_bounds(gbox)}",
                    f"{len(parsed[sensor])} items, none overlapping",
                    "Search both sensors over the same area, or widen bbox.",
                )
            )
        items = [by_sensor[sensor][i] for i in keep]
        kept = [parsed[sensor][i] for i in keep]
        config, cfg = configs[sensor]
        groups = _group(items, kept, key)
        plans[sensor] = SensorPlan(sensor, wanted[sensor], items, kept, config, cfg, groups)
    s2, s1 = plans.get("s2"), plans.get("s1")
    s1_index = match_times(s2.times, s1.times, s1_tolerance) if s2 and s1 else None
    offsets = None
    if s2 is not None:
        offsets = np.array([_group_offset(s2, g) for g in s2.groups], dtype=np.float32)
    return CubePlan(gbox, key, s2, s1, s1_index, offsets)


# ------------------------------------------------------------------------- items


def _split_items(
    items: list[pystac.Item], provider: str | ProviderConfig | None
) -> dict[str, list[pystac.Item]]:
    out: dict[str, list[pystac.Item]] = {"s2": [], "s1": []}
    for item in items:
        if not isinstance(item, pystac.Item):
            raise ConfigError(expected("items", "pystac.Item objects", type(item).__name__))
        out[_item_config(item, (), provider).sensor].append(item)
    return out


def _item_config(
    item: pystac.Item, bands: tuple[str, ...] | None, provider: str | ProviderConfig | None
) -> CollectionConfig:
    try:
        return collection_config(item.collection_id, set(item.assets), bands=bands,
                                 provider=provider)  # fmt: skip
    except MissingBandError as error:
        raise MissingBandError(f"item {item.id!r}: {error}") from None
    except KeyError:
        if provider is not None:
            raise
    config = _generic_config(item)
    missing = config.missing_bands(set(item.assets), bands or ())
    if missing:
        raise MissingBandError(
            expected(
                f"assets of item {item.id!r} (collection {item.collection_id!r})",
                f"assets named like the bands {list(bands or ())}",
                sorted(item.assets),
                f"Missing: {missing}. Pass provider=<YAML> mapping its asset keys.",
            )
        )
    return config


def _generic_config(item: pystac.Item) -> CollectionConfig:
    """Configuration for an item of an unconfigured collection: assets named as bands."""
    props = item.properties
    is_s1 = any(k.startswith("sar:") for k in props) or "vv" in {a.lower() for a in item.assets}
    spec = S1 if is_s1 else S2
    aliases = {b: key for b in spec.bands for key in item.assets if key.lower() == b.lower()}
    storage = {"data_type": spec.dtype, "nodata": spec.nodata}
    assets = {aliases.get(b, b): storage for b in spec.bands}
    units = "DN"
    if is_s1:  # raster:bands "unit" says whether backscatter is stored in dB
        raster = [b for a in item.assets.values() for b in a.extra_fields.get("raster:bands", [])]
        units = "dB" if any(str(b.get("unit", "")).lower() == "db" for b in raster) else "linear"
    return CollectionConfig(
        id=str(item.collection_id), sensor=spec.name, units=units,
        scale=spec.scale, assets=assets, aliases=aliases, provider="generic",
    )  # fmt: skip


def _wanted_bands(
    bands: Sequence[str] | None, by_sensor: dict[str, list[pystac.Item]]
) -> dict[str, tuple[str, ...]]:
    present = [s for s in ("s2", "s1") if by_sensor[s]]
    if bands is None:
        return {s: SENSORS[s].bands for s in present}
    if isinstance(bands, str):
        bands = [bands]
    wanted: dict[str, tuple[str, ...]] = {}
    for sensor in present:
        spec = SENSORS[sensor]
        chosen = tuple(b for b in spec.bands if b.lower() in {x.lower() for x in bands})
        if chosen:
            wanted[sensor] = chosen
    known = {b.lower() for s in present for b in SENSORS[s].bands}
    unknown = [b for b in bands if b.lower() not in known]
    if unknown:
        raise MissingBandError(
            expected("bands", f"bands of the given sensors {sorted(known)}", unknown)
        )
    return wanted


def _configure(
    sensor: str,
    items: list[pystac.Item],
    bands: tuple[str, ...],
    provider: str | ProviderConfig | None,
) -> tuple[CollectionConfig, dict[str, Any]]:
    configs = [_item_config(item, bands, provider) for item in items]
    stac_cfg: dict[str, Any] = {}
    for config in configs:
        config.check_usable()
        entry = config.stac_cfg()
        if stac_cfg.setdefault(config.id, entry) != entry:
            raise ConfigError(
                expected(
                    f"{sensor} items",
                    "one provider per collection id",
                    f"{config.id!r} from {sorted({c.provider for c in configs})}",
                    "Load items of each provider separately.",
                )
            )
    units = {c.units for c in configs}
    if len(units) > 1:
        raise ConfigError(
            expected(f"{sensor} items", "one storage unit", sorted(units),
                     "Load collections with different units separately.")
        )  # fmt: skip
    return configs[0], stac_cfg


# -------------------------------------------------------------------------- grid


def _plan_geobox(
    parsed: list[ParsedItem],
    bands: tuple[str, ...],
    *,
    bbox: Sequence[float] | None,
    geobox: GeoBox | None,
    resolution: float,
    crs: Any,
) -> GeoBox:
    if geobox is not None:
        if not isinstance(geobox, GeoBox):
            raise GridError(expected("geobox", "an odc.geo GeoBox", type(geobox).__name__))
        _check_projected(geobox.crs, "geobox.crs")
        return geobox
    if crs is None:
        found = {str(c) for p in parsed if (c := p.crs(list(bands))) is not None}
        if len(found) > 1:
            raise CRSError(
                expected(
                    "crs",
                    "one CRS across items, or crs= set",
                    f"items in {sorted(found)}",
                    "Pass crs='EPSG:...' (or crs='utm') to load them onto one grid.",
                )
            )
    if bbox is not None:
        _check_bbox(bbox, parsed, bands)
    gbox = output_geobox(
        parsed, list(bands), crs=crs, resolution=resolution,
        bbox=tuple(bbox) if bbox is not None else None,
    )  # fmt: skip
    if gbox is None:
        raise GridError(expected("items", "proj metadata or crs= and resolution=", "neither"))
    _check_projected(gbox.crs, "crs")
    return gbox


def _check_projected(crs: Any, argument: str) -> None:
    if crs is None or getattr(crs, "geographic", False):
        raise CRSError(
            expected(
                argument, "a projected CRS (metres)", str(crs), "Use crs='utm' or 'EPSG:326xx'."
            )
        )


def _check_bbox(bbox: Sequence[float], parsed: list[ParsedItem], bands: tuple[str, ...]) -> None:
    if len(bbox) != 4 or not bbox[0] < bbox[2] or not bbox[1] < bbox[3]:
        raise GridError(expected("bbox", "(west, south, east, north) in degrees", tuple(bbox)))
    area = box(*bbox, "EPSG:4326")
    shapes = [g for p in parsed if (g := p.safe_geometry("EPSG:4326", bands=list(bands)))]
    footprint = unary_union(shapes) if shapes else None
    if footprint is None or not footprint.intersects(area):
        extent = tuple(round(v, 4) for v in footprint.boundingbox) if footprint else None
        raise GridError(
            expected("bbox", f"an area overlapping the items (extent {extent})", tuple(bbox),
                     "Pick items that cover bbox, or move bbox onto them.")
        )  # fmt: skip


def _overlapping(parsed: list[ParsedItem], gbox: GeoBox, bands: tuple[str, ...]) -> list[int]:
    extent: Geometry = gbox.extent
    keep = []
    for i, p in enumerate(parsed):
        geom = p.safe_geometry(gbox.crs, bands=list(bands))
        if geom is None or geom.intersection(extent).area > 0:
            keep.append(i)
    return keep


def _bounds(gbox: GeoBox) -> str:
    return f"{tuple(round(v) for v in gbox.boundingbox)} in {gbox.crs}"


# -------------------------------------------------------------------------- time


def _group_key(groupby: str | GroupKey, gbox: GeoBox) -> GroupKey:
    if callable(groupby):
        return groupby
    if groupby == "solar_day":
        ((lon, _),) = gbox.extent.centroid.to_crs("EPSG:4326").points
        return lambda item, parsed, idx: parsed.solar_date_at(lon).date()
    if groupby == "time":
        return lambda item, parsed, idx: parsed.nominal_datetime
    if groupby == "id":
        return lambda item, parsed, idx: item.id
    raise ConfigError(expected("groupby", "'solar_day', 'time', 'id' or a callable", groupby))


def _group(items: list[pystac.Item], parsed: list[ParsedItem], key: GroupKey) -> list[list[int]]:
    """Item indices per time step, in odc-stac's order (by key, then time, then id)."""
    keys = [key(item, p, i) for i, (item, p) in enumerate(zip(items, parsed, strict=True))]
    order = sorted(
        range(len(items)), key=lambda i: (keys[i], parsed[i].nominal_datetime, items[i].id)
    )
    groups: list[list[int]] = []
    for i in order:
        if groups and keys[groups[-1][0]] == keys[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _group_offset(plan: SensorPlan, group: list[int]) -> float:
    offsets = {s2_offset(plan.items[i].properties) for i in group}
    if len(offsets) > 1:
        ids = [plan.items[i].id for i in group]
        raise ConfigError(
            expected("s2_items", "one processing-baseline offset per time step", f"{offsets} in {ids}",
                     "Load with groupby='time' or 'id' to keep them apart.")
        )  # fmt: skip
    return offsets.pop()


def match_times(
    s2_times: np.ndarray, s1_times: np.ndarray, tolerance: str | pd.Timedelta
) -> np.ndarray:
    """Index of the nearest S1 time step within ``tolerance`` per S2 step, else -1.

    S1 steps matched to no S2 step are reported with a warning (they are not loaded).
    """
    tol = pd.Timedelta(tolerance)
    s2 = np.asarray(s2_times, dtype="datetime64[ns]")
    s1 = np.asarray(s1_times, dtype="datetime64[ns]")
    gaps = np.abs(s2[:, None] - s1[None, :])
    index = np.argmin(gaps, axis=1)
    index = np.where(gaps[np.arange(len(s2)), index] <= tol.to_timedelta64(), index, -1)
    unused = sorted(set(range(len(s1))) - set(index.tolist()))
    if unused:
        dates = [str(np.datetime_as_string(s1[i], unit="s")) for i in unused]
        warnings.warn(
            f"s1_items: {len(unused)} Sentinel-1 time step(s) {dates} are more than "
            f"{tol} from every Sentinel-2 step (or not the nearest) and are not in the cube. "
            "Raise s1_tolerance, or load them as an S1-only cube.",
            UserWarning,
            stacklevel=3,
        )
    return index
