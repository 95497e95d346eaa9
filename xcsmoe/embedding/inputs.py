"""What the cube says about itself, checked before embedding, so no result is silently wrong.

* orientation: a south-up (ascending ``y``) or east-to-west (descending ``x``) cube is
  flipped to north-up first (:func:`north_up`), so windows, tokens and ``cls`` lie on
  north-up grids and equal those of the north-up cube; rotated grids are refused;
* nodata: values equal to a variable's nodata (``nodata``/``_FillValue`` attributes or
  encoding, as rioxarray and odc-stac write them; for integer bands without any, the
  sensor's storage nodata, e.g. 0 for Sentinel-2 DN) become NaN (:func:`mask_nodata`);
* S1/S2 pairing: a time step whose ``s1_time`` is ``NaT`` has no S1 (:func:`pair_sensors`);
* processing level: normalisation statistics are Level-2A ones (:func:`check_processing_level`);
* all-NaN / infinite input in memory warns (:func:`check_finite`); lazy cubes are checked
  block by block as they run (see :mod:`xcsmoe.embedding.execute`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from xcsmoe.errors import CRSError, expected
from xcsmoe.sensors import NORMALISATION_LEVEL, SENSORS, item_processing_level, sensor_of


def north_up(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with ``y`` descending and ``x`` ascending (a north-up geobox); rotated or
    sheared grids raise :class:`~xcsmoe.errors.CRSError`."""
    try:
        dims = ds.odc.spatial_dims
        affine = getattr(ds.odc.geobox, "affine", None) if dims is not None else None
    except Exception:  # malformed coordinates: reported by the georeferencing check
        return ds
    if dims is None or affine is None:
        return ds
    if affine.b or affine.d:
        raise CRSError(
            expected(
                "ds",
                "an axis-aligned grid (no rotation or shear)",
                f"transform {tuple(affine)[:6]}",
                "Reproject it onto a north-up grid with ds.odc.reproject(...).",
            )
        )
    y_dim, x_dim = dims
    flips = {}
    if affine.e > 0:
        flips[y_dim] = slice(None, None, -1)
    if affine.a < 0:
        flips[x_dim] = slice(None, None, -1)
    return ds.isel(flips) if flips else ds


def nodata_values(var: xr.DataArray) -> tuple[float, ...]:
    """Values of ``var`` that mean 'no data' (NaN is always missing, so not listed)."""
    found: list[Any] = [var.attrs.get("nodata"), var.attrs.get("_FillValue")]
    encoding = var.encoding
    if "scale_factor" not in encoding and "add_offset" not in encoding:
        found += [encoding.get("_FillValue"), encoding.get("nodata")]
    values = {float(v) for v in found if _is_number(v) and not np.isnan(float(v))}
    if not values and var.dtype.kind in "iu" and var.name in _KNOWN_BANDS:
        storage = sensor_of(str(var.name)).nodata
        if not np.isnan(storage):
            values.add(float(storage))
    return tuple(sorted(values))


def mask_nodata(ds: xr.Dataset, variables: Sequence[str]) -> xr.Dataset:
    """``ds[variables]`` as float32 with NaN where a variable holds its nodata value."""
    out = {}
    for name in variables:
        var = ds[name]
        nodata = nodata_values(var)
        values = var.astype(np.float32)
        if nodata:
            values = values.where(~var.isin(list(nodata)))
        out[name] = values.astype(np.float32)
    return ds.assign(out)[list(variables)]


def pair_sensors(
    ds: xr.Dataset, chosen: tuple[str, ...], requested: str | Sequence[str]
) -> tuple[str, ...]:
    """Sensors to embed, given which time steps have a paired S1 (``s1_time`` not NaT).

    With ``sensors="auto"`` a cube whose S1 is paired at no time step is embedded from
    S2 alone. Steps without S1 are embedded from S2 alone (their S1 features are NaN):
    windows where a sensor has no valid pixel use the other sensor only. Both warn.
    """
    if "s1" not in chosen or "s1_time" not in ds.coords or "time" not in ds["s1_time"].dims:
        return chosen
    paired = ~np.isnat(np.asarray(ds["s1_time"].values, dtype="datetime64[ns]"))
    if paired.all():
        return chosen
    if not paired.any() and requested == "auto" and "s2" in chosen:
        warnings.warn(
            "sensors='auto': no time step has a paired Sentinel-1 acquisition (s1_time is "
            "NaT everywhere), so the cube is embedded from Sentinel-2 alone.",
            UserWarning,
            stacklevel=4,
        )
        return ("s2",)
    missing = np.asarray(ds["time"].values)[~paired]
    steps = ", ".join(str(t)[:10] for t in missing[:5]) + (", ..." if missing.size > 5 else "")
    if "s2" in chosen:
        effect = "are embedded from Sentinel-2 alone; their S1 features are NaN"
        fix = "Pass sensors='s2' for S2-only features at every step."
    else:
        effect = "have no input: their outputs are NaN"
        fix = "Pair S1 acquisitions (load_cube s1_tolerance=) or drop those steps."
    warnings.warn(
        f"{missing.size} of {paired.size} time steps have no paired Sentinel-1 acquisition "
        f"(s1_time is NaT: {steps}); they {effect}. {fix}",
        UserWarning,
        stacklevel=4,
    )
    return chosen


def cube_processing_level(ds: xr.Dataset, sensor: str) -> str | None:
    """A sensor's processing level as the cube records it (``<sensor>_processing_level``
    attribute, or the level in ``<sensor>_collection``, e.g. ``sentinel-2-l1c``)."""
    level = ds.attrs.get(f"{sensor}_processing_level")
    if level:
        return str(level)
    for name in SENSORS[sensor].bands:
        if name in ds.data_vars and ds[name].attrs.get("processing_level"):
            return str(ds[name].attrs["processing_level"])
    return item_processing_level({}, str(ds.attrs.get(f"{sensor}_collection", "")))


def check_processing_level(ds: xr.Dataset, sensors: Sequence[str]) -> None:
    """Warn when a sensor's processing level differs from the normalisation statistics'."""
    for sensor in sensors:
        wanted = NORMALISATION_LEVEL.get(sensor)
        level = cube_processing_level(ds, sensor)
        if wanted and level and level.upper() != wanted:
            warnings.warn(
                f"{sensor.upper()} input is processing level {level}, but normalise=True "
                f"standardises it with {wanted} statistics (BigEarthNet), so the embeddings "
                f"are off. Embed {wanted} data, or standardise the cube yourself and pass "
                "normalise=False.",
                UserWarning,
                stacklevel=4,
            )


def check_finite(ds: xr.Dataset, variables: Sequence[str]) -> None:
    """Warn about in-memory input that is all missing, or holds ±inf (treated as missing)."""
    arrays = [ds[v].data for v in variables if not isinstance(ds[v].data, da.Array)]
    if not arrays:
        return
    finite = sum(int(np.isfinite(a).sum()) for a in arrays)
    infinite = sum(int(np.isinf(a).sum()) for a in arrays)
    if finite == 0:
        warnings.warn(
            f"ds: every value of {', '.join(variables)} is NaN, inf or nodata; every "
            "output will be NaN (valid_fraction 0).",
            UserWarning,
            stacklevel=4,
        )
    elif infinite:
        warnings.warn(
            f"ds: {infinite} values are ±inf; they are treated as missing, like NaN.",
            UserWarning,
            stacklevel=4,
        )


_KNOWN_BANDS = frozenset(b for spec in SENSORS.values() for b in spec.bands)


def _is_number(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str, bytes)):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
