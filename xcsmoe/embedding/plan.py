"""Planning an embedding run: which bands, which windows, which output grids.

Pure functions over metadata (band names, dtypes, geobox, chunk sizes): nothing here
reads pixels or touches torch, so every rule is cheap to test.

Grid rules (P = patch size, W = window size, a multiple of P):

* the cube is cut into W×W windows from its top-left corner; the model sees one window
  at a time, so a window's embedding never depends on its neighbours or on chunking;
* ``edge="pad"`` keeps a partial last row/column of windows, padded with NaN (NaN never
  reaches the model: it is replaced by 0, the band mean after normalisation, and the
  share of valid pixels is reported as ``valid_fraction``); ``edge="drop"`` crops the
  cube to whole windows instead. Windows are never shifted to fit;
* ``tokens`` live on the input geobox zoomed out by P, ``cls`` on the geobox zoomed
  out by W (for ``edge="drop"``: of the cropped geobox);
* dask chunks hold whole windows: spatial chunks are a multiple of W (rechunked to
  the nearest multiple when they are not, see :func:`windows_per_chunk`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from odc.geo.geobox import GeoBox

from xcsmoe.errors import ConfigError, CRSError, GridError, InputError, MissingBandError, expected
from xcsmoe.sensors import S1, S2, SENSORS

SENSOR_VARIABLES: dict[str, tuple[str, ...]] = {name: spec.bands for name, spec in SENSORS.items()}
"""Cube variables of each sensor in the sensor spec's order (:mod:`xcsmoe.sensors`); a
model's own input order is its config's (``config.bands(sensor)``), see :class:`EmbedPlan`."""

Edge = Literal["pad", "drop"]
DEFAULT_CHUNK_PIXELS = 1024


@dataclass(frozen=True)
class EmbedPlan:
    """Everything the execution step needs to know, decided up front."""

    patch: int
    window: int
    sensors: tuple[str, ...]
    geobox: GeoBox  # of the cube as given
    edge: Edge
    windows: tuple[int, int]  # (rows, cols) of windows
    chunk_windows: tuple[int, int]  # windows per dask chunk (rows, cols)
    bands: tuple[tuple[str, ...], ...] = ()  # per sensor, the model's input band order

    @property
    def variables(self) -> tuple[str, ...]:
        """Input variables in model channel order: S1 bands, then S2 bands, each in the
        order the model's patch embedding expects (its config's ``s1_bands``/``s2_bands``)."""
        return tuple(v for bands in self.sensor_bands for v in bands)

    @property
    def sensor_bands(self) -> tuple[tuple[str, ...], ...]:
        """Band order of each sensor in :attr:`sensors` (the spec's when not given)."""
        return self.bands or tuple(SENSOR_VARIABLES[s] for s in self.sensors)

    @property
    def grid_per_window(self) -> int:
        """Tokens per window side, W / P."""
        return self.window // self.patch

    @property
    def covered_shape(self) -> tuple[int, int]:
        """Pixels covered by the windows (padded for ``pad``, cropped for ``drop``)."""
        return self.windows[0] * self.window, self.windows[1] * self.window

    @property
    def valid_geobox(self) -> GeoBox:
        """The part of the cube the outputs describe (the whole cube unless dropped)."""
        if self.edge == "drop":
            rows, cols = self.covered_shape
            return self.geobox[:rows, :cols]
        return self.geobox

    @property
    def token_geobox(self) -> GeoBox:
        """Grid of ``tokens``: the (valid) input geobox zoomed out by the patch size."""
        return self.valid_geobox.zoom_out(self.patch)

    @property
    def cls_geobox(self) -> GeoBox:
        """Grid of ``cls`` and ``valid_fraction``: zoomed out by the window size."""
        return self.valid_geobox.zoom_out(self.window)

    @property
    def chunk_pixels(self) -> tuple[int, int]:
        return self.chunk_windows[0] * self.window, self.chunk_windows[1] * self.window


def select_sensors(variables: Sequence[str], sensors: str | Sequence[str]) -> tuple[str, ...]:
    """Resolve ``sensors`` ("auto", "s1", "s2", "s1+s2" or a sequence) against the cube.

    ``"auto"`` takes every sensor whose variables are all present.
    """
    present = set(variables)
    if sensors == "auto":
        chosen = tuple(s for s in ("s1", "s2") if set(SENSOR_VARIABLES[s]) <= present)
        if not chosen:
            partial = {
                s: sorted(set(v) - present) for s, v in SENSOR_VARIABLES.items() if set(v) & present
            }
            raise MissingBandError(
                expected(
                    "ds",
                    f"all Sentinel-2 bands {' '.join(S2.bands)} and/or Sentinel-1 {' '.join(S1.bands)}",
                    f"variables {sorted(present)}" + (f" (missing {partial})" if partial else ""),
                    "Load the cube with xcsmoe.load_cube or rename variables to these names.",
                )
            )
        return chosen
    requested = tuple(sensors.split("+")) if isinstance(sensors, str) else tuple(sensors)
    unknown = [s for s in requested if s not in SENSOR_VARIABLES]
    if unknown or not requested:
        raise ConfigError(expected("sensors", '"auto", "s1", "s2" or "s1+s2"', sensors))
    for sensor in requested:
        missing = [v for v in SENSOR_VARIABLES[sensor] if v not in present]
        if missing:
            raise MissingBandError(
                expected(
                    "ds",
                    f"the {sensor.upper()} variables {list(SENSOR_VARIABLES[sensor])}",
                    f"a dataset missing {missing}",
                    f"Add the bands or pass sensors= without {sensor!r}.",
                )
            )
    return tuple(s for s in ("s1", "s2") if s in requested)


def check_variables(dtypes: Mapping[str, np.dtype], variables: Sequence[str]) -> None:
    """Every input variable must be a real number type (ints are cast to float32)."""
    for name in variables:
        dtype = np.dtype(dtypes[name])
        if dtype.kind not in "iuf":
            raise InputError(
                expected(
                    f"ds[{name!r}].dtype",
                    "an integer or floating dtype",
                    str(dtype),
                    "Cast the band to float32 (NaN for nodata) before embedding.",
                )
            )


def require_projected(geobox: GeoBox | None) -> GeoBox:
    """The cube needs a projected CRS: patches are square in metres, not in degrees."""
    if geobox is None or geobox.crs is None:
        raise CRSError(
            expected(
                "ds",
                "a dataset with a CRS (ds.odc.geobox)",
                "no CRS",
                "Load it with xcsmoe.load_cube or set one with ds.odc.assign_crs(...).",
            )
        )
    if geobox.crs.geographic:
        raise CRSError(
            expected(
                "ds.crs",
                "a projected CRS (e.g. UTM, metres)",
                str(geobox.crs),
                "Reproject with load_cube(..., crs='utm') or ds.odc.reproject(...).",
            )
        )
    return geobox


def windows_per_chunk(chunk: int | None, window: int, n_windows: int) -> int:
    """Whole windows per dask chunk along one axis.

    A chunk that is already a multiple of the window keeps its size; otherwise it is
    rounded to the nearest multiple (at least one window). ``None`` picks about
    :data:`DEFAULT_CHUNK_PIXELS` pixels.
    """
    target = DEFAULT_CHUNK_PIXELS if chunk is None else chunk
    return int(min(max(1, round(target / window)), n_windows))


def plan_embedding(
    *,
    variables: Sequence[str],
    dtypes: Mapping[str, np.dtype],
    geobox: GeoBox | None,
    patch: int,
    window: int,
    model_patch: int,
    sensors: str | Sequence[str] = "auto",
    edge: Edge = "pad",
    chunks: tuple[int | None, int | None] = (None, None),
    bands: Mapping[str, Sequence[str]] | None = None,
) -> EmbedPlan:
    """Check a cube's metadata against the model and lay out windows and chunks.

    ``bands``: per sensor, the model's input band order (default the sensor spec's).
    """
    if patch != model_patch:
        raise ConfigError(
            expected(
                "patch",
                f"the model's patch size {model_patch}",
                patch,
                f"Pass patch={model_patch} or a model with patch size {patch} (e.g. csmoe_p{patch}).",
            )
        )
    if window <= 0 or window % patch:
        raise ConfigError(
            expected("window", f"a positive multiple of the patch size {patch}", window)
        )
    if edge not in ("pad", "drop"):
        raise ConfigError(expected("edge", '"pad" or "drop"', edge))
    chosen = select_sensors(variables, sensors)
    order = tuple(_band_order(s, None if bands is None else bands.get(s)) for s in chosen)
    check_variables(dtypes, [v for b in order for v in b])
    geobox = require_projected(geobox)
    height, width = geobox.shape.y, geobox.shape.x
    if height < window or width < window:
        raise GridError(
            expected(
                "window",
                f"at most the cube size {height}×{width} px",
                window,
                f"Pass a smaller multiple of the patch size, e.g. window={_largest_window(min(height, width), patch)}.",
            )
        )
    round_up = math.ceil if edge == "pad" else math.floor
    windows = (round_up(height / window), round_up(width / window))
    chunk_windows = (
        windows_per_chunk(chunks[0], window, windows[0]),
        windows_per_chunk(chunks[1], window, windows[1]),
    )
    return EmbedPlan(
        patch=patch,
        window=window,
        sensors=chosen,
        geobox=geobox,
        edge=edge,
        windows=windows,
        chunk_windows=chunk_windows,
        bands=order,
    )


def _band_order(sensor: str, bands: Sequence[str] | None) -> tuple[str, ...]:
    """``bands`` checked to be a permutation of the sensor's variables."""
    if bands is None:
        return SENSOR_VARIABLES[sensor]
    if sorted(bands) != sorted(SENSOR_VARIABLES[sensor]):
        raise ConfigError(
            expected(
                f"{sensor}_bands",
                f"an order of {list(SENSOR_VARIABLES[sensor])}",
                tuple(bands),
            )
        )
    return tuple(bands)


def _largest_window(size: int, patch: int) -> int:
    return max(patch, size // patch * patch)
