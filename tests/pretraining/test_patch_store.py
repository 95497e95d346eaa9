"""Patch stores from the sample catalog: exact contents, bad inputs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr

from xcsmoe.errors import ConfigError, InputError
from xcsmoe.pretraining import patch_pipeline
from xcsmoe.pretraining.patch_store import build_patch_store
from xcsmoe.sensors import S1, S2

PATCH = 60


@pytest.fixture(scope="module")
def pair_items(sample_items):
    return [
        item for pair in zip(sample_items["s2"], sample_items["s1"], strict=True) for item in pair
    ]


def _read(href: str) -> np.ndarray:
    with rasterio.open(href.removeprefix("file://")) as src:
        return src.read(1)


def source_patches(s2_item, s1_item, patch: int) -> dict[tuple[int, int], tuple]:
    """Every full patch of a pair read straight from its GeoTIFFs: (row, col) -> (s2, s1)."""
    s2 = []
    for band in S2.bands:
        raw = _read(s2_item.assets[band].href)
        factor = 120 // raw.shape[0]
        s2.append(raw.repeat(factor, axis=0).repeat(factor, axis=1))
    s2 = np.stack(s2)
    s1 = np.stack([_read(s1_item.assets[b].href) for b in ("vv", "vh")]).astype(np.float32)
    s1 = (10.0 ** (s1 / np.float32(10.0))).astype(np.float32)
    out = {}
    for row in range(120 // patch):
        for col in range(120 // patch):
            win = np.s_[:, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch]
            out[(row, col)] = (s2[win], s1[win])
    return out


def test_store_holds_exactly_the_valid_patches_of_the_sample(
    sample_items, pair_items, threaded_client, tmp_path
):
    store = tmp_path / "sample.zarr"
    report = build_patch_store(
        pair_items, store, patch_size=PATCH, client=threaded_client, progress=False, seed=3,
        val_fraction=0.25,
    )  # fmt: skip
    expected = {}
    for s2_item, s1_item in zip(sample_items["s2"], sample_items["s1"], strict=True):
        for (row, col), (s2, s1) in source_patches(s2_item, s1_item, PATCH).items():
            if (s2 != 0).all() and np.isfinite(s1).all():
                expected[(s2_item.id, row, col)] = (s2, s1, s1_item.id)
    ds = xr.open_zarr(store)
    assert report.patches == ds.sizes["patch"] == len(expected) > 0
    assert report.discarded_invalid == 6 * (120 // PATCH) ** 2 - len(expected)
    assert ds["s2"].dtype == np.uint16 and ds["s1"].dtype == np.float32
    assert list(ds["band_s2"].values) == list(S2.bands)
    assert list(ds["band_s1"].values) == list(S1.bands)
    assert ds.attrs["xcsmoe_patch_store"] == 1 and ds.attrs["patch_size"] == PATCH
    assert ds.attrs["xcsmoe_complete"] is True
    seen = set()
    for i in range(ds.sizes["patch"]):
        tile = str(ds["tile_id"].values[i])
        item = next(it for it in sample_items["s2"] if it.id == tile)
        affine = ds["transform"].values[i]
        origin = item.assets["B02"].extra_fields["proj:transform"]
        col = round((affine[2] - origin[2]) / 10 / PATCH)
        row = round((origin[5] - affine[5]) / 10 / PATCH)
        s2, s1, s1_id = expected[(tile, row, col)]
        np.testing.assert_array_equal(ds["s2"].values[i], s2)
        np.testing.assert_allclose(ds["s1"].values[i], s1, rtol=1e-6)
        assert ds["item_s2"].values[i] == tile and ds["item_s1"].values[i] == s1_id
        assert ds["has_s1"].values[i] and ds["has_s2"].values[i]
        seen.add((tile, row, col))
    assert seen == set(expected)
    lon, lat = ds["lon"].values, ds["lat"].values
    for i, tile in enumerate(ds["tile_id"].values):
        west, south, east, north = next(it.bbox for it in sample_items["s2"] if it.id == tile)
        assert west < lon[i] < east and south < lat[i] < north
    assert set(np.unique(ds["split"].values)) <= {0, 1}
    assert not (store.parent / f".{store.name}.scan").exists()  # staging removed


def test_split_is_seeded_and_reproducible(pair_items, threaded_client, tmp_path):
    splits = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        build_patch_store(
            pair_items, tmp_path / f"{name}.zarr", patch_size=30, seed=seed, val_fraction=0.3,
            client=threaded_client, progress=False,
        )  # fmt: skip
        splits.append(xr.open_zarr(tmp_path / f"{name}.zarr")["split"].values)
    np.testing.assert_array_equal(splits[0], splits[1])
    assert not np.array_equal(splits[0], splits[2])
    assert 0 < splits[0].mean() < 0.6


def test_single_sensor_patches_are_kept_and_flagged(sample_items, threaded_client, tmp_path):
    items = [*sample_items["s2"][:2], *sample_items["s1"][2:3]]
    report = build_patch_store(
        items, tmp_path / "single.zarr", patch_size=PATCH, require_pairs=False,
        client=threaded_client, progress=False,
    )  # fmt: skip
    ds = xr.open_zarr(tmp_path / "single.zarr")
    assert report.patches == 12
    s1_only = ds["has_s1"].values & ~ds["has_s2"].values
    assert s1_only.sum() == 4 and (ds["has_s2"].values.sum() == 8)
    assert (ds["s2"].values[s1_only] == 0).all()
    assert np.isnan(ds["s1"].values[~ds["has_s1"].values]).all()
    assert (ds["item_s1"].values[~ds["has_s1"].values] == "").all()
    assert np.isnat(ds["time_s1"].values[~ds["has_s1"].values]).all()


def test_scan_block_size_and_chunking_change_no_value(sample_items, threaded_client, tmp_path):
    """One patch per scan block (every region gathered from many blocks, some without a
    sensor) and odd chunking store the same values as the defaults."""
    items = [*sample_items["s2"][:3], *sample_items["s1"][1:4]]
    stores = {}
    for name, options in (
        ("default", {}),
        ("tiny", {"block_patches": 1, "chunk_patches": 3, "region_chunks": 2}),
    ):
        build_patch_store(
            items, tmp_path / f"{name}.zarr", patch_size=30, require_pairs=False,
            client=threaded_client, progress=False, **options,
        )  # fmt: skip
        stores[name] = xr.open_zarr(tmp_path / f"{name}.zarr")
    default, tiny = stores["default"], stores["tiny"]
    assert default.sizes["patch"] == tiny.sizes["patch"] > 0
    assert default["has_s1"].values.any() and not default["has_s1"].values.all()
    for name in ("s2", "s1", "tile_id", "transform", "has_s1", "has_s2"):
        np.testing.assert_array_equal(default[name].values, tiny[name].values)


# ---------------------------------------------------------------------------- bad inputs


def test_empty_selection_is_refused(tmp_path):
    import geopandas as gpd

    with pytest.raises(InputError, match="empty selection"):
        build_patch_store([], tmp_path / "x.zarr")
    empty = gpd.GeoDataFrame({"sample_id": []}, geometry=[], crs="EPSG:4326")
    with pytest.raises(InputError, match=r"empty selection|at least one row"):
        build_patch_store(empty, tmp_path / "x.zarr", items=[])
    assert not (tmp_path / "x.zarr").exists()


def test_no_pair_while_pairs_are_required(sample_items, tmp_path):
    with pytest.raises(InputError, match=r"S1\+S2 pair.*require_pairs=False"):
        build_patch_store(sample_items["s2"], tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()


def test_patch_size_not_a_multiple_of_the_model_patch(pair_items, tmp_path):
    with pytest.raises(ConfigError, match=r"multiple of the model patch 16.*100"):
        build_patch_store(pair_items, tmp_path / "x.zarr", patch_size=100, model="csmoe_tiny")
    with pytest.raises(ConfigError, match=r"multiple of the model patch 15"):
        build_patch_store(pair_items, tmp_path / "x.zarr", patch_size=64, model=15)
    assert not (tmp_path / "x.zarr").exists()


def _snapshot(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_a_store_of_other_settings_or_bands_is_refused_and_left_intact(
    pair_items, threaded_client, tmp_path
):
    store = tmp_path / "s.zarr"
    build_patch_store(pair_items, store, patch_size=PATCH, client=threaded_client, progress=False)
    before = _snapshot(store)
    with pytest.raises(ConfigError, match=r"patch_size: store 60, this job 40"):
        build_patch_store(pair_items, store, patch_size=40, client=threaded_client, progress=False)
    assert _snapshot(store) == before
    # a store written for another band set
    group = zarr.open_group(str(store), mode="r+")
    job = json.loads(group.attrs["xcsmoe_job"])
    job["bands_s2"] = ["B02", "B03", "B04", "B08"]
    group.attrs["xcsmoe_job"] = json.dumps(job, sort_keys=True)
    before = _snapshot(store)
    with pytest.raises(
        ConfigError, match=r"bands_s2: store \[\"B02\", \"B03\", \"B04\", \"B08\"\]"
    ):
        build_patch_store(
            pair_items, store, patch_size=PATCH, client=threaded_client, progress=False
        )
    assert _snapshot(store) == before


def test_unwritable_output_is_refused_before_any_work(pair_items, tmp_path, read_only):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="writable"):
        build_patch_store(pair_items, blocker / "s.zarr", patch_size=PATCH)
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked), pytest.raises(InputError, match="not writable"):
        build_patch_store(pair_items, locked / "s.zarr", patch_size=PATCH)
    assert not any(locked.iterdir())


def test_full_disk_then_read_only_store_keep_it_intact_and_resumable(
    pair_items, threaded_client, tmp_path, read_only, file_size_limit
):
    """A real full disk (a file size limit) while chunks are written, then a read-only
    store: clear errors, nothing changed, and the same call then completes the store."""
    settings = {"patch_size": PATCH, "chunk_patches": 8, "region_chunks": 1, "progress": False}
    reference = tmp_path / "reference.zarr"
    build_patch_store(pair_items, reference, client=threaded_client, **settings)
    chunk = min(p.stat().st_size for p in (reference / "s2" / "c").rglob("*") if p.is_file())
    assert chunk // 2 > 40_000  # the limit passes metadata and scan results, not a chunk
    folder = tmp_path / "out"
    folder.mkdir()
    store = folder / "s.zarr"
    from distributed import Client, LocalCluster

    with (  # its own cluster, closed (no write in flight) before the disk has room again
        file_size_limit(chunk // 2),
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
        pytest.raises(InputError, match=r"no room: File too large.*run the same command again"),
    ):
        build_patch_store(pair_items, store, client=client, **settings)
    assert zarr.open_group(str(store), mode="r").attrs["xcsmoe_complete"] is False
    done = zarr.open_array(str(store / "region_done"), mode="r")[...]
    assert not done.any()  # every chunk is larger than the limit
    before = _snapshot(folder)
    with read_only(store), pytest.raises(InputError, match="not writable"):
        build_patch_store(pair_items, store, client=threaded_client, **settings)
    assert _snapshot(folder) == before
    report = build_patch_store(pair_items, store, client=threaded_client, **settings)
    assert report.blocks_scanned == len(pair_items) // 2  # no region written: all read again
    assert _snapshot(store) == _snapshot(reference)
    assert sorted(p.name for p in folder.iterdir()) == ["s.zarr"]  # scan results removed


def test_a_complete_store_in_a_read_only_folder_is_returned_as_it_is(
    pair_items, threaded_client, tmp_path, read_only
):
    settings = {"patch_size": PATCH, "client": threaded_client, "progress": False}
    store = tmp_path / "done.zarr"
    first = build_patch_store(pair_items, store, **settings)
    before = _snapshot(store)
    with read_only(store):
        again = build_patch_store(pair_items, store, **settings)
    assert again.patches == first.patches and again.regions_written == 0
    assert _snapshot(store) == before


# -------------------------------------------------------------------------------- resume


def test_interrupted_job_resumes_only_missing_regions_byte_identical(
    pair_items, threaded_client, tmp_path, monkeypatch
):
    settings = {"patch_size": PATCH, "chunk_patches": 2, "region_chunks": 1, "progress": False}
    reference = tmp_path / "reference.zarr"
    build_patch_store(pair_items, reference, client=threaded_client, **settings)

    real = patch_pipeline.write_patch_region
    failed = []

    def fail_once(store, index, sources, scanned):
        if index == 5 and not failed:
            failed.append(index)
            raise RuntimeError("disk went away")
        return real(store, index, sources, scanned)

    store = tmp_path / "resumed.zarr"
    monkeypatch.setattr(patch_pipeline, "write_patch_region", fail_once)
    from distributed import Client, LocalCluster

    with (  # noqa: SIM117  its own cluster, closed before the markers are read: no write is in flight
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as failing,
    ):
        with pytest.raises(RuntimeError, match="disk went away"):
            build_patch_store(pair_items, store, client=failing, **settings)
    monkeypatch.undo()
    done = zarr.open_array(str(store / "region_done"), mode="r")[...]
    assert not done[5] and not zarr.open_group(str(store)).attrs["xcsmoe_complete"]
    # a tile is read again only when a region holding its patches has no marker (its
    # kept patches were in memory) or its scan was never committed
    tile_ids = xr.open_zarr(reference)["tile_id"].values
    assert tile_ids.size == 4 * len(pair_items) // 2  # every patch of every tile kept
    committed = {
        int(p.stem.split("-")[1]) for p in tmp_path.glob(".resumed.zarr.scan/block-*.json")
    }
    reread = [
        t for t in range(len(pair_items) // 2)
        if t not in committed or not done[2 * t : 2 * t + 2].all()  # 2 regions per tile
    ]  # fmt: skip
    assert 0 < len(reread) < len(pair_items) // 2
    report = build_patch_store(pair_items, store, client=threaded_client, **settings)
    assert report.blocks_scanned == len(reread)
    assert report.regions_written == int((done == 0).sum()) < report.regions
    assert _snapshot(store) == _snapshot(reference)
    again = build_patch_store(pair_items, store, client=threaded_client, **settings)
    assert again.regions_written == 0 and again.patches == report.patches


# ------------------------------------------------- a sampling selection as the source


def test_selection_descriptors_reach_every_patch_and_match_building_from_the_items(
    sample_items, pair_items, threaded_client, tmp_path
):
    """A real selection (archive -> climate/land-cover descriptors -> one sample per
    stratum) of the sample's S2 items, cut with the S1 partners found among the items."""
    from xcsmoe.sampling.archive import archive_from_items
    from xcsmoe.sampling.descriptors import add_descriptors
    from xcsmoe.sampling.select import select_random

    described = add_descriptors(archive_from_items(sample_items["s2"]))
    selection = select_random(described, per_stratum=1, seed=0)
    assert 1 < len(selection) < len(sample_items["s2"])  # two sample items share a stratum
    settings = {"patch_size": PATCH, "client": threaded_client, "progress": False}
    report = build_patch_store(selection, tmp_path / "selection.zarr", items=pair_items, **settings)
    partner = dict(zip(sample_items["s2"], sample_items["s1"], strict=True))
    by_id = {item.id: item for item in sample_items["s2"]}
    chosen = [i for s in selection["sample_id"] for i in (by_id[s], partner[by_id[s]])]
    direct = build_patch_store(chosen, tmp_path / "items.zarr", **settings)
    assert report.patches == direct.patches > 0
    assert report.tiles == direct.tiles == len(selection)
    assert report.discarded_invalid == direct.discarded_invalid

    ds = xr.open_zarr(tmp_path / "selection.zarr")
    plain = xr.open_zarr(tmp_path / "items.zarr")
    tile_ids = [str(value) for value in ds["tile_id"].values]
    assert tile_ids == [str(value) for value in plain["tile_id"].values]
    rows = selection.set_index("sample_id").loc[tile_ids]
    for column in ("climate", "landcover", "stratum"):
        assert ds[column].dims == ("patch",), column
        expected = [str(value) for value in rows[column]]
        assert [str(value) for value in ds[column].values] == expected, column
        assert column not in plain.variables
    assert len({str(value) for value in ds["stratum"].values}) > 1


# ------------------------------------------------------------- patch stores at URLs
# (built, read, resumed and refused in a bucket: tests/storage/test_patch_store_s3.py)


def test_an_unreachable_or_unshared_url_store_is_refused_before_anything_is_written(
    pair_items, tmp_path, monkeypatch
):
    import fsspec

    from xcsmoe.errors import StorageError
    from xcsmoe.pretraining.loader import open_patch_store
    from xcsmoe.stac.serve import free_port

    monkeypatch.chdir(tmp_path)  # Path("s3://b/x") would become the folder s3:/b/x here
    silent = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "key": "k", "secret": "s"}
    url = "s3://bucket/patches.zarr"
    with pytest.raises(StorageError, match="store: expected a reachable object store") as caught:
        build_patch_store(
            pair_items, url, patch_size=PATCH, n_workers=1, progress=False,
            storage_options=silent,
        )  # fmt: skip
    assert url in str(caught.value)
    with pytest.raises(StorageError, match="store: expected a reachable object store"):
        open_patch_store(url, storage_options=silent)
    # memory:// lives in one process: refused for a cluster of processes, before it starts
    with pytest.raises(ConfigError, match="store: expected a location every worker can reach"):
        build_patch_store(
            pair_items, "memory://patches.zarr", patch_size=PATCH, n_workers=1, progress=False
        )
    with pytest.raises(InputError, match="store: expected a patch store"):
        open_patch_store("memory://patches.zarr")
    assert list(tmp_path.iterdir()) == []
    assert not fsspec.filesystem("memory").exists("/patches.zarr")
    assert not fsspec.filesystem("memory").exists("/patches.zarr.scan")


def test_a_file_url_patch_store_is_its_local_path(tmp_path):
    from xcsmoe.pretraining.loader import open_patch_store
    from xcsmoe.storage import local_folder

    store = tmp_path / "patches.zarr"
    assert local_folder(f"file://{store}") == store
    with pytest.raises(InputError, match="a patch store folder") as caught:
        open_patch_store(f"file://{store}")
    assert str(store) in str(caught.value)
