"""Bad inputs fail early with the error class and message the user can act on."""

from __future__ import annotations

import socket
import time

import pytest

from xcsmoe.errors import ConfigError, CRSError, GridError, MissingBandError, StacConnectionError
from xcsmoe.stac.load import load_cube
from xcsmoe.stac.plan import plan_cube
from xcsmoe.stac.search import search


def test_missing_band_names_item_and_band(sample_items):
    item = sample_items["s2"][0].clone()
    del item.assets["B8A"]
    with pytest.raises(MissingBandError, match=r"B8A") as info:
        load_cube([item])
    assert item.id in str(info.value)
    # nothing lost: the other bands still load when asked for
    ds = load_cube([item], bands=["B02", "B11"])
    assert list(ds.data_vars) == ["B02", "B11"]


def test_unknown_band_name(sample_items):
    with pytest.raises(MissingBandError, match="B99"):
        load_cube([sample_items["s2"][0]], bands=["B02", "B99"])


def test_s1_and_s2_that_do_not_overlap(sample_items):
    with pytest.raises(GridError, match="s1_items"):
        load_cube([sample_items["s2"][0]], [sample_items["s1"][1]])


def test_mixed_crs_needs_a_target_crs(sample_items):
    items = [sample_items["s2"][0], sample_items["s2"][1]]
    with pytest.raises(CRSError, match="crs=") as info:
        load_cube(items)
    assert "32633" in str(info.value) and "32629" in str(info.value)
    plan = plan_cube(items, None, crs="EPSG:3035", resolution=1000)
    assert plan.geobox.crs.epsg == 3035 and len(plan.s2.items) == 2


def test_geographic_target_crs_is_refused(sample_items):
    with pytest.raises(CRSError, match="projected"):
        load_cube([sample_items["s2"][0]], crs="EPSG:4326", resolution=0.0001)


def test_bbox_outside_all_items(sample_items):
    with pytest.raises(GridError, match="bbox"):
        load_cube([sample_items["s2"][0]], bbox=(0.0, 0.0, 1.0, 1.0))
    with pytest.raises(GridError, match="bbox"):
        load_cube([sample_items["s2"][0]], bbox=(1.0, 0.0, 0.0, 1.0))


def test_unknown_provider_and_bad_options(sample_items):
    with pytest.raises(ConfigError, match="provider"):
        load_cube([sample_items["s2"][0]], provider="no-such-provider")
    with pytest.raises(ConfigError, match="groupby"):
        load_cube([sample_items["s2"][0]], groupby="weekly")
    with pytest.raises(ConfigError, match="chunks"):
        load_cube([sample_items["s2"][0]], chunks={"x": 0})
    with pytest.raises(ConfigError, match="at least one"):
        load_cube([], [])


def test_unreachable_api_times_out():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(StacConnectionError, match="timeout"):
            search(url, timeout=0.5)
        assert time.monotonic() - start < 10


def test_refused_api():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StacConnectionError, match=str(port)):
        search(f"http://127.0.0.1:{port}", timeout=1)
