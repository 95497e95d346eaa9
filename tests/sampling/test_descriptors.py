"""Descriptor lookups at known places, custom rasters, and drops that are counted."""

from __future__ import annotations

import datetime as dt

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
import rioxarray  # noqa: F401
import xarray as xr
from rasterio.transform import from_origin

from xcsmoe.errors import CRSError, InputError, SamplingError
from xcsmoe.sampling.archive import frame_from_bounds
from xcsmoe.sampling.descriptors import add_descriptors
from xcsmoe.sampling.rasters import NODATA, OK, OUTSIDE, as_raster, koppen_geiger, modis_igbp

PLACES = {  # name: (lon, lat, Köppen–Geiger zone or None for ocean, IGBP class)
    "Sahara (Algeria)": (5.0, 26.0, "BWh", "Barren"),
    "Amazon (Brazil)": (-62.0, -3.5, "Af", "Evergreen broadleaf forest"),
    "Paris (France)": (2.35, 48.85, "Cfb", "Urban and built-up"),
    "Pacific Ocean": (-150.0, 0.0, None, "Water"),
    "Lake Superior": (-87.5, 47.6, "Dfb", "Water"),
}


def _points(coords: list[tuple[float, float]], half: float = 0.04) -> gpd.GeoDataFrame:
    lon, lat = np.array(coords, dtype=float).T
    bounds = np.stack([lon - half, lat - half, lon + half, lat + half], axis=1)
    return frame_from_bounds(np.array([f"s{i}" for i in range(len(lon))], dtype=object), bounds)


@pytest.mark.parametrize("name", list(PLACES))
def test_default_rasters_at_known_places(name: str) -> None:
    lon, lat, zone, landcover = PLACES[name]
    climate = koppen_geiger()
    codes, status = climate.lookup(np.array([lon]), np.array([lat]))
    if zone is None:
        assert status[0] == NODATA  # open ocean is not a climate zone
    else:
        assert status[0] == OK and climate.label(codes)[0] == zone
    igbp = modis_igbp()
    codes, status = igbp.lookup(np.array([lon]), np.array([lat]))
    assert status[0] == OK and igbp.label(codes)[0] == landcover


def test_add_descriptors_labels_strata_and_counts_ocean() -> None:
    places = [PLACES[n][:2] for n in PLACES]
    described = add_descriptors(_points(places))
    summary = described.attrs["summary"]["descriptors"]
    assert summary["input"] == 5 and summary["kept"] == 4 and summary["climate_nodata"] == 1
    assert list(described["sample_id"]) == ["s0", "s1", "s2", "s4"]
    assert list(described["climate"].astype(str)) == ["BWh", "Af", "Cfb", "Dfb"]
    assert described["stratum"].astype(str).iloc[1] == "Af | Evergreen broadleaf forest"


def test_centre_lookup_is_fast_for_a_million_points() -> None:
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-180, 180, 1_000_000), rng.uniform(-60, 80, 1_000_000)
    codes, status = modis_igbp().lookup(lon, lat)
    assert codes.shape == (1_000_000,) and (status == OK).mean() > 0.99


def _small_raster(crs: str | None = "EPSG:4326") -> xr.DataArray:
    """4 × 4 pixels of 1° over lon 10..14, lat 50..46; code 9 is nodata."""
    data = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 9, 9], [3, 3, 9, 9]], dtype=np.uint8)
    array = xr.DataArray(
        data, dims=("y", "x"), coords={"y": 49.5 - np.arange(4), "x": 10.5 + np.arange(4)}
    )
    if crs:
        array = array.rio.write_crs(crs).rio.write_nodata(9)
    return array


def test_points_outside_a_custom_raster_are_dropped_and_counted() -> None:
    archive = _points([(10.5, 49.5), (12.5, 49.5), (12.5, 46.5), (30.0, 10.0), (-5.0, 48.0)])
    described = add_descriptors(
        archive,
        climate=_small_raster(),
        landcover=_small_raster(),
        climate_classes={1: "one", 2: "two", 3: "three"},
    )
    summary = described.attrs["summary"]["descriptors"]
    assert summary["climate_outside"] == 2 and summary["climate_nodata"] == 1
    assert summary["dropped"] == 3 and len(described) == 2
    assert list(described["climate"].astype(str)) == ["one", "two"]
    assert list(described["landcover"].astype(str)) == ["1", "2"]  # codes when no names


def test_raster_from_a_geotiff_path_in_another_crs(tmp_path) -> None:
    path = tmp_path / "utm.tif"
    data = np.arange(100, dtype=np.uint8).reshape(10, 10)
    transform = from_origin(400_000, 5_500_000, 1000, 1000)  # UTM 32N, around 7.6°E 49.6°N
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=10,
        width=10,
        count=1,
        dtype="uint8",
        crs="EPSG:32632",
        transform=transform,
    ) as dst:
        dst.write(data, 1)
    raster = as_raster(str(path))
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(32632, 4326, always_xy=True).transform(403_500, 5_497_500)
    codes, status = raster.lookup(np.array([lon, 0.0]), np.array([lat, 0.0]))
    assert status.tolist() == [OK, OUTSIDE] and codes[0] == data[2, 3]
    item = pystac.Item("lc", None, None, dt.datetime(2020, 1, 1), {})
    item.add_asset("map", pystac.Asset(str(path), media_type=pystac.MediaType.COG))
    from_item = as_raster(item)
    assert from_item.lookup(np.array([lon]), np.array([lat]))[0][0] == data[2, 3]


def test_raster_without_crs_is_a_crs_error() -> None:
    with pytest.raises(CRSError, match=r"raster\.crs"):
        add_descriptors(_points([(10.5, 49.5)]), climate=_small_raster(crs=None))


def test_majority_within_footprint_differs_from_centre() -> None:
    raster = _small_raster()
    bounds = np.array([[10.0, 48.0, 13.0, 50.0]])  # two class-1 columns, one class-2 column
    wide = frame_from_bounds(np.array(["w"], dtype=object), bounds)
    wide.loc[:, "lon"] = 12.5  # centre on the class-2 column
    centre = add_descriptors(wide, climate=raster, landcover=raster)
    majority = add_descriptors(wide, climate=raster, landcover=raster, method="majority")
    assert centre["climate"].astype(str).iloc[0] == "2"
    assert majority["climate"].astype(str).iloc[0] == "1"


def test_bad_archives_and_methods() -> None:
    with pytest.raises(SamplingError, match="empty archive"):
        add_descriptors(_points([(0.0, 0.0)]).iloc[:0])
    with pytest.raises(InputError, match="sample_id"):
        add_descriptors(
            gpd.GeoDataFrame({"lon": [1.0], "lat": [2.0]}, geometry=gpd.points_from_xy([1], [2]))
        )
    with pytest.raises(InputError, match="method"):
        add_descriptors(_points([(2.35, 48.85)]), method="mode")
    with pytest.raises(SamplingError, match="covered by both"):
        add_descriptors(_points([(-150.0, 0.0)]))  # ocean only
    with pytest.raises(SamplingError, match="existing file"):
        add_descriptors(_points([(2.35, 48.85)]), climate="/no/such/raster.tif")
