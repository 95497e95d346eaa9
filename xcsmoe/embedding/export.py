"""Exports of an embedding Dataset: GeoParquet rows per window, PCA pictures of tokens."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
    cube's CRS), ``utm_crs``, ``pixel_bbox`` (col0, row0, col1, row1 in input pixels)
    and ``geometry`` (the window footprint in WGS84). Windows with
    ``valid_fraction <= min_valid`` are left out.
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
    rows = []
    for t, timestamp in enumerate(pd.to_datetime(emb["time"].values)):
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                if not valid[t, i, j] > min_valid:
                    continue
                footprint = window_footprint(emb.attrs["cls_transform"], i, j)
                key = f"{timestamp.isoformat()}|{crs}|{x:.3f}|{y:.3f}|{emb.attrs.get('model')}"
                rows.append(
                    {
                        "unique_id": hashlib.sha1(key.encode()).hexdigest()[:16],
                        "timestamp": timestamp,
                        "embedding": cls[t, i, j],
                        "valid_fraction": float(valid[t, i, j]),
                        "utm_footprint": footprint.wkt,
                        "utm_crs": str(crs),
                        "pixel_bbox": [j * window, i * window, (j + 1) * window, (i + 1) * window],
                        "geometry": footprint,
                    }
                )
    columns = [*COLUMNS[:-1], "geometry"]
    table = gpd.GeoDataFrame(pd.DataFrame(rows, columns=columns), geometry="geometry", crs=str(crs))
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
    x, y = tokens["x"].values, tokens["y"].values
    step_x = abs(x[1] - x[0]) if x.size > 1 else 1.0
    step_y = abs(y[1] - y[0]) if y.size > 1 else 1.0
    extent = (
        x.min() - step_x / 2,
        x.max() + step_x / 2,
        y.min() - step_y / 2,
        y.max() + step_y / 2,
    )
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def window_footprint(transform: list[float], row: int, col: int) -> Polygon:
    """Footprint of window ``(row, col)`` in the cube's CRS, from the cls grid affine
    ``(a, b, c, d, e, f)`` (north-up: ``b = d = 0``)."""
    a, _, c, _, e, f = (float(v) for v in transform[:6])
    x0, y0 = c + col * a, f + row * e
    return box(min(x0, x0 + a), min(y0, y0 + e), max(x0, x0 + a), max(y0, y0 + e))
