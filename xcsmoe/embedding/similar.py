"""``similar``: where else in a cube looks like this? A lazy cosine-similarity map.

Built on :func:`xcsmoe.embed`'s output (pass it as ``embeddings=`` to reuse one, else it
is planned here with the same arguments): the query's embedding is compared with every
window's [CLS] (``grid="cls"``) or every patch token (``grid="tokens"``). The map keeps
the coordinates of that variable, so its grid — CRS and transform — is exactly
``embed``'s; nothing is computed until the result is.

Queries:

* a point ``(x, y)`` in the cube's CRS, ``{"lon": …, "lat": …}``, or an
  ``odc.geo.geom.Geometry`` point in any CRS — the cell (window or token) holding it;
* a window index ``{"row": r, "col": c}`` on the chosen grid;
* an embedding vector of the embedding size.

With ``k``, the result also holds the ``k`` most similar cells per time step (lazy,
``dask.array.argtopk``): ``top_row``, ``top_col``, ``top_x``, ``top_y``,
``top_similarity`` over dim ``rank``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from xcsmoe.errors import ConfigError, GridError, InputError, expected

__all__ = ["plot_similarity", "similar"]

_GRIDS = {"cls": ("cls_y", "cls_x"), "tokens": ("y", "x")}


def similar(
    ds: xr.Dataset,
    query: Any,
    k: int | None = None,
    *,
    patch: int = 16,
    grid: str = "cls",
    time: int = 0,
    embeddings: xr.Dataset | None = None,
    **embed_kwargs: Any,
) -> xr.Dataset:
    """Cosine similarity of every cell of ``grid`` to ``query`` (module doc).

    Args:
        ds: the cube (as for :func:`xcsmoe.embed`).
        query: point, window index or embedding vector (module doc).
        k: also return the ``k`` most similar cells per time step.
        grid: ``"cls"`` (one value per window) or ``"tokens"`` (one per patch).
        time: index of the time step the query cell is taken from.
        embeddings: the output of ``xcsmoe.embed(ds, ...)`` to reuse; else it is built
            from ``patch`` and ``embed_kwargs`` (``model``, ``weights``, ...).

    Returns:
        Dataset with ``similarity`` ``([time,] cls_y, cls_x)`` (or ``(y, x)``) in [-1, 1],
        NaN where a window has no valid pixel, and the top-k variables when ``k`` is set.
    """
    if grid not in _GRIDS:
        raise ConfigError(expected("grid", f"one of {sorted(_GRIDS)}", grid))
    if embeddings is None:
        from xcsmoe.embedding.api import embed

        embeddings = embed(ds, patch, output=(grid,), **embed_kwargs)
    if grid not in embeddings:
        raise InputError(
            expected(
                "embeddings",
                f"an embed() output with {grid!r}",
                sorted(map(str, embeddings.data_vars)),
            )
        )
    field = embeddings[grid]
    vector = _query_vector(field, query, grid, time)
    dot = xr.dot(field, vector, dim="embedding")
    norm = np.sqrt(xr.dot(field, field, dim="embedding")) * np.sqrt(
        xr.dot(vector, vector, dim="embedding")
    )
    similarity = (dot / norm).astype(np.float32).rename("similarity")
    similarity.attrs.update(embeddings.attrs, grid=grid, query=_describe(query))
    out = xr.Dataset({"similarity": similarity})
    if k is not None:
        out = out.merge(_top_k(similarity, k, grid))
    return out


def plot_similarity(
    result: xr.Dataset | xr.DataArray,
    ds: xr.Dataset,
    path: str | Path,
    *,
    time: int = 0,
    alpha: float = 0.6,
    title: str | None = None,
) -> Path:
    """PNG of a similarity map over an RGB rendering (B04, B03, B02; 2–98 % stretch) of
    the cube, top-k cells (when present) outlined; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xcsmoe.embedding.export import save_figure

    similarity = result["similarity"] if isinstance(result, xr.Dataset) else result
    if "time" in similarity.dims:
        similarity = similarity.isel(time=time)
    y_dim, x_dim = [d for d in similarity.dims if d in ("cls_y", "cls_x", "y", "x")]
    missing = [b for b in ("B04", "B03", "B02") if b not in ds]
    if missing:
        raise InputError(
            expected("ds", "S2 bands B04, B03, B02 for the RGB rendering", f"missing {missing}")
        )
    cube = ds.isel(time=time) if "time" in ds.dims else ds
    rgb = np.stack(
        [np.asarray(cube[b].values, dtype=np.float32) for b in ("B04", "B03", "B02")], axis=-1
    )
    low, high = np.nanpercentile(rgb, [2, 98])
    rgb = np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)
    values = np.asarray(similarity.values, dtype=np.float32)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(
        np.nan_to_num(rgb),
        extent=_extent(cube["x"].values, cube["y"].values),
        interpolation="nearest",
    )
    image = ax.imshow(
        values,
        extent=_extent(similarity[x_dim].values, similarity[y_dim].values),
        cmap="magma",
        alpha=alpha,
        vmin=-1,
        vmax=1,
        interpolation="nearest",
    )
    if isinstance(result, xr.Dataset) and "top_x" in result:
        top = result.isel(time=time) if "time" in result["top_x"].dims else result
        step_x = (
            abs(float(np.diff(similarity[x_dim].values[:2])[0]))
            if similarity.sizes[x_dim] > 1
            else 0
        )
        step_y = (
            abs(float(np.diff(similarity[y_dim].values[:2])[0]))
            if similarity.sizes[y_dim] > 1
            else 0
        )
        for x, y in zip(
            np.asarray(top["top_x"].values), np.asarray(top["top_y"].values), strict=True
        ):
            ax.add_patch(
                plt.Rectangle(
                    (x - step_x / 2, y - step_y / 2),
                    step_x,
                    step_y,
                    fill=False,
                    edgecolor="cyan",
                    lw=1.2,
                )
            )
    fig.colorbar(image, ax=ax, label="cosine similarity", shrink=0.8)
    ax.set_title(title or f"similarity to {similarity.attrs.get('query', 'query')}", fontsize=9)
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- helpers


def _query_vector(field: xr.DataArray, query: Any, grid: str, time: int) -> xr.DataArray:
    y_dim, x_dim = _GRIDS[grid]
    size = field.sizes["embedding"]
    if isinstance(query, Mapping) and {"row", "col"} <= set(query):
        row, col = int(query["row"]), int(query["col"])
        if not (0 <= row < field.sizes[y_dim] and 0 <= col < field.sizes[x_dim]):
            raise GridError(
                expected(
                    "query",
                    f"a window index within {field.sizes[y_dim]} rows x {field.sizes[x_dim]} cols",
                    (row, col),
                )
            )
        return _cell(field, row, col, time, y_dim, x_dim)
    array = (
        np.asarray(query.values if isinstance(query, xr.DataArray) else query)
        if not _is_point(query)
        else None
    )
    if (
        array is not None
        and array.ndim == 1
        and array.size == size
        and np.issubdtype(array.dtype, np.number)
    ):
        if not np.isfinite(array).all() or not np.any(array):
            raise InputError(
                expected("query", "a finite, non-zero embedding vector", "NaN/inf or zeros")
            )
        return xr.DataArray(array.astype(np.float32), dims=("embedding",))
    x, y = _point(query, field)
    row, col = _locate(field, x, y, y_dim, x_dim, query)
    return _cell(field, row, col, time, y_dim, x_dim)


def _is_point(query: Any) -> bool:
    from odc.geo.geom import Geometry

    return isinstance(query, Geometry) or (
        isinstance(query, Mapping) and {"lon", "lat"} <= set(query)
    )


def _point(query: Any, field: xr.DataArray) -> tuple[float, float]:
    from odc.geo.geom import Geometry, point

    crs = field.odc.crs
    if isinstance(query, Mapping) and {"lon", "lat"} <= set(query):
        query = point(float(query["lon"]), float(query["lat"]), "EPSG:4326")
    if isinstance(query, Geometry):
        if query.geom_type != "Point":
            raise InputError(expected("query", "a point geometry", query.geom_type))
        ((x, y),) = query.to_crs(crs).coords
        return float(x), float(y)
    if (
        isinstance(query, (tuple, list))
        and len(query) == 2
        and all(isinstance(v, (int, float, np.number)) for v in query)
    ):
        return float(query[0]), float(query[1])
    raise InputError(
        expected(
            "query",
            "a point (x, y) in the cube's CRS, {'lon', 'lat'}, an odc Geometry point, "
            f"{{'row', 'col'}}, or an embedding vector of size {field.sizes['embedding']}",
            _describe(query),
        )
    )


def _locate(
    field: xr.DataArray, x: float, y: float, y_dim: str, x_dim: str, query: Any
) -> tuple[int, int]:
    xs, ys = field[x_dim].values, field[y_dim].values
    dx = float(xs[1] - xs[0]) if xs.size > 1 else _resolution(field, x_dim)
    dy = float(ys[1] - ys[0]) if ys.size > 1 else -_resolution(field, y_dim)
    col = int(np.floor((x - (xs[0] - dx / 2)) / dx))
    row = int(np.floor((y - (ys[0] - dy / 2)) / dy))
    if not (0 <= row < ys.size and 0 <= col < xs.size):
        x_lo, x_hi = sorted((xs[0] - dx / 2, xs[-1] + dx / 2))
        y_lo, y_hi = sorted((ys[0] - dy / 2, ys[-1] + dy / 2))
        raise GridError(
            expected(
                "query",
                f"a point inside the cube (x {x_lo:.1f}..{x_hi:.1f}, y {y_lo:.1f}..{y_hi:.1f} in {_crs_name(field)})",
                f"{_describe(query)} → ({x:.1f}, {y:.1f})",
                "Pick a point inside the cube, or pass lon/lat as {'lon': ..., 'lat': ...}.",
            )
        )
    return row, col


def _crs_name(field: xr.DataArray) -> str:
    crs = field.odc.crs
    return f"EPSG:{crs.epsg}" if crs is not None and crs.epsg else str(crs)


def _resolution(field: xr.DataArray, dim: str) -> float:
    transform = field.attrs.get("cls_transform")
    if dim.startswith("cls") and transform:
        return abs(float(transform[0 if dim.endswith("x") else 4]))
    raise GridError(
        expected("embeddings", "a grid of at least 2 cells along each axis", dict(field.sizes))
    )


def _cell(
    field: xr.DataArray, row: int, col: int, time: int, y_dim: str, x_dim: str
) -> xr.DataArray:
    cell = field.isel({y_dim: row, x_dim: col})
    if "time" in cell.dims:
        if not -cell.sizes["time"] <= time < cell.sizes["time"]:
            raise InputError(expected("time", f"a time index below {cell.sizes['time']}", time))
        cell = cell.isel(time=time)
    return cell.reset_coords(drop=True).drop_vars(
        [c for c in cell.coords if c != "embedding"], errors="ignore"
    )


def _top_k(similarity: xr.DataArray, k: int, grid: str) -> xr.Dataset:
    y_dim, x_dim = _GRIDS[grid]
    rows, cols = similarity.sizes[y_dim], similarity.sizes[x_dim]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= rows * cols:
        raise InputError(
            expected("k", f"an integer in [1, {rows * cols}] (cells on the {grid} grid)", k)
        )
    lead = [d for d in similarity.dims if d not in (y_dim, x_dim)]
    data = similarity.transpose(*lead, y_dim, x_dim).data
    data = data if isinstance(data, da.Array) else da.from_array(data)
    flat = da.where(da.isnan(data), -np.inf, data).reshape((*data.shape[:-2], rows * cols))
    flat = flat.rechunk({flat.ndim - 1: -1})
    index = da.argtopk(flat, k, axis=-1)  # best first
    values = da.topk(flat, k, axis=-1)  # the same order
    row, col = index // cols, index % cols
    xs, ys = similarity[x_dim].values, similarity[y_dim].values
    dims = (*lead, "rank")
    return xr.Dataset(
        {
            "top_row": (dims, row),
            "top_col": (dims, col),
            "top_x": (dims, col.map_blocks(lambda c: xs[c], dtype=xs.dtype)),
            "top_y": (dims, row.map_blocks(lambda r: ys[r], dtype=ys.dtype)),
            "top_similarity": (dims, values),
        },
        coords={d: similarity[d] for d in lead if d in similarity.coords},
    )


def _extent(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float, float]:
    dx = float(xs[1] - xs[0]) if xs.size > 1 else 1.0
    dy = float(ys[1] - ys[0]) if ys.size > 1 else -1.0
    return (xs[0] - dx / 2, xs[-1] + dx / 2, ys[-1] + dy / 2, ys[0] - dy / 2)


def _describe(query: Any) -> str:
    if isinstance(query, (np.ndarray, list)) and np.asarray(query).size > 4:
        return f"an embedding vector of size {np.asarray(query).size}"
    text = repr(query)
    return text if len(text) < 80 else text[:77] + "..."
