"""The offline sample catalog around the six BigEarthNet S1/S2 patches."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pystac
import rasterio
from odc.geo.geom import box

from xcsmoe.cli import main
from xcsmoe.stac.sample_catalog import S1_COLLECTION, S2_COLLECTION, example_catalog


def _path(href: str) -> Path:
    return Path(urlparse(href).path)


def test_collections_items_and_extensions(sample_catalog, sample_items):
    assert {c.id for c in sample_catalog.get_all_collections()} == {S2_COLLECTION, S1_COLLECTION}
    assert len(sample_items["s2"]) == len(sample_items["s1"]) == 6
    for item in sample_items["s2"] + sample_items["s1"]:
        exts = " ".join(item.stac_extensions)
        assert "projection" in exts and "raster" in exts
        assert ("eo" in exts) if item.collection_id == S2_COLLECTION else ("sar" in exts)
        for asset in item.assets.values():
            assert asset.href.startswith("file://") and _path(asset.href).is_file()


def test_native_resolutions_are_kept(sample_items):
    item = sample_items["s2"][0]
    shapes = {k: tuple(a.extra_fields["proj:shape"]) for k, a in item.assets.items()}
    assert shapes["B02"] == (120, 120) and shapes["B05"] == (60, 60) and shapes["B01"] == (20, 20)
    with rasterio.open(_path(item.assets["B05"].href)) as src:
        assert list(src.transform)[:6] == item.assets["B05"].extra_fields["proj:transform"]
    raster = item.assets["B02"].extra_fields["raster:bands"][0]
    assert raster["data_type"] == "uint16" and raster["nodata"] == 0
    assert item.properties["s2:processing_baseline"].startswith("02.")


def test_each_s1_item_covers_its_s2_partner(sample_items):
    for s2, s1 in zip(sample_items["s2"], sample_items["s1"], strict=True):
        assert s1.properties["bigearthnet:s2_patch"] == s2.id
        assert s1.properties["proj:code"] == s2.properties["proj:code"]
        crs = s2.properties["proj:code"]
        grids = []
        for item, key in ((s2, "B02"), (s1, "vv")):
            t = item.assets[key].extra_fields["proj:transform"]
            h, w = item.assets[key].extra_fields["proj:shape"]
            grids.append(box(t[2], t[5] + t[4] * h, t[2] + t[0] * w, t[5], crs))
        assert grids[1].contains(grids[0])
        assert abs((s1.datetime - s2.datetime).total_seconds()) < 86400 * 2


def test_example_catalog_is_idempotent(sample_catalog):
    root = Path(sample_catalog.self_href).parent
    before = (root / "catalog.json").stat().st_mtime_ns
    again = example_catalog(root)
    assert isinstance(again, pystac.Catalog)
    assert (root / "catalog.json").stat().st_mtime_ns == before


def test_cli_build(tmp_path, capsys):
    assert main(["catalog", "build", "--out", str(tmp_path / "cat")]) == 0
    assert (tmp_path / "cat" / "catalog.json").is_file()
    assert "catalog.json" in capsys.readouterr().out
