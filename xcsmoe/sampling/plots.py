"""World maps of selections (plain lon/lat), with legends, land and coastlines.

Few strata (≤ ``max_stratum_colours``): one colour per joint stratum, one legend entry
each. Many strata: colour by land-cover class and marker shape by Köppen–Geiger climate
group (A tropical, B arid, C temperate, D continental, E polar), with one legend per
descriptor; colours and shapes are the same in every panel. The land background and
coastlines are Natural Earth 1:110m country polygons as shipped (public domain) in the
``pyogrio`` wheel that geopandas installs; without it, land is the shipped MODIS mask
and coastlines are its contour, derived at draw time. Nothing downloads.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from xcsmoe.errors import InputError, expected
from xcsmoe.sampling.stats import descriptor_products

__all__ = ["CLIMATE_GROUPS", "coastline_source", "land_mask", "plot_selection"]

CLIMATE_GROUPS = {"A": "tropical", "B": "arid", "C": "temperate", "D": "continental", "E": "polar"}
_MARKERS = {"A": "o", "B": "s", "C": "^", "D": "D", "E": "v"}
_OTHER_MARKER = "P"
_LAND, _COAST = "0.88", "0.45"


def land_mask(step: int = 10) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Coarse land mask (MODIS IGBP: not its water codes, not nodata) and its extent."""
    from xcsmoe.sampling.rasters import modis_igbp

    raster = modis_igbp()
    data = np.asarray(raster.data)[::step, ::step]
    land = ~np.isin(data, list(raster.water | raster.nodata))
    return land, (-180.0, 180.0, -90.0, 90.0)


def _natural_earth_path() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pyogrio")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "tests/fixtures/naturalearth_lowres/naturalearth_lowres.shp"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def _natural_earth_land() -> Any:
    path = _natural_earth_path()
    if path is None:
        return None
    import geopandas as gpd
    import shapely

    try:
        countries = gpd.read_file(path)
    except Exception:  # an unreadable copy: fall back to the raster mask
        return None
    return gpd.GeoSeries([shapely.union_all(countries.geometry.to_numpy())], crs="EPSG:4326")


def coastline_source() -> str:
    """Which land/coastline data :func:`plot_selection` draws."""
    if _natural_earth_land() is not None:
        return "Natural Earth 1:110m (pyogrio's bundled copy)"
    return "MODIS IGBP land mask, coastlines contoured at draw time"


def _background(ax: Any) -> None:
    land = _natural_earth_land()
    if land is not None:
        land.plot(ax=ax, facecolor=_LAND, edgecolor=_COAST, linewidth=0.4, zorder=0)
        return
    mask, extent = land_mask()
    ax.imshow(
        np.where(mask, 0.88, 1.0),
        extent=extent,
        cmap="gray",
        vmin=0,
        vmax=1,
        origin="upper",
        interpolation="nearest",
        zorder=0,
    )
    height, width = mask.shape
    lon = np.linspace(-180, 180, width, endpoint=False) + 180.0 / width
    lat = np.linspace(90, -90, height, endpoint=False) - 90.0 / height
    ax.contour(lon, lat, mask.astype(float), levels=[0.5], colors=_COAST, linewidths=0.4)


def _palette(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    base = np.vstack([colormaps["tab20"](np.arange(20)), colormaps["tab20b"](np.arange(20))])
    if len(names) <= 10:
        base = colormaps["tab10"](np.arange(10))
    return {name: base[i % len(base)] for i, name in enumerate(sorted(names))}


def _group(climate: Any) -> str:
    text = str(climate)
    return text[:1] if text[:1] in _MARKERS else "?"


def _extent(ax: Any, frames: list[Any]) -> None:
    lon = np.concatenate([f["lon"].to_numpy(float) for f in frames])
    lat = np.concatenate([f["lat"].to_numpy(float) for f in frames])
    west, east, south, north = lon.min(), lon.max(), lat.min(), lat.max()
    if east - west < 180:  # regional selection: zoom in, with a margin
        pad = max(2.0, 0.1 * max(east - west, north - south))
        ax.set_xlim(max(-180, west - pad), min(180, east + pad))
        ax.set_ylim(max(-90, south - pad), min(90, north + pad))
    else:
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)


def _scatter(ax: Any, frame: Any, *, style: dict[str, Any], size: float) -> None:
    colour_column, colours = style["colour_column"], style["colours"]
    points = {"s": size, "linewidths": 0.25, "edgecolors": "0.15", "zorder": 2}
    if style["marker_column"] is None:
        ax.scatter(
            frame["lon"],
            frame["lat"],
            c=[colours[str(v)] for v in frame[colour_column]],
            marker="o",
            **points,
        )
        return
    groups = frame[style["marker_column"]].map(_group).to_numpy()
    for group in np.unique(groups):
        part = frame[groups == group]
        ax.scatter(
            part["lon"],
            part["lat"],
            c=[colours[str(v)] for v in part[colour_column]],
            marker=_MARKERS.get(group, _OTHER_MARKER),
            **points,
        )


def _legends(ax: Any, style: dict[str, Any]) -> None:
    colours = style["colours"]
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colour, markeredgecolor="0.15", label=name)
        for name, colour in colours.items()
    ]
    title = {"stratum": "joint stratum", "landcover": "land cover", "climate": "climate zone"}
    first = ax.legend(
        handles=handles,
        title=title.get(style["colour_column"], style["colour_column"]),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=6,
        title_fontsize=7,
        ncols=1 if len(handles) <= 24 else 2,
        frameon=False,
    )
    if style["marker_column"] is None:
        return
    ax.add_artist(first)
    shapes = [
        Line2D(
            [],
            [],
            marker=_MARKERS.get(g, _OTHER_MARKER),
            linestyle="",
            color="0.5",
            label=f"{g} {CLIMATE_GROUPS.get(g, 'other')}",
        )
        for g in style["groups"]
    ]
    ax.legend(
        handles=shapes,
        title="climate group",
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
        fontsize=6,
        title_fontsize=7,
        frameon=False,
    )


def _style(frames: list[Any], column: str, max_colours: int) -> dict[str, Any]:
    """One colour/marker mapping for every panel."""
    values = sorted({str(v) for f in frames for v in f[column].astype(str).unique()})
    has_descriptors = all({"climate", "landcover"} <= set(f.columns) for f in frames)
    if len(values) <= max_colours or not has_descriptors:
        return {"colour_column": column, "colours": _palette(values), "marker_column": None}
    classes = sorted({str(v) for f in frames for v in f["landcover"].astype(str).unique()})
    groups = sorted({_group(v) for f in frames for v in f["climate"].astype(str).unique()})
    return {
        "colour_column": "landcover",
        "colours": _palette(classes),
        "marker_column": "climate",
        "groups": groups,
    }


def plot_selection(
    selection: Any,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    column: str = "stratum",
    land: bool = True,
    point_size: float = 9.0,
    max_stratum_colours: int = 20,
    dpi: int = 150,
) -> Figure:
    """Map of a selection (or a mapping name → selection, one panel each).

    Up to ``max_stratum_colours`` values of ``column``: one colour each; more: colour by
    land-cover class and shape by climate group (see the module docstring). The title
    names the descriptor products (from ``attrs["summary"]["descriptors"]``). Writes a
    PNG to ``path`` when given; returns the matplotlib ``Figure``.
    """
    panels = (
        dict(selection) if isinstance(selection, Mapping) else {title or "selection": selection}
    )
    if not panels:
        raise InputError(expected("selection", "at least one selection", "an empty mapping"))
    for name, frame in panels.items():
        missing = {"lon", "lat", column} - set(frame.columns)
        if missing:
            raise InputError(
                expected(
                    f"selection[{name!r}]",
                    f"columns lon, lat, {column}",
                    f"missing {sorted(missing)}",
                    "Run add_descriptors first.",
                )
            )
        if len(frame) == 0:
            raise InputError(expected(f"selection[{name!r}]", "at least one sample", 0))
    frames = list(panels.values())
    style = _style(frames, column, max_stratum_colours)
    figure = Figure(figsize=(13.5, 5.4 * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    for index, (ax, (name, frame)) in enumerate(zip(axes, panels.items(), strict=True)):
        if land:
            _background(ax)
        _scatter(ax, frame, style=style, size=point_size)
        _extent(ax, frames)
        ax.set_aspect("equal")
        ax.set_xlabel("longitude [°]")
        ax.set_ylabel("latitude [°]")
        strata = frame[column].astype(str).nunique()
        ax.set_title(f"{name}: {len(frame):,} samples, {strata} strata", fontsize=10)
        if index == 0:
            _legends(ax, style)
    heading = [title] if title and len(panels) > 1 else []
    products = "; ".join(f"{k}: {v}" for k, v in descriptor_products(frames).items())
    if products:
        heading.append(products)
    if heading:
        figure.suptitle("\n".join(heading), fontsize=10)
    if path is not None:
        figure.savefig(os.fspath(path), dpi=dpi)
    return figure
