"""search() over the static sample catalog and over a real STAC API on loopback."""

from __future__ import annotations

import numpy as np
import pytest

from xcsmoe.errors import ConfigError, EmptySearchError, UnknownCollectionError
from xcsmoe.stac.load import load_cube
from xcsmoe.stac.sample_catalog import S1_COLLECTION, S2_COLLECTION
from xcsmoe.stac.search import search

AUSTRIA = [13.6, 48.1, 13.8, 48.3]  # patch 87_48 (UTM 33N)


@pytest.fixture(params=["static", "api"])
def source(request, sample_catalog):
    if request.param == "api":
        return request.getfixturevalue("stac_api_url")
    return sample_catalog


def test_collections_and_bbox(source):
    items = search(source, collections=[S2_COLLECTION, S1_COLLECTION], bbox=AUSTRIA)
    assert sorted(i.collection_id for i in items) == [S1_COLLECTION, S2_COLLECTION]
    assert len(search(source)) == 12


def test_datetime_cloud_cover_and_max_items(source):
    june = search(source, collections=S2_COLLECTION, datetime="2017-06-01/2017-06-30")
    assert len(june) == 3
    assert len(search(source, datetime="2017-06-17")) == 4  # 2 S2 + 2 S1 that day
    clear = search(source, collections=S2_COLLECTION, max_cloud_cover=10)
    assert all(i.properties["eo:cloud_cover"] <= 10 for i in clear)
    assert len(search(source, collections=S2_COLLECTION, max_items=2)) == 2
    query = {"s2:mgrs_tile": {"eq": "33UUP"}}
    assert [i.id for i in search(source, query=query)] == ["S2A_MSIL2A_20170613T101031_87_48"]


def test_intersects(source):
    point = {"type": "Point", "coordinates": [13.72, 48.22]}
    assert {i.collection_id for i in search(source, intersects=point)} == {
        S1_COLLECTION,
        S2_COLLECTION,
    }


def test_empty_and_unknown(source):
    with pytest.raises(EmptySearchError, match="bbox"):
        search(source, bbox=[0, 0, 1, 1])
    with pytest.raises(UnknownCollectionError, match=S2_COLLECTION):
        search(source, collections="sentinel-2-l2a")


def test_bad_arguments(sample_catalog):
    with pytest.raises(ConfigError, match="query"):
        search(sample_catalog, query={"eo:cloud_cover": {"approx": 3}})
    with pytest.raises(ConfigError, match="source"):
        search("/no/such/catalog")
    with pytest.raises(ConfigError, match="datetime"):
        search(sample_catalog, datetime="not a date")


def test_static_catalog_path(sample_catalog):
    assert len(search(sample_catalog.self_href, collections=S1_COLLECTION)) == 6


def test_api_items_load_like_static_ones(stac_api_url, sample_catalog):
    found = search(stac_api_url, bbox=AUSTRIA)
    s2 = [i for i in found if i.collection_id == S2_COLLECTION]
    s1 = [i for i in found if i.collection_id == S1_COLLECTION]
    api_cube = load_cube(s2, s1)
    static = search(sample_catalog, bbox=AUSTRIA)
    static_cube = load_cube(list(static))  # one mixed list, split by collection
    assert api_cube.odc.geobox == static_cube.odc.geobox
    np.testing.assert_array_equal(api_cube.to_array().values, static_cube.to_array().values)
