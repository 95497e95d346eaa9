"""Sentinel-1 and Sentinel-2 as the model sees them: bands, storage, units, statistics.

This module is the one home of sensor facts. The loader reads storage facts (dtype,
nodata, native resolution) from here, :func:`normalise` reads the statistics.

Raw cube values (what :func:`xcsmoe.load_cube` returns):

* Sentinel-2 L2A: digital numbers as stored (``uint16`` with nodata 0), as float32 with
  NaN for nodata. Reflectance is ``(DN + offset) * 1e-4``; the offset is ``-1000`` from
  processing baseline 04.00 on (products since 25 January 2022) and 0 before. The cube
  records it per time step in the ``s2_offset`` coordinate.
* Sentinel-1: backscatter in **linear power** (sigma0/gamma0), float32, NaN for nodata.
  Collections stored in decibels are converted on load with :func:`db_to_linear`.

:func:`normalise` turns raw values into what the model was trained on: S2 DN (with the
baseline offset applied) and S1 in dB, each standardised with the BigEarthNet statistics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import xarray as xr
from bigearthnet_common.constants import BAND_STATS_S1, BAND_STATS_S2

from xcsmoe.errors import ConfigError, MissingBandError, expected

__all__ = [
    "NORMALISATION_LEVEL",
    "S1",
    "S2",
    "S2_OFFSET_BASELINE",
    "SENSORS",
    "SensorSpec",
    "db_to_linear",
    "item_processing_level",
    "linear_to_db",
    "normalise",
    "processing_baseline",
    "s2_offset",
    "sensor_of",
]

S2_OFFSET_BASELINE = "04.00"
"""First Sentinel-2 processing baseline whose L2A digital numbers carry a +1000 shift."""


@dataclass(frozen=True)
class SensorSpec:
    """Static description of one sensor's bands, storage and standardisation.

    Attributes:
        name: short id, ``"s2"`` or ``"s1"``.
        bands: cube variable names in model order.
        resolution: native pixel size in metres per band.
        dtype: storage dtype of the source rasters (before conversion to float32).
        nodata: storage nodata value.
        units: unit of the raw cube values.
        scale: multiply raw values (plus offset) by this to get physical units.
        mean, std: per-band standardisation statistics (model input units).
        normalised_units: unit in which ``mean``/``std`` are expressed.
    """

    name: str
    bands: tuple[str, ...]
    resolution: Mapping[str, float]
    dtype: str
    nodata: float
    units: str
    scale: float
    mean: Mapping[str, float] = field(repr=False)
    std: Mapping[str, float] = field(repr=False)
    normalised_units: str = ""

    def __post_init__(self) -> None:
        for table in ("resolution", "mean", "std"):
            missing = set(self.bands) - set(getattr(self, table))
            if missing:
                raise ConfigError(expected(f"{self.name}.{table}", "every band", sorted(missing)))

    def band(self, name: str) -> str:
        """Return the canonical band name for ``name`` (case-insensitive)."""
        for band in self.bands:
            if band.lower() == name.lower():
                return band
        raise MissingBandError(
            expected("band", f"one of {', '.join(self.bands)} for {self.name}", name)
        )

    def stats(self, bands: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (float32 arrays) of ``bands`` (default: all) in that order."""
        names = self.bands if bands is None else tuple(self.band(b) for b in bands)
        mean = np.array([self.mean[b] for b in names], dtype=np.float32)
        std = np.array([self.std[b] for b in names], dtype=np.float32)
        return mean, std


# Normalisation statistics are the BigEarthNet band statistics that CSMAE (and so
# CSMoE) standardise with, as shipped by bigearthnet-common
# (bigearthnet_common.constants.BAND_STATS_S2 / BAND_STATS_S1, which cite
# https://git.tu-berlin.de/rsim/bigearthnet-models-tf/-/blob/master/BigEarthNet.py).
# S2 statistics are in L2A digital numbers (pre-04.00 baseline), S1 ones in dB.
S2 = SensorSpec(
    name="s2",
    bands=("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B11", "B12", "B8A"),
    resolution=MappingProxyType(
        {"B02": 10, "B03": 10, "B04": 10, "B08": 10}
        | {b: 20 for b in ("B05", "B06", "B07", "B11", "B12", "B8A")}
    ),
    dtype="uint16",
    nodata=0,
    units="DN",
    scale=1e-4,
    mean=MappingProxyType(dict(BAND_STATS_S2["mean"])),
    std=MappingProxyType(dict(BAND_STATS_S2["std"])),
    normalised_units="DN (baseline offset applied)",
)

S1 = SensorSpec(
    name="s1",
    bands=("vv", "vh"),
    resolution=MappingProxyType({"vv": 10, "vh": 10}),
    dtype="float32",
    nodata=float("nan"),
    units="linear power",
    scale=1.0,
    mean=MappingProxyType({"vv": BAND_STATS_S1["mean"]["VV"], "vh": BAND_STATS_S1["mean"]["VH"]}),
    std=MappingProxyType({"vv": BAND_STATS_S1["std"]["VV"], "vh": BAND_STATS_S1["std"]["VH"]}),
    normalised_units="dB",
)

SENSORS: Mapping[str, SensorSpec] = MappingProxyType({"s2": S2, "s1": S1})

NORMALISATION_LEVEL: Mapping[str, str] = MappingProxyType({"s2": "L2A"})
"""Processing level the normalisation statistics were computed on (BigEarthNet: L2A)."""


def sensor_of(band: str) -> SensorSpec:
    """The sensor spec that owns cube variable ``band``."""
    for spec in SENSORS.values():
        if band in spec.bands:
            return spec
    known = [b for spec in SENSORS.values() for b in spec.bands]
    raise MissingBandError(expected("band", f"one of {known}", band))


# ---------------------------------------------------------------------------- S2 offset

_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})_")


def processing_baseline(properties: Mapping[str, Any]) -> str | None:
    """Sentinel-2 processing baseline (``"05.10"``) from STAC item properties, if known."""
    value = properties.get("s2:processing_baseline")
    if value:
        return str(value)
    for key in ("s2:product_uri", "s2:granule_id", "s2:datatake_id"):
        match = _BASELINE_IN_NAME.search(str(properties.get(key, "")) + "_")
        if match:
            return f"{match[1]}.{match[2]}"
    return None


def s2_offset(properties: Mapping[str, Any]) -> float:
    """Additive DN offset that makes an item's L2A values comparable across baselines.

    ``-1000`` for processing baseline >= 04.00 unless the provider already removed it
    (``earthsearch:boa_offset_applied``), else 0. Unknown baselines count as pre-04.00.
    """
    if properties.get("earthsearch:boa_offset_applied"):
        return 0.0
    baseline = processing_baseline(properties)
    if baseline is None:
        return 0.0
    major, _, minor = baseline.partition(".")
    return -1000.0 if (int(major), int(minor or 0)) >= (4, 0) else 0.0


_LEVEL_OF_PRODUCT = {"S2MSI1C": "L1C", "S2MSI2A": "L2A", "S2MSI2AP": "L2A"}
_LEVEL_IN_ID = re.compile(r"(?<![a-z0-9])(l1c|l2a)(?![a-z0-9])", re.IGNORECASE)


def item_processing_level(
    properties: Mapping[str, Any], collection_id: str | None = None
) -> str | None:
    """Sentinel-2 processing level (``"L1C"``, ``"L2A"``) of a STAC item, if it says.

    Read from ``processing:level``, ``s2:processing_level``, ``s2:product_type``
    (``S2MSI1C``/``S2MSI2A``), else from the collection id (``sentinel-2-l1c``). The product
    URI is not used: derived datasets (BigEarthNet) keep the name of their L1C source.
    """
    for key in ("processing:level", "s2:processing_level"):
        value = properties.get(key)
        if value:
            return str(value).upper()
    product = _LEVEL_OF_PRODUCT.get(str(properties.get("s2:product_type", "")).upper())
    if product:
        return product
    match = _LEVEL_IN_ID.search(collection_id or "")
    return match[1].upper() if match else None


# ------------------------------------------------------------------------- S1 decibels


def db_to_linear(values: Any) -> Any:
    """Decibels to linear power: ``10 ** (dB / 10)`` (lazy on xarray/dask input)."""
    return 10.0 ** (values / np.float32(10.0))


def linear_to_db(values: Any) -> Any:
    """Linear power to decibels: ``10 * log10(x)``; ``x <= 0`` becomes NaN."""
    if isinstance(values, xr.DataArray):
        return np.float32(10.0) * np.log10(values.where(values > 0))
    values = np.asarray(values, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.float32(10.0) * np.log10(values), np.float32(np.nan))


# ----------------------------------------------------------------------- normalisation


def normalise(ds: xr.Dataset) -> xr.Dataset:
    """Standardise a raw cube lazily: float32 ``(value - mean) / std`` per band.

    S2 bands get the per-time ``s2_offset`` coordinate added first (0 when absent); S1
    bands are converted from linear power to dB. NaN stays NaN. Variables that are not
    sensor bands are dropped; coordinates and attributes are kept.
    """
    if not isinstance(ds, xr.Dataset):
        raise ConfigError(expected("ds", "an xarray.Dataset", type(ds).__name__))
    known = {b for spec in SENSORS.values() for b in spec.bands}
    bands = [name for name in ds.data_vars if name in known]
    if not bands:
        raise MissingBandError(
            expected(
                "ds",
                f"at least one band of {sorted(known)}",
                sorted(map(str, ds.data_vars)),
                "Load the cube with xcsmoe.load_cube.",
            )
        )
    out = {name: _standardise(ds[name], sensor_of(name), ds) for name in bands}
    return xr.Dataset(out, coords=ds.coords, attrs={**ds.attrs, "normalised": "bigearthnet"})


def _standardise(var: xr.DataArray, spec: SensorSpec, ds: xr.Dataset) -> xr.DataArray:
    mean, std = (float(a[0]) for a in spec.stats((var.name,)))
    values = var.astype(np.float32)
    if spec is S2 and "s2_offset" in ds.coords:
        values = values + ds.coords["s2_offset"].astype(np.float32)
    elif spec is S1:
        values = linear_to_db(values)
    out = ((values - np.float32(mean)) / np.float32(std)).astype(np.float32)
    return out.assign_attrs(units="1", standardised_from=spec.normalised_units)
