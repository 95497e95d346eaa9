"""Exports of an embedding Dataset: GeoParquet rows per window, PCA pictures of tokens,
maps of the dominant Soft MoE expert."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.xr import xr_coords  # noqa: F401  (registers .odc on xarray objects)
from shapely.geometry import Polygon, box

from xcsmoe.errors import InputError, expected

COLUMNS = (
    "unique_id", "timestamp", "embedding", "valid_fraction", "utm_footprint", "utm_crs",
    "pixel_bbox", "geometry",
)  # fmt: skip


def cls_table(emb: xr.Dataset, *, min_valid: float = 0.0) -> gpd.GeoDataFrame:
    """One row per window in the Major TOM embedding layout.

    Columns: ``unique_id``, ``timestamp``, ``embedding`` (float32 list, the raw [CLS]),
    ``valid_fraction``, ``centre_lat``, ``centre_lon``, ``utm_footprint`` (WKT in the
    cube's CRS), ``utm_crs`` (``"EPSG:32633"``, as Major TOM writes it), ``pixel_bbox``
    (col0, row0, col1, row1 in input pixels) and ``geometry`` (the footprint in WGS84).
    Footprints and pixel boxes of padded edge windows are clipped to the embedded pixels
    (the ``data_bounds`` attribute); ``valid_fraction`` still counts the whole window.
    Windows with ``valid_fraction <= min_valid`` are left out.
    """
    if "cls" not in emb:
        raise InputError(
            expected("emb", "an embedding Dataset with a 'cls' variable", list(emb.data_vars))
        )
    emb = emb if "time" in emb.dims else emb.expand_dims("time")
    cls = emb["cls"].transpose("time", "cls_y", "cls_x", "embedding").values.astype(np.float32)
    valid = emb["valid_fraction"].transpose("time", "cls_y", "cls_x").values
    crs = emb["cls"].odc.crs if emb["cls"].odc.crs is not None else emb.odc.crs
    window = int(emb.attrs["window"])
    xs, ys = emb["cls_x"].values, emb["cls_y"].values
    transform = [float(v) for v in emb.attrs["cls_transform"][:6]]
    data = _data_box(emb.attrs.get("data_bounds"))
    crs_code = epsg_code(crs)
    rows = []
    for t, timestamp in enumerate(pd.to_datetime(emb["time"].values)):
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                if not valid[t, i, j] > min_valid:
                    continue
                footprint = window_footprint(transform, i, j)
                if data is not None:
                    footprint = footprint.intersection(data)
                key = f"{timestamp.isoformat()}|{crs}|{x:.3f}|{y:.3f}|{emb.attrs.get('model')}"
                rows.append(
                    {
                        "unique_id": hashlib.sha1(key.encode()).hexdigest()[:16],
                        "timestamp": timestamp,
                        "embedding": cls[t, i, j],
                        "valid_fraction": float(valid[t, i, j]),
                        "utm_footprint": footprint.wkt,
                        "utm_crs": crs_code,
                        "pixel_bbox": _pixel_bbox(footprint, transform, window),
                        "geometry": footprint,
                    }
                )
    columns = [*COLUMNS[:-1], "geometry"]
    table = gpd.GeoDataFrame(pd.DataFrame(rows, columns=columns), geometry="geometry", crs=crs_code)
    centres = gpd.GeoSeries(table.geometry.centroid, crs=table.crs).to_crs("EPSG:4326")
    table = table.to_crs("EPSG:4326")
    table["centre_lat"], table["centre_lon"] = centres.y.to_numpy(), centres.x.to_numpy()
    table.attrs.update({k: str(v) for k, v in emb.attrs.items()})
    return table


def cls_to_geoparquet(emb: xr.Dataset, path: str | Path, *, min_valid: float = 0.0) -> Path:
    """Write :func:`cls_table` to GeoParquet (computes ``cls`` if it is lazy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cls_table(emb, min_valid=min_valid).to_parquet(path)
    return path


def pca_rgb(tokens: xr.DataArray) -> np.ndarray:
    """First three principal components of ``(embedding, y, x)`` tokens → ``(y, x, 3)`` in [0, 1].

    Each component is stretched between its 2nd and 98th percentile; NaN tokens stay NaN.
    """
    values = tokens.transpose("embedding", "y", "x").values.astype(np.float64)
    d, h, w = values.shape
    flat = values.reshape(d, -1).T
    finite = np.isfinite(flat).all(axis=1)
    rgb = np.full((h * w, 3), np.nan)
    if finite.sum() >= 3:
        centred = flat[finite] - flat[finite].mean(axis=0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        projected = centred @ components[:3].T
        low, high = np.percentile(projected, [2, 98], axis=0)
        rgb[finite, : projected.shape[1]] = np.clip(
            (projected - low) / np.where(high > low, high - low, 1), 0, 1
        )
    return rgb.reshape(h, w, 3)


def plot_embedding_pca(
    emb: xr.Dataset, path: str | Path, *, time: int = 0, title: str | None = None
) -> Path:
    """PNG of the token embeddings' first three principal components as RGB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "tokens" not in emb:
        raise InputError(
            expected("emb", "an embedding Dataset with a 'tokens' variable", list(emb.data_vars))
        )
    tokens = emb["tokens"].isel(time=time) if "time" in emb["tokens"].dims else emb["tokens"]
    rgb = pca_rgb(tokens)
    extent = _extent(tokens["x"].values, tokens["y"].values)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.nan_to_num(rgb, nan=0.0), extent=extent, interpolation="nearest")
    crs = tokens.odc.crs
    crs_name = f"EPSG:{crs.epsg}" if crs is not None and crs.epsg else "native CRS"
    ax.set_title(title or f"{emb.attrs.get('model', 'CSMoE')} tokens, PCA → RGB", fontsize=9)
    ax.set_xlabel(f"x [m, {crs_name}]")
    ax.set_ylabel(f"y [m, {crs_name}]")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def window_footprint(transform: list[float], row: int, col: int) -> Polygon:
    """Footprint of window ``(row, col)`` in the cube's CRS, from the cls grid affine
    ``(a, b, c, d, e, f)`` (north-up: ``b = d = 0``)."""
    a, _, c, _, e, f = (float(v) for v in transform[:6])
    x0, y0 = c + col * a, f + row * e
    return box(min(x0, x0 + a), min(y0, y0 + e), max(x0, x0 + a), max(y0, y0 + e))


def epsg_code(crs: object) -> str:
    """``"EPSG:<code>"`` of ``crs`` (odc, pyproj or rasterio CRS, or a string), as Major
    TOM's ``utm_crs`` column holds it; WKT only for a CRS without an EPSG code."""
    from pyproj import CRS

    parsed = CRS.from_user_input(getattr(crs, "wkt", None) or str(crs))
    code = parsed.to_epsg()
    return f"EPSG:{code}" if code else parsed.to_wkt()


def _data_box(bounds: object) -> Polygon | None:
    if bounds is None:
        return None
    left, bottom, right, top = (float(v) for v in list(bounds)[:4])
    return box(left, bottom, right, top)


def _pixel_bbox(footprint: Polygon, transform: list[float], window: int) -> list[int]:
    """(col0, row0, col1, row1) of ``footprint`` in input pixels, from the cls affine."""
    a, _, c, _, e, f = transform
    px, py = a / window, e / window
    x0, y0, x1, y1 = footprint.bounds
    cols = sorted(round((x - c) / px) for x in (x0, x1))
    rows = sorted(round((y - f) / py) for y in (y0, y1))
    return [cols[0], rows[0], cols[1], rows[1]]


NO_DATA_COLOUR = "#d9d9d9"


def layer_name(layer: int, *, sensor: str, model: str | None) -> str:
    """A Soft MoE layer the way a person names it: ``"S2 block 1 of 4"`` for a
    modality-specific layer, ``"shared block 2 of 2"`` for a cross-sensor one.

    ``layer`` indexes the Soft MoE layers on ``sensor``'s path as
    :func:`xcsmoe.expert_usage` does (negative from the end).
    """
    from xcsmoe.model.registry import list_models, model_config

    if model not in list_models():
        return f"Soft MoE layer {layer}"
    config = model_config(model)
    specific, shared = config.depth_specific, config.depth_shared
    index = int(layer) % (specific + shared)
    if index < specific:
        return f"{sensor.upper()} block {index + 1} of {specific}"
    return f"shared block {index - specific + 1} of {shared}"


def plot_expert_usage(
    usage: xr.DataArray, path: str | Path, *, time: int = 0, title: str | None = None
) -> Path:
    """PNG map of the dominant Soft MoE expert per token (from :func:`xcsmoe.expert_usage`).

    One colour and one legend entry per expert, no-data tokens (no valid pixel) in a grey
    of their own; the title names the layer ("S2 block 1 of 4", "shared block 2 of 2");
    axes are in the CRS, like :func:`plot_embedding_pca`.
    """
    return save_figure(expert_usage_figure(usage, time=time, title=title), path)


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created), close it, return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def expert_usage_figure(usage: xr.DataArray, *, time: int = 0, title: str | None = None) -> Any:
    """The matplotlib figure :func:`plot_expert_usage` saves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    if not isinstance(usage, xr.DataArray) or "dominant_expert" not in usage.coords:
        raise InputError(
            expected(
                "usage",
                "the DataArray xcsmoe.expert_usage returns (coordinate 'dominant_expert')",
                type(usage).__name__,
            )
        )
    dominant = usage["dominant_expert"]
    dominant = dominant.isel(time=time) if "time" in dominant.dims else dominant
    experts = int(usage.sizes["expert"])
    # qualitative colours without the greys, so no expert resembles the no-data colour
    name, greys = ("tab10", {7}) if experts <= 9 else ("tab20", {14, 15})
    palette = plt.get_cmap(name)
    usable = [palette(i) for i in range(palette.N) if i not in greys]
    colours = [usable[i % len(usable)] for i in range(experts)]
    cmap = ListedColormap([NO_DATA_COLOUR, *colours])
    norm = BoundaryNorm(np.arange(-1.5, experts), cmap.N)
    x, y = dominant["x"].values, dominant["y"].values
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    ax.imshow(dominant.values, cmap=cmap, norm=norm, extent=_extent(x, y), interpolation="nearest")
    handles = [Patch(color=colours[i], label=f"expert {i}") for i in range(experts)]
    handles.append(Patch(color=NO_DATA_COLOUR, label="no data"))
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7, frameon=False
    )
    sensor = str(usage.attrs.get("sensor", "s2"))
    layer = layer_name(
        int(usage.attrs.get("layer", -1)), sensor=sensor, model=usage.attrs.get("model")
    )
    heading = f"dominant {sensor.upper()} expert, {layer}"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=9)
    crs = dominant.odc.crs
    crs_name = f"EPSG:{crs.epsg}" if crs is not None and crs.epsg else "native CRS"
    ax.set_xlabel(f"x [m, {crs_name}]")
    ax.set_ylabel(f"y [m, {crs_name}]")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _extent(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) of pixel-centre coordinates."""
    step_x = abs(x[1] - x[0]) if x.size > 1 else 1.0
    step_y = abs(y[1] - y[0]) if y.size > 1 else 1.0
    return (x.min() - step_x / 2, x.max() + step_x / 2, y.min() - step_y / 2, y.max() + step_y / 2)
