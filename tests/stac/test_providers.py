"""Provider configurations in catalogs/: odc-stac stac_cfg form, sensors, lookups."""

from __future__ import annotations

import pytest

from xcsmoe.errors import ConfigError, MissingBandError, UnknownCollectionError
from xcsmoe.stac.providers import collection_config, list_providers, provider_config


def test_shipped_providers():
    assert {"planetary-computer", "earth-search", "sample"} <= set(list_providers())
    pc = provider_config("planetary-computer")
    assert pc.url.startswith("https://planetarycomputer")
    assert pc.collection("sentinel-1-rtc").units == "linear"
    cfg = pc.stac_cfg()["sentinel-2-l2a"]
    assert cfg["assets"]["B02"] == {"data_type": "uint16", "nodata": 0, "units": "1"}


def test_earth_search_maps_common_names_to_bands():
    es = provider_config("earth-search").collection("sentinel-2-l2a")
    assert es.asset_key("B8A") == "nir08" and es.asset_key("B11") == "swir16"
    assert es.missing_bands({"blue", "green"}, ("B02", "B03")) == []


def test_same_collection_id_resolved_by_assets():
    pc_assets = {"B02", "B03", "B04", "B08", "B05", "B06", "B07", "B11", "B12", "B8A"}
    es_assets = {"blue", "green", "red", "nir", "rededge1", "rededge2", "rededge3",
                 "swir16", "swir22", "nir08"}  # fmt: skip
    assert collection_config("sentinel-2-l2a", pc_assets).provider == "planetary-computer"
    assert collection_config("sentinel-2-l2a", es_assets).provider == "earth-search"


def test_unknown_provider_collection_and_band():
    with pytest.raises(ConfigError, match="planetary-computer"):
        provider_config("no-such-provider")
    with pytest.raises(UnknownCollectionError, match="sentinel-1-rtc"):
        collection_config("landsat-c2-l2", {"red"})
    with pytest.raises(MissingBandError, match="vh"):
        collection_config("sentinel-1-rtc", {"vv"}, bands=("vv", "vh"))
    with pytest.raises(UnknownCollectionError):
        provider_config("sample").collection("sentinel-2-l2a")


def test_unusable_collection_says_why():
    grd = provider_config("earth-search").collection("sentinel-1-grd")
    with pytest.raises(ConfigError, match="sentinel-1-rtc"):
        grd.check_usable()


def test_provider_from_yaml_path(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text(
        "provider: mine\nurl: null\ncollections:\n  s2:\n    sensor: s2\n"
        "    assets: {B02: {data_type: uint16, nodata: 0}}\n"
    )
    assert provider_config(good).collection("s2").sensor == "s2"
    bad = tmp_path / "bad.yaml"
    bad.write_text("collections:\n  x:\n    sensor: landsat\n")
    with pytest.raises(ConfigError, match="sensor"):
        provider_config(bad)
