"""Real Planetary Computer / Earth Search items: band mapping, storage, grid planning.

Planning and lazy loading never open the (unreachable) cloud hrefs; where pixels are
needed, hrefs are rewritten to small local GeoTIFFs on the items' own grid.
"""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pystac
import pytest
import rasterio
from odc.stac import parse_items
from rasterio.transform import Affine

from xcsmoe.errors import ConfigError
from xcsmoe.sensors import S1, S2
from xcsmoe.stac.load import load_cube
from xcsmoe.stac.plan import plan_cube


def _items(folder, name: str) -> list[pystac.Item]:
    data = json.loads((folder / name).read_text())
    return [pystac.Item.from_dict(d) for d in (data if isinstance(data, list) else [data])]


@pytest.fixture(scope="module")
def pc_s2(stac_fixtures_dir):
    return _items(stac_fixtures_dir, "planetary-computer-sentinel-2-l2a.json")


@pytest.fixture(scope="module")
def pc_s1(stac_fixtures_dir):
    return _items(stac_fixtures_dir, "planetary-computer-sentinel-1-rtc.json")


def _epsg(item: pystac.Item) -> int:
    return int(item.properties["proj:code"].split(":")[1])  # pystac migrates proj:epsg


def _inner_bbox(item: pystac.Item, size: float = 0.02) -> tuple[float, ...]:
    west, south, east, north = item.bbox
    x, y = (west + east) / 2, (south + north) / 2
    return (x - size, y - size / 2, x + size, y + size / 2)


def test_pc_s2_mapping_storage_and_offset(pc_s2):
    plan = plan_cube(pc_s2[:1], None, bbox=_inner_bbox(pc_s2[0]))
    assert plan.s2.config.provider == "planetary-computer"
    parsed = next(parse_items(pc_s2[:1], cfg=plan.s2.stac_cfg))
    meta = parsed.collection
    for band in S2.bands:
        info = meta.bands[meta.band_key(band)]
        assert (info.data_type, info.nodata) == ("uint16", 0)
    assert plan.geobox.crs.epsg == _epsg(pc_s2[0])
    assert plan.geobox.resolution.x == 10
    assert plan.s2_offsets.tolist() == [-1000.0]  # baseline 05.10


def test_pc_s2_lazy_cube(pc_s2):
    bbox = _inner_bbox(pc_s2[0], size=0.1)
    ds = load_cube(pc_s2[:1], bbox=bbox, chunks={"x": 112, "y": 112})
    assert list(ds.data_vars) == list(S2.bands)
    assert all(isinstance(ds[v].data, da.Array) and ds[v].dtype == np.float32 for v in ds)
    assert ds.B05.data.chunksize[1:] == (112, 112)
    assert ds.s2_offset.values.tolist() == [-1000.0]


def test_pc_raster_extension_and_earth_search_v0(stac_fixtures_dir):
    (pc,) = _items(stac_fixtures_dir, "planetary-computer-sentinel-2-l2a-raster-ext.json")
    (es,) = _items(stac_fixtures_dir, "earth-search-v0-sentinel-2-l2a.json")
    pc_plan = plan_cube([pc], None, bbox=_inner_bbox(pc))
    assert pc_plan.s2_offsets.tolist() == [0.0]  # baseline 02.12
    es_plan = plan_cube([es], None, bbox=_inner_bbox(es))
    assert es_plan.s2.config.provider == "earth-search"
    assert es_plan.geobox.crs.epsg == 32628
    ds = load_cube([es], bbox=_inner_bbox(es))
    assert ds.B8A.dtype == np.float32 and ds.odc.geobox == es_plan.geobox


def test_earth_search_v1_common_names(pc_s2):
    item = pc_s2[0].clone()
    names = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B05": "rededge1",
             "B06": "rededge2", "B07": "rededge3", "B11": "swir16", "B12": "swir22",
             "B8A": "nir08"}  # fmt: skip
    item.assets = {names.get(k, k): a for k, a in item.assets.items()}
    plan = plan_cube([item], None, bbox=_inner_bbox(item))
    assert plan.s2.config.provider == "earth-search"
    ds = load_cube([item], bbox=_inner_bbox(item))
    assert list(ds.data_vars) == list(S2.bands)


def test_unusable_s1_collection_is_refused(pc_s1):
    item = pc_s1[0].clone()
    item.collection_id = "sentinel-1-grd"
    with pytest.raises(ConfigError, match="sentinel-1-rtc"):
        load_cube(None, [item], bbox=_inner_bbox(item))


def test_pc_s1_pixels_from_local_copy(pc_s1, tmp_path):
    item = pc_s1[0]
    t = item.properties["proj:transform"]
    rng = np.random.default_rng(0)
    local = {}
    for pol in ("vv", "vh"):
        data = rng.uniform(0.001, 0.5, (256, 256)).astype(np.float32)
        data[:8, :8] = -32768  # the collection's nodata
        path = tmp_path / f"{pol}.tif"
        profile = dict(driver="GTiff", width=256, height=256, count=1, dtype="float32",
                       crs=f"EPSG:{_epsg(item)}", nodata=-32768,
                       transform=Affine(t[0], t[1], t[2], t[3], t[4], t[5]))  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
        local[pol] = (path, data)
    patch = lambda href: str(local["vv" if "vv" in href.rsplit("/", 1)[-1] else "vh"][0])  # noqa: E731
    from odc.geo.geobox import GeoBox

    geobox = GeoBox((256, 256), Affine(t[0], t[1], t[2], t[3], t[4], t[5]),
                    f"EPSG:{_epsg(item)}")  # fmt: skip
    ds = load_cube(None, [item], geobox=geobox, patch_url=patch).compute()
    assert list(ds.data_vars) == list(S1.bands) and ds.vv.attrs["units"] == "linear power"
    for pol in ("vv", "vh"):
        expected = local[pol][1].copy()
        expected[:8, :8] = np.nan
        np.testing.assert_array_equal(ds[pol].isel(time=0).values, expected)
