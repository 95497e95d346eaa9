"""Patch stores from real published layouts: Major TOM Core cells and SSL4EO-S12."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr

from xcsmoe.pretraining.patch_store import build_patch_store
from xcsmoe.pretraining.readers import majortom_tiles, read_majortom, read_ssl4eo, ssl4eo_tiles
from xcsmoe.sensors import S2


@pytest.fixture(scope="module")
def real_dir(shared_dir):
    path = shared_dir / "fixtures" / "real"
    if not path.is_dir():
        pytest.skip(f"real imagery not found at {path}")
    return path


def _read(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_majortom_store_holds_exactly_the_valid_patches(real_dir, threaded_client, tmp_path):
    root = real_dir / "major-tom-core"
    tiles = majortom_tiles(root)
    assert [t.tile_id for t in tiles] == ["0U_199R", "199U_1099R"]
    assert [t.s2_offset for t in tiles] == [-1000.0, 0.0]  # baseline 04.00 vs N9999
    patch = 120
    report = build_patch_store(
        tiles, tmp_path / "mt.zarr", patch_size=patch, require_pairs=False,
        client=threaded_client, progress=False,
    )  # fmt: skip
    ds = xr.open_zarr(tmp_path / "mt.zarr")
    expected = {}
    for product in sorted(root.glob("S2L2A/*/*/*")):
        bands = []
        for band in S2.bands:
            raw = _read(product / f"{band}.tif")
            factor = 1068 // raw.shape[0]
            bands.append(raw.repeat(factor, axis=0).repeat(factor, axis=1))
        stack = np.stack(bands)
        for row in range(1068 // patch):
            for col in range(1068 // patch):
                win = stack[:, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch]
                if (win != 0).all():
                    expected[(product.parent.name, row, col)] = win
    assert report.patches == ds.sizes["patch"] == len(expected)
    assert report.discarded_invalid == 2 * 64 - len(expected)
    assert report.discarded_partial == 2 * (9 * 9 - 8 * 8)
    assert ds["has_s2"].values.all() and not ds["has_s1"].values.any()
    assert np.isnan(ds["s1"].values).all()
    for tile in tiles:
        sel = np.flatnonzero(ds["tile_id"].values == tile.tile_id)
        a = tile.geobox.affine
        for i in sel:
            t = ds["transform"].values[i]
            row, col = round((a.f - t[5]) / 10 / patch), round((t[2] - a.c) / 10 / patch)
            np.testing.assert_array_equal(ds["s2"].values[i], expected[(tile.tile_id, row, col)])
        assert (ds["s2_offset"].values[sel] == tile.s2_offset).all()
        assert (ds["crs"].values[sel] == str(tile.geobox.crs)).all()
    assert 0 <= ds["lat"].values[ds["tile_id"].values == "0U_199R"].mean() < 1  # row 0U: equator


def test_majortom_cube_follows_the_load_cube_convention(real_dir):
    cube = read_majortom(real_dir / "major-tom-core", cells=["199U_1099R"])["199U_1099R"]
    assert list(cube.data_vars) == list(S2.bands)
    assert cube.sizes == {"time": 1, "y": 1068, "x": 1068}
    assert cube["B02"].dtype == np.float32 and float(cube["s2_offset"][0]) == 0.0
    window = cube.isel(y=slice(0, 40), x=slice(0, 40)).compute()
    product = next((real_dir / "major-tom-core").glob("S2L2A/*/199U_1099R/*"))
    np.testing.assert_array_equal(window["B02"].values[0], _read(product / "B02.tif")[:40, :40])
    np.testing.assert_array_equal(
        window["B11"].values[0], _read(product / "B11.tif")[:20, :20].repeat(2, 0).repeat(2, 1)
    )


def _centre_oracle(path, geobox) -> np.ndarray:
    """Nearest-neighbour by hand: the source pixel under each grid pixel's centre."""
    with rasterio.open(path) as src:
        raw, inv = src.read(1), ~src.transform
    a = geobox.affine
    cols, rows = np.meshgrid(np.arange(geobox.shape.x) + 0.5, np.arange(geobox.shape.y) + 0.5)
    x, y = a.c + a.a * cols, a.f + a.e * rows
    sc, sr = inv * (x, y)
    sr, sc = np.floor(sr).astype(int), np.floor(sc).astype(int)
    inside = (sr >= 0) & (sr < raw.shape[0]) & (sc >= 0) & (sc < raw.shape[1])
    out = np.full(geobox.shape, np.nan, dtype=np.float64)
    out[inside] = raw[sr[inside], sc[inside]]
    return out


def test_ssl4eo_store_holds_exactly_the_valid_patches(real_dir, threaded_client, tmp_path):
    root = real_dir / "ssl4eo-s12"
    tiles = ssl4eo_tiles(root)
    assert [t.tile_id for t in tiles] == ["0000200/0", "0000200/1"]
    patch = 120
    report = build_patch_store(
        tiles, tmp_path / "ssl.zarr", patch_size=patch, client=threaded_client, progress=False
    )
    ds = xr.open_zarr(tmp_path / "ssl.zarr")
    kept = 0
    for tile in tiles:
        scene = root / "s2a" / "0000200" / tile.item_s2
        s1_scene = root / "s1" / "0000200" / tile.item_s1
        b2 = _read(scene / "B2.tif")
        vv = _centre_oracle(s1_scene / "VV.tif", tile.geobox)
        sel = np.flatnonzero(ds["tile_id"].values == tile.tile_id)
        for row in range(264 // patch):
            for col in range(264 // patch):
                win = np.s_[row * patch : (row + 1) * patch, col * patch : (col + 1) * patch]
                if not ((b2[win] != 0).all() and np.isfinite(vv[win]).all()):
                    continue
                kept += 1
                t = tile.geobox.affine
                i = next(
                    i for i in sel
                    if np.isclose(ds["transform"].values[i][2], t.c + t.a * col * patch)
                    and np.isclose(ds["transform"].values[i][5], t.f + t.e * row * patch)
                )  # fmt: skip
                np.testing.assert_array_equal(ds["s2"].values[i][0], b2[win])
                linear = 10.0 ** (vv[win] / 10.0)
                agree = np.isclose(ds["s1"].values[i][0], linear, rtol=1e-5)
                assert agree.mean() > 0.99  # nearest neighbour up to ties on pixel edges
        assert (ds["item_s1"].values[sel] == tile.item_s1).all()
    assert report.patches == ds.sizes["patch"] == kept == 8
    assert ds["crs"].values[0] == "EPSG:4326"
    assert 73.29 < ds["lon"].values.mean() < 73.32 and 30.45 < ds["lat"].values.mean() < 30.48
    cube = read_ssl4eo(root)["0000200/0"]
    assert {"vv", "vh", *S2.bands} == set(cube.data_vars)
    assert float(cube["vv"].isel(time=0, latitude=100, longitude=100)) > 0  # linear power
