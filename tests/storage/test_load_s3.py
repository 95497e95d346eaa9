"""``load_cube`` reading GeoTIFFs in place from a bucket of a loopback ``moto_server``:
``s3://`` hrefs with per-provider and per-call access settings, bucket ``http`` hrefs,
and a STAC API whose items point into the bucket. Every cube equals the local one."""

from __future__ import annotations

import pytest
import rasterio
import xarray as xr
import yaml

from xcsmoe.errors import ConfigError
from xcsmoe.stac.load import load_cube
from xcsmoe.stac.providers import BucketAccess, catalogs_dir, provider_config


@pytest.fixture(scope="module")
def local_cube(bucket_catalog):
    items = bucket_catalog.items("local")
    return load_cube(items["s2"][:1], items["s1"][:1], chunks=64).compute()


def remote_cube(items, **kwargs) -> xr.Dataset:
    return load_cube(items["s2"][:1], items["s1"][:1], chunks=64, **kwargs).compute()


def test_s3_hrefs_with_per_call_access_equal_local_files(bucket_catalog, local_cube):
    access = {"endpoint": bucket_catalog.server.endpoint, "unsigned": True}
    cube = remote_cube(bucket_catalog.items(), access=access)
    xr.testing.assert_identical(cube, local_cube)


def test_s3_hrefs_with_provider_access_from_yaml(bucket_catalog, local_cube, tmp_path):
    raw = yaml.safe_load((catalogs_dir() / "sample.yaml").read_text())
    raw["access"] = {"endpoint": bucket_catalog.server.endpoint, "unsigned": True}
    path = tmp_path / "sample-in-bucket.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert provider_config(path).collections["bigearthnet-s2"].access.unsigned
    cube = remote_cube(bucket_catalog.items(), provider=str(path))
    xr.testing.assert_identical(cube, local_cube)


def test_signed_requests_use_credentials_from_the_environment(
    bucket_catalog, local_cube, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    access = {"endpoint": bucket_catalog.server.endpoint, "region": "us-east-1"}
    xr.testing.assert_identical(remote_cube(bucket_catalog.items(), access=access), local_cube)


def test_http_hrefs_of_a_bucket_need_no_settings(https_catalog, local_cube):
    items = https_catalog.items()
    assert items["s2"][0].assets["B02"].href.startswith(https_catalog.server.endpoint)
    xr.testing.assert_identical(remote_cube(items), local_cube)


def test_a_stac_api_serving_bucket_hrefs(bucket_catalog, local_cube):
    from xcsmoe.stac.search import search
    from xcsmoe.stac.serve import rustac_executable, serve_stac

    try:
        rustac_executable()
    except ConfigError as error:
        pytest.skip(str(error))
    wanted = {i.id for i in bucket_catalog.items()["s2"][:1] + bucket_catalog.items()["s1"][:1]}
    with serve_stac(bucket_catalog.remote) as url:
        found = [i for i in search(url, max_items=50) if i.id in wanted]
    assert len(found) == 2 and all(i.assets["B02" if "s2" in i.collection_id else "vv"]
                                   .href.startswith("s3://") for i in found)  # fmt: skip
    s2 = sorted((i for i in found if "s2" in i.collection_id), key=lambda i: i.id)
    s1 = sorted((i for i in found if "s1" in i.collection_id), key=lambda i: i.id)
    access = {"endpoint": bucket_catalog.server.endpoint, "unsigned": True}
    cube = remote_cube({"s2": s2, "s1": s1}, access=access)
    xr.testing.assert_identical(cube, local_cube)


def test_earth_search_reads_its_public_bucket_unsigned_in_us_west_2():
    access = provider_config("earth-search").collections["sentinel-2-l2a"].access
    assert (access.unsigned, access.region) == (True, "us-west-2")


def test_requester_pays_reaches_gdal_as_its_option():
    access = BucketAccess(region="eu-central-1").updated({"requester_pays": True})
    options = rasterio.session.AWSSession(**access.aws_session()).get_credential_options()
    assert options["AWS_REQUEST_PAYER"] == "requester"
    assert options["AWS_REGION"] == "eu-central-1"
    custom = BucketAccess(endpoint="http://127.0.0.1:9000")
    assert custom.gdal_options() == {"AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}
    assert custom.aws_session()["endpoint_url"] == "127.0.0.1:9000"


@pytest.mark.parametrize(
    ("access", "match"),
    [
        ({"endpoint": "127.0.0.1:9000"}, "access.endpoint: expected an http"),
        ({"unsigned": "yes"}, "access.unsigned: expected true or false"),
        ({"bucket_owner": "me"}, "access: expected a mapping with keys among"),
        ("unsigned", "access: expected a mapping"),
    ],
)
def test_bad_access_settings_are_refused_before_reading(bucket_catalog, access, match):
    items = bucket_catalog.items()
    with pytest.raises(ConfigError, match=match):
        load_cube(items["s2"][:1], items["s1"][:1], access=access)
