"""Archives from STAC items and from the Major TOM grid."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pystac
import pytest
import shapely

from xcsmoe.errors import InputError, SamplingError
from xcsmoe.sampling.archive import archive_from_items, majortom_archive

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "stac"


def _item(item_id: str, west: float, south: float, east: float, north: float) -> pystac.Item:
    geometry = shapely.geometry.mapping(shapely.box(west, south, east, north))
    return pystac.Item(item_id, geometry, [west, south, east, north], dt.datetime(2020, 1, 1), {})


def test_archive_from_pystac_items_and_dicts() -> None:
    items = [_item("a", 0, 0, 2, 2), _item("b", 10, 40, 11, 42)]
    archive = archive_from_items(pystac.ItemCollection(items))
    assert list(archive.columns) == ["sample_id", "geometry", "lon", "lat"]
    assert archive.crs.to_epsg() == 4326
    assert archive["sample_id"].tolist() == ["a", "b"]
    np.testing.assert_allclose(archive[["lon", "lat"]].to_numpy(), [[1, 1], [10.5, 41]])
    as_dicts = archive_from_items(
        {"type": "FeatureCollection", "features": [i.to_dict() for i in items]}
    )
    assert as_dicts["sample_id"].tolist() == ["a", "b"]
    bbox_only = archive_from_items([{"id": "c", "bbox": [5, 5, 7, 9], "geometry": None}])
    assert bbox_only.geometry.iloc[0].area == pytest.approx(8.0)


def test_invalid_geometries_raise_or_are_counted() -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}
    items = [
        _item("ok", 0, 0, 1, 1).to_dict(),
        {"id": "bowtie", "geometry": bowtie, "bbox": [0, 0, 2, 2]},
        {"id": "nothing", "geometry": None},
        {"id": "off-earth", "geometry": shapely.geometry.mapping(shapely.box(170, 80, 200, 95))},
    ]
    with pytest.raises(SamplingError, match=r"3 unusable.*bowtie"):
        archive_from_items(items)
    archive = archive_from_items(items, on_invalid="drop")
    assert archive["sample_id"].tolist() == ["ok"]
    assert archive.attrs["summary"]["dropped"] == {
        "invalid": 1,
        "missing": 1,
        "outside lon/lat range": 1,
    }


def test_empty_and_wrong_inputs() -> None:
    with pytest.raises(SamplingError, match="at least one STAC item"):
        archive_from_items([])
    with pytest.raises(InputError, match="pystac Items"):
        archive_from_items(42)
    with pytest.raises(InputError, match="on_invalid"):
        archive_from_items([_item("a", 0, 0, 1, 1)], on_invalid="ignore")


@pytest.mark.skipif(not FIXTURES.exists(), reason="real STAC fixtures not in this checkout")
def test_real_stac_item_fixtures() -> None:
    from xcsmoe.sampling.cli import read_items

    archive = archive_from_items(read_items([str(p) for p in sorted(FIXTURES.glob("*.json"))]))
    assert len(archive) == 10 and archive["lon"].between(-180, 180).all()


def test_majortom_grid_over_a_region_keeps_land_only() -> None:
    land = majortom_archive((0.0, 44.0, 4.0, 46.0))  # southern France
    everything = majortom_archive((0.0, 44.0, 4.0, 46.0), land_only=False)
    assert len(land) == len(everything) > 500  # no water in this box
    coast = majortom_archive((-6.0, 43.0, -1.0, 45.0))  # Bay of Biscay and northern Spain
    summary = coast.attrs["summary"]
    assert (
        summary["water"] > 0
        and summary["kept"] == len(coast) == summary["grid_cells"] - summary["water"]
    )
    # cells are ~10 km apart and their centres lie inside the region
    assert coast["sample_id"].is_unique
    assert coast["lon"].between(-6, -1).all() and coast["lat"].between(43, 45).all()
    lat_step = np.diff(np.unique(coast["lat"].round(6)))
    assert np.median(lat_step) * 111.2 == pytest.approx(10.0, rel=0.01)


def test_majortom_bad_regions() -> None:
    with pytest.raises(InputError, match="region"):
        majortom_archive("europe")
    with pytest.raises(SamplingError, match="at least one grid cell"):
        majortom_archive((-150.0, -1.0, -149.0, 0.0))  # open ocean
    with pytest.raises(InputError, match="spacing_km"):
        majortom_archive((0, 0, 1, 1), spacing_km=0)
