"""``ds.csmoe.similar``: lazy, chunk-invariant similarity maps on embed's grids."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

import xcsmoe
from xcsmoe.errors import GridError, InputError
from xcsmoe.sensors import S1, S2

KW = {"model": "csmoe_tiny", "weights": "random", "normalise": False, "device": "cpu"}


def _cube(chunks: int | None, height: int = 128, width: int = 192) -> xr.Dataset:
    geobox = GeoBox.from_bbox(
        (600_000, 5_100_000, 600_000 + 10 * width, 5_100_000 + 10 * height),
        "EPSG:32633",
        resolution=10,
    )
    rng = np.random.default_rng(0)
    coords = dict(xr_coords(geobox))
    coords["time"] = pd.date_range("2021-06-01", periods=1).values
    data = {
        b: (("time", "y", "x"), rng.standard_normal((1, height, width), dtype=np.float32))
        for b in S1.bands + S2.bands
    }
    ds = xr.Dataset(data, coords=coords)
    return ds.chunk({"time": 1, "y": chunks, "x": chunks}) if chunks else ds


def _geobox(array: xr.DataArray):
    return array.rename(cls_y="y", cls_x="x").odc.geobox


def test_window_query_is_lazy_chunk_invariant_and_on_the_cls_grid():
    cube = _cube(64)
    emb = xcsmoe.embed(cube, 16, **KW)
    result = cube.csmoe.similar({"row": 1, "col": 2}, k=3, embeddings=emb)
    assert isinstance(result["similarity"].data, da.Array)
    assert isinstance(result["top_row"].data, da.Array)
    assert _geobox(result["similarity"]) == _geobox(emb["cls"])
    values = result.compute()
    assert values["similarity"].isel(time=0, cls_y=1, cls_x=2) == pytest.approx(1.0, abs=1e-5)
    assert (values["top_row"].values[0, 0], values["top_col"].values[0, 0]) == (1, 2)
    assert values["top_x"].values[0, 0] == float(emb["cls_x"][2])
    assert (np.diff(values["top_similarity"].values[0]) <= 0).all()
    # direct cosine similarity of the computed cls vectors
    cls = emb["cls"].values[0]  # (D, rows, cols)
    q = cls[:, 1, 2]
    direct = np.einsum("dyx,d->yx", cls, q) / (np.linalg.norm(cls, axis=0) * np.linalg.norm(q))
    np.testing.assert_allclose(values["similarity"].values[0], direct, rtol=1e-5, atol=1e-6)
    other = _cube(128).csmoe.similar({"row": 1, "col": 2}, patch=16, **KW).compute()
    np.testing.assert_allclose(other["similarity"].values, values["similarity"].values, atol=1e-6)


def test_point_lonlat_vector_and_token_queries():
    cube = _cube(64)
    emb = xcsmoe.embed(cube, 16, **KW)
    x, y = float(cube.x[70]), float(cube.y[10])  # inside window (0, 1)
    by_point = cube.csmoe.similar((x, y), embeddings=emb).compute()
    by_index = cube.csmoe.similar({"row": 0, "col": 1}, embeddings=emb).compute()
    np.testing.assert_array_equal(by_point["similarity"].values, by_index["similarity"].values)
    lon, lat = cube.odc.geobox.extent.centroid.to_crs("EPSG:4326").coords[0]
    centre = cube.csmoe.similar({"lon": lon, "lat": lat}, embeddings=emb).compute()
    assert np.nanmax(centre["similarity"].values) == pytest.approx(1.0, abs=1e-5)
    vector = emb["cls"].values[0, :, 1, 0]
    by_vector = cube.csmoe.similar(vector, embeddings=emb).compute()
    assert float(by_vector["similarity"][0, 1, 0]) == pytest.approx(1.0, abs=1e-5)
    tokens = cube.csmoe.similar(
        (x, y), grid="tokens", embeddings=xcsmoe.embed(cube, 16, output=("tokens",), **KW)
    )
    assert tokens["similarity"].odc.geobox == cube.odc.geobox.zoom_out(16)
    assert float(tokens["similarity"].isel(time=0, y=0, x=4)) == pytest.approx(1.0, abs=1e-5)


def test_similar_bad_queries():
    cube = _cube(64)
    emb = xcsmoe.embed(cube, 16, **KW)
    with pytest.raises(GridError, match="a point inside the cube"):
        cube.csmoe.similar((0.0, 0.0), embeddings=emb)
    with pytest.raises(GridError, match="inside the cube"):
        cube.csmoe.similar({"lon": -60.0, "lat": 10.0}, embeddings=emb)
    with pytest.raises(GridError, match="window index"):
        cube.csmoe.similar({"row": 5, "col": 0}, embeddings=emb)
    with pytest.raises(InputError, match="embedding vector of size 128"):
        cube.csmoe.similar(np.ones(7), embeddings=emb)
    with pytest.raises(InputError, match="k"):
        cube.csmoe.similar({"row": 0, "col": 0}, k=7, embeddings=emb)


def test_similarity_png(tmp_path):
    from xcsmoe.embedding.similar import plot_similarity

    cube = _cube(None)
    result = cube.csmoe.similar({"row": 0, "col": 0}, k=2, patch=16, **KW).compute()
    path = plot_similarity(result, cube, tmp_path / "similar.png")
    assert path.stat().st_size > 5_000
