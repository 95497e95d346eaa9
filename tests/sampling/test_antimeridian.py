"""The antimeridian and the poles: bboxes, grid regions, item footprints and lookups."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from xcsmoe.errors import InputError
from xcsmoe.sampling.archive import archive_from_items, majortom_archive
from xcsmoe.sampling.descriptors import majority_codes
from xcsmoe.sampling.lonlat import split_bbox, unwrap_geometry, wrap_lon
from xcsmoe.sampling.rasters import OK, koppen_geiger, modis_igbp

CHUKOTKA = (176.0, 64.0, -174.0, 67.0)  # land on both sides of 180°


def test_bbox_across_or_past_180_is_split_never_wrapped() -> None:
    assert sorted(split_bbox((170, 60, -170, 62))) == [(-180, 60, -170, 62), (170, 60, 180, 62)]
    assert sorted(split_bbox((170, 60, 190, 62))) == sorted(split_bbox((170, 60, -170, 62)))
    assert sorted(split_bbox((-190, 0, -170, 1))) == [(-180, 0, -170, 1), (170, 0, 180, 1)]
    assert split_bbox((-180, -90, 180, 90)) == [(-180, -90, 180, 90)]
    for bad, match in [
        ((0, 10, 1, 5), "south < north"),
        ((0, -95, 1, 0), "south < north"),
        ((-200, 0, 200, 1), "360"),
        ((0, 0, float("nan"), 1), "finite"),
    ]:
        with pytest.raises(InputError, match=match):
            split_bbox(bad)
    np.testing.assert_array_equal(wrap_lon([190, -190, 180, -180, 10]), [-170, 170, 180, -180, 10])


def test_majortom_region_across_the_antimeridian() -> None:
    across = majortom_archive(CHUKOTKA, spacing_km=25)
    east = majortom_archive((176.0, 64.0, 180.0, 67.0), spacing_km=25)
    west = majortom_archive((-180.0, 64.0, -174.0, 67.0), spacing_km=25)
    past = majortom_archive((176.0, 64.0, 186.0, 67.0), spacing_km=25)
    assert len(east) > 20 and len(west) > 20

    def places(frame):
        lon = frame["lon"].where(frame["lon"] < 180, -180.0)  # 180 and -180: one meridian
        return list(zip(lon.round(6), frame["lat"].round(6), strict=True))

    # the two sides, never the 350° between them; a cell centred on 180 counts once
    assert len(places(across)) == len(set(places(across))) == len(across)
    assert set(places(across)) == set(places(east)) | set(places(west))
    assert len(across) < len(east) + len(west)  # this box has cells centred on 180
    assert not across["lon"].between(-173.9, 175.9).any()
    assert across["lon"].between(-180, 180).all()
    assert sorted(past["sample_id"]) == sorted(across["sample_id"])


def test_items_across_the_antimeridian_are_centred_on_it() -> None:
    split = shapely.MultiPolygon(
        [shapely.box(179.0, -17.0, 180.0, -16.0), shapely.box(-180.0, -17.0, -179.0, -16.0)]
    )
    wrapped = {  # drawn with a jump from 179 to -179 between vertices
        "type": "Polygon",
        "coordinates": [[[179, -17], [-179, -17], [-179, -16], [179, -16], [179, -17]]],
    }
    past = shapely.box(179.0, -17.0, 181.0, -16.0)
    items = [
        {"id": "split", "geometry": shapely.geometry.mapping(split), "bbox": [179, -17, -179, -16]},
        {"id": "wrapped", "geometry": wrapped, "bbox": [179, -17, -179, -16]},
        {"id": "past", "geometry": shapely.geometry.mapping(past)},
        {"id": "bbox-only", "geometry": None, "bbox": [179, -17, -179, -16]},
    ]
    archive = archive_from_items(items)
    assert len(archive) == 4
    centres = archive[["lon", "lat"]].to_numpy()
    assert np.allclose(np.abs(centres[:, 0]), 180.0) and np.allclose(centres[:, 1], -16.5)
    for footprint in archive.geometry:
        assert footprint.area == pytest.approx(2.0)
        assert footprint.bounds[0] >= -180 and footprint.bounds[2] <= 180
        assert unwrap_geometry(footprint).bounds == pytest.approx((179, -17, 181, -16))


def test_majority_of_a_split_footprint_equals_the_unwrapped_one() -> None:
    modis = modis_igbp()
    split = shapely.MultiPolygon(
        [shapely.box(179.5, 66.0, 180.0, 66.6), shapely.box(-180.0, 66.0, -179.2, 66.6)]
    )
    codes, status = majority_codes(modis, np.array([split]), max_per_side=16)
    # the same footprint as points on both sides of 180°
    lon = np.concatenate([np.linspace(179.525, 179.975, 10), np.linspace(-179.975, -179.225, 16)])
    grid_lon, grid_lat = np.meshgrid(lon, np.linspace(66.025, 66.575, 12))
    found, ok = modis.lookup(grid_lon.ravel(), grid_lat.ravel())
    values, counts = np.unique(found[ok == OK], return_counts=True)
    assert status[0] == OK and codes[0] == values[np.argmax(counts)]


def test_lon_180_and_the_poles_are_inside_the_rasters() -> None:
    lon = np.array([180.0, -180.0, 0.0, 0.0, 179.999999, 60.0])
    lat = np.array([66.0, 66.0, -90.0, 90.0, -90.0, -90.0])
    for raster in (modis_igbp(), koppen_geiger()):
        rows, cols = raster.pixel_index(lon, lat)
        assert (rows >= 0).all() and (cols >= 0).all()
        assert cols[0] == raster.shape[1] - 1 and cols[1] == 0
        assert rows[2] == raster.shape[0] - 1 and rows[3] == 0
    # a mosaic tile owns only its west/north edges
    rows, _ = modis_igbp().pixel_index(lon, lat, closed=False)
    assert rows[2] == -1
    codes, status = koppen_geiger().lookup(np.array([0.0]), np.array([-90.0]))
    assert status[0] == OK and koppen_geiger().label(codes)[0] == "EF"  # Antarctic ice cap
