"""STAC items to a lazy, co-registered Sentinel-1/Sentinel-2 cube with odc-stac.

Layering: :func:`xcsmoe.stac.plan.plan_cube` parses and checks metadata, then this
module turns the plan into dask graphs (one ``odc.stac.load`` per sensor) and assembles
the cube. No pixel is read until the cube is computed.

Cube layout (the contract with the embedding code):

* dims ``(time, y, x)``, float32, NaN where there is no data; variables ``B02 B03 B04
  B08 B05 B06 B07 B11 B12 B8A`` (S2, CSMAE order, L2A DN) then ``vv vh`` (S1, linear
  power); a projected CRS and ``ds.odc.geobox``.
* ``time`` is the S2 time steps (S1's when there is no S2). Each S2 step takes the
  nearest S1 step within ``s1_tolerance``; the coordinate ``s1_time`` (on ``time``)
  records which, ``NaT`` (and NaN ``vv``/``vh``) where none is close enough. S1 steps
  left out are reported with a warning.
* coordinate ``s2_offset`` (on ``time``): DN offset of each step's processing baseline
  (-1000 from baseline 04.00, else 0), applied by :func:`xcsmoe.normalise`.
* attribute ``s2_processing_level`` (``"L2A"``, ``"L1C"``, or e.g. ``"L1C+L2A"`` when
  mixed) where the items say (:func:`xcsmoe.sensors.item_processing_level`); embedding
  warns when it is not the level of the normalisation statistics.
* S2 20 m bands are resampled to the grid with ``resampling``: nearest neighbour by
  default, as the CSMoE paper does for its 20 m bands; bands already on
  the grid are copied exactly, whatever the method.

Assets in buckets (``s3://`` hrefs, or ``https://`` hrefs of a bucket) are read in place
by GDAL. How to reach the bucket (endpoint, region, requester pays, unsigned) comes from
the provider's ``access`` settings (:class:`~xcsmoe.stac.providers.BucketAccess`),
overridable per call with ``access=``. The settings travel inside the dask graph
(odc-stac's reader captures them on the client and restores them around every read on
the workers), so no process-wide GDAL state is changed and a cluster needs no setup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.loader import RioDriver
from odc.stac import load as odc_load

from xcsmoe.errors import ConfigError, GridError, expected
from xcsmoe.sensors import SENSORS, item_processing_level
from xcsmoe.stac.plan import CubePlan, GroupKey, SensorPlan, plan_cube
from xcsmoe.stac.providers import BucketAccess, ProviderConfig

__all__ = ["DEFAULT_CHUNKS", "load_cube"]

DEFAULT_CHUNKS: Mapping[str, int] = {"time": 1, "y": 2048, "x": 2048}


def load_cube(
    s2_items: Iterable[pystac.Item] | None = None,
    s1_items: Iterable[pystac.Item] | None = None,
    *,
    bbox: Sequence[float] | None = None,
    geobox: GeoBox | None = None,
    resolution: float = 10,
    crs: Any = None,
    chunks: Mapping[str, int] | int | None = None,
    groupby: str | GroupKey = "solar_day",
    bands: Sequence[str] | None = None,
    resampling: str | Mapping[str, str] = "nearest",
    s1_tolerance: str | pd.Timedelta = "3D",
    provider: str | ProviderConfig | None = None,
    pool: int | ThreadPoolExecutor | None = None,
    patch_url: Callable[[str], str] | None = None,
    fail_on_error: bool = True,
    access: BucketAccess | Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Load Sentinel-2 and/or Sentinel-1 STAC items into one lazy cube on one grid.

    Args:
        s2_items, s1_items: items of each sensor; either may be empty or None. A single
            mixed list in ``s2_items`` is split by collection.
        bbox: ``(west, south, east, north)`` in degrees; default: the items' extent.
        geobox: exact output grid (wins over ``bbox``/``resolution``/``crs``).
        resolution: pixel size in CRS units (metres).
        crs: output CRS; required when items span several CRSs (``"utm"`` works).
        chunks: dask chunks, e.g. ``{"x": 112, "y": 112}``; ``-1`` (or ``-1`` per dim)
            for a single chunk. Default :data:`DEFAULT_CHUNKS`.
        groupby: ``"solar_day"``, ``"time"``, ``"id"`` or an odc-stac group callable.
        bands: subset of cube bands (default: all bands of the sensors given).
        resampling: method for bands not on the grid (or a per-band mapping).
        s1_tolerance: largest S2-S1 time gap for pairing (a pandas Timedelta string).
        provider: provider name/YAML path/config; default: found from each collection.
        pool, patch_url, fail_on_error: passed to ``odc.stac.load``.
        access: bucket settings that override the provider's ``access`` for this call,
            e.g. ``{"endpoint": "http://127.0.0.1:9000", "unsigned": True}`` or
            ``{"requester_pays": True, "region": "eu-central-1"}``.
    """
    if access is not None:
        BucketAccess.parse(access)  # checked before anything is planned or read
    plan = plan_cube(
        s2_items, s1_items, bands=bands, bbox=bbox, geobox=geobox, resolution=resolution,
        crs=crs, groupby=groupby, s1_tolerance=s1_tolerance, provider=provider,
    )  # fmt: skip
    odc_kw = {"pool": pool, "patch_url": patch_url, "fail_on_error": fail_on_error}
    sizes = _chunks(chunks, plan.geobox)
    s2 = _load_sensor(plan, plan.s2, sizes, resampling, odc_kw, access) if plan.s2 else None
    s1 = _load_sensor(plan, plan.s1, sizes, resampling, odc_kw, access) if plan.s1 else None
    return _assemble(plan, s2, s1, s1_tolerance)


def _chunks(chunks: Mapping[str, int] | int | None, gbox: GeoBox) -> dict[str, int]:
    if chunks is None:
        chunks = DEFAULT_CHUNKS
    elif isinstance(chunks, int) and not isinstance(chunks, bool):
        chunks = {"y": chunks, "x": chunks}
    if not isinstance(chunks, Mapping) or set(chunks) - {"time", "y", "x"}:
        raise ConfigError(expected("chunks", "a mapping over time/y/x or an int", chunks))
    full = {"y": gbox.shape.y, "x": gbox.shape.x}
    out = {"time": 1, **{k: int(v) for k, v in DEFAULT_CHUNKS.items() if k != "time"}}
    for dim, size in chunks.items():
        if not isinstance(size, int) or (size < 1 and size != -1):
            raise ConfigError(expected(f"chunks[{dim!r}]", "a positive int or -1", size))
        out[dim] = size
    for dim in ("y", "x"):
        out[dim] = full[dim] if out[dim] == -1 else min(out[dim], full[dim])
    return out


def _load_sensor(
    plan: CubePlan,
    sensor: SensorPlan,
    chunks: dict[str, int],
    resampling: str | Mapping[str, str],
    odc_kw: dict[str, Any],
    access: BucketAccess | Mapping[str, Any] | None = None,
) -> xr.Dataset:
    time_chunk = chunks["time"]
    bucket = sensor.config.access.updated(access)
    if bucket.configured:
        odc_kw = {**odc_kw, "driver": BucketReader(bucket)}
    ds = odc_load(
        sensor.items,
        bands=list(sensor.bands),
        geobox=plan.geobox,
        groupby=plan.groupby,
        chunks={"y": chunks["y"], "x": chunks["x"]},
        resampling=_resampling(resampling, sensor.bands),
        stac_cfg=sensor.stac_cfg,
        **odc_kw,
    )
    if ds.sizes["time"] != len(sensor.groups):  # the plan and odc-stac must agree
        raise GridError(
            expected(f"{sensor.sensor} time steps", len(sensor.groups), ds.sizes["time"])
        )
    if time_chunk != 1:
        ds = ds.chunk({"time": time_chunk if time_chunk > 0 else -1})
    ds = _as_float32(ds, sensor)
    ds.attrs[f"{sensor.sensor}_collection"] = f"{sensor.config.provider}/{sensor.config.id}"
    return ds


class BucketReader(RioDriver):
    """odc-stac's rasterio reader with a provider's bucket settings: the GDAL options
    and AWS session arguments join the environment odc-stac captures into the graph."""

    def __init__(self, access: BucketAccess) -> None:
        super().__init__()
        self.access = access

    def capture_env(self) -> dict[str, Any]:
        env = {**super().capture_env(), **self.access.gdal_options()}
        env["_aws"] = self.access.aws_session()
        return env


def _as_float32(ds: xr.Dataset, sensor: SensorPlan) -> xr.Dataset:
    """Storage dtype to float32 in one fused pass per block: nodata to NaN, dB to linear.

    Loading in the storage dtype and converting here is faster than asking odc-stac for
    float32 and masking afterwards, and it masks pixels that odc-stac copies verbatim
    (same grid) as well as those it resamples.
    """
    spec = SENSORS[sensor.sensor]
    to_linear = sensor.sensor == "s1" and sensor.config.units == "dB"
    converted = {}
    for name in sensor.bands:
        asset = sensor.config.assets.get(sensor.config.asset_key(name), {})
        nodata = asset.get("nodata", spec.nodata)
        var = ds.variables[name]
        data = var.data.map_blocks(
            _block_to_float32, nodata=nodata, to_linear=to_linear, dtype=np.float32
        )
        attrs = {**var.attrs, "units": spec.units, "nodata": np.nan}
        converted[name] = xr.Variable(var.dims, data, attrs)
    ds = ds.assign(converted)  # one assignment: no re-alignment per band
    return ds


def _block_to_float32(block: np.ndarray, *, nodata: Any, to_linear: bool) -> np.ndarray:
    out = block.astype(np.float32)
    if nodata is not None and not np.isnan(float(nodata)):
        np.copyto(out, np.float32(np.nan), where=block == nodata)
    if to_linear:
        np.power(np.float32(10.0), out / np.float32(10.0), out=out)
    return out


def _resampling(resampling: str | Mapping[str, str], bands: tuple[str, ...]) -> dict[str, str]:
    if isinstance(resampling, str):
        return dict.fromkeys(bands, resampling)
    return {b: resampling.get(b, resampling.get("*", "nearest")) for b in bands}


def _assemble(
    plan: CubePlan,
    s2: xr.Dataset | None,
    s1: xr.Dataset | None,
    s1_tolerance: str | pd.Timedelta,
) -> xr.Dataset:
    attrs: dict[str, Any] = {}
    if s2 is not None:
        s2 = s2.assign_coords(s2_offset=("time", plan.s2_offsets))
        s2.s2_offset.attrs.update(
            units="DN", description="add to S2 values before scaling (processing baseline)"
        )
        attrs.update(s2.attrs)
        levels = {item_processing_level(i.properties, i.collection_id) for i in plan.s2.items}
        if levels - {None}:
            attrs["s2_processing_level"] = "+".join(sorted(levels - {None}))
    if s1 is not None and s2 is not None:
        s1 = _pair_s1(s1, s2, plan.s1_index)
        attrs.update(s1.attrs, s1_matching=f"nearest S1 step within {pd.Timedelta(s1_tolerance)}")
    elif s1 is not None:
        s1 = s1.assign_coords(s1_time=("time", s1.time.values))
        attrs.update(s1.attrs)
    parts = [p for p in (s2, s1) if p is not None]
    cube = parts[0] if len(parts) == 1 else xr.merge(parts, join="exact", compat="override")
    cube.attrs = attrs
    return cube


def _pair_s1(s1: xr.Dataset, s2: xr.Dataset, index: np.ndarray) -> xr.Dataset:
    """S1 steps placed on the S2 time axis (NaN where unmatched)."""
    matched = index >= 0
    picked = s1.isel(time=np.where(matched, index, 0))
    s1_time = np.where(matched, s1.time.values[np.where(matched, index, 0)], np.datetime64("NaT"))
    picked = picked.assign_coords(time=s2.time.values)
    if not matched.all():
        picked = picked.where(xr.DataArray(matched, dims="time", coords={"time": s2.time.values}))
    picked = picked.drop_vars("spatial_ref", errors="ignore").assign_coords(
        s1_time=("time", s1_time.astype(s2.time.dtype))
    )
    return picked.astype(np.float32)
