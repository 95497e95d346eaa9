"""World maps of selections, coloured by joint stratum (plain lon/lat, no projection)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from xcsmoe.errors import InputError, expected

__all__ = ["land_mask", "plot_selection"]


def land_mask(step: int = 10) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Coarse land mask (IGBP not water, not nodata) and its lon/lat extent."""
    from xcsmoe.sampling.rasters import IGBP_WATER, modis_igbp

    raster = modis_igbp()
    data = np.asarray(raster.data)[::step, ::step]
    land = (data != IGBP_WATER) & ~np.isin(data, list(raster.nodata))
    return land, (-180.0, 180.0, -90.0, 90.0)


def _stratum_colours(names: np.ndarray) -> tuple[np.ndarray, ListedColormap]:
    from matplotlib import colormaps

    uniques, codes = np.unique(names.astype(str), return_inverse=True)
    base = np.vstack([colormaps["tab20"](np.arange(20)), colormaps["tab20b"](np.arange(20))])
    shuffled = np.random.default_rng(7).permutation(max(len(uniques), 1)) % len(base)
    return codes, ListedColormap(base[shuffled])


def _panel(ax: Any, frame: Any, *, title: str, column: str, background: Any, size: float) -> None:
    if background is not None:
        land, extent = background
        ax.imshow(
            np.where(land, 0.85, 1.0),
            extent=extent,
            cmap="gray",
            vmin=0,
            vmax=1,
            origin="upper",
            interpolation="nearest",
        )
    codes, cmap = _stratum_colours(frame[column].to_numpy())
    ax.scatter(
        frame["lon"],
        frame["lat"],
        c=codes,
        cmap=cmap,
        s=size,
        linewidths=0,
        vmin=-0.5,
        vmax=cmap.N - 0.5,
    )
    west, east = float(frame["lon"].min()), float(frame["lon"].max())
    south, north = float(frame["lat"].min()), float(frame["lat"].max())
    if east - west < 180:  # regional selection: zoom in, with a margin
        pad = max(2.0, 0.1 * max(east - west, north - south))
        ax.set_xlim(max(-180, west - pad), min(180, east + pad))
        ax.set_ylim(max(-90, south - pad), min(90, north + pad))
    else:
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
    ax.set_aspect("equal")
    ax.set_xlabel("longitude [°]")
    ax.set_ylabel("latitude [°]")
    strata = frame[column].astype(str).nunique()
    ax.set_title(f"{title}: {len(frame):,} samples, {strata} strata", fontsize=10)


def plot_selection(
    selection: Any,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    column: str = "stratum",
    land: bool = True,
    point_size: float = 2.0,
    dpi: int = 150,
) -> Figure:
    """Map of a selection (or a mapping name → selection, one panel each) by stratum.

    Writes a PNG to ``path`` when given; returns the matplotlib ``Figure``.
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
    background = land_mask() if land else None
    figure = Figure(figsize=(10, 5.2 * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (name, frame) in zip(axes, panels.items(), strict=True):
        _panel(ax, frame, title=str(name), column=column, background=background, size=point_size)
    if title and len(panels) > 1:
        figure.suptitle(title)
    if path is not None:
        figure.savefig(os.fspath(path), dpi=dpi)
    return figure
