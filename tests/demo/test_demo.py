"""``xcsmoe demo`` end to end on the real sample, with a pretraining budget of a few steps.

The run is real throughout: a ``rustac`` STAC API on loopback, a Dask ``LocalCluster``,
Lightning, Zarr stores. ``XCSMOE_CACHE`` points at a temporary folder for the whole module,
so the user's cache is never touched. 64 px patches keep it fast: one patch per sample
tile, cubes at 10 m.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xcsmoe.demo import DemoSettings, run_demo
from xcsmoe.demo.cache import MANIFEST, cache_key, cache_root, lookup, store_digest
from xcsmoe.demo.run import FIGURES
from xcsmoe.errors import ConfigError

SMALL = {"patch_size": 64, "steps": 2, "batch_size": 2, "top_k": 2, "workers": 1}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private ``XCSMOE_CACHE`` for every test of this module."""
    path = tmp_path_factory.mktemp("xcsmoe-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XCSMOE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def first_run(demo_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo run once with an empty cache; its figures also copied to ``docs``."""
    base = tmp_path_factory.mktemp("demo")
    result = run_demo(
        base / "out", settings=DemoSettings(**SMALL), figures=base / "docs", progress=False
    )
    return result, base / "docs"


def test_first_run_trains_and_writes_valid_artefacts(first_run, demo_cache):
    result, docs = first_run
    out = result.out
    assert not result.cache_hit
    assert (cache_root() / result.cache_key / MANIFEST).is_file()
    assert str(cache_root()).startswith(str(demo_cache))

    patches = xr.open_zarr(out / "patches.zarr")
    assert patches.attrs["xcsmoe_complete"] is True
    assert patches.sizes["patch"] == 6 and patches["s2"].shape[1:] == (10, 64, 64)

    embedded = {
        label: sorted((out / "embeddings" / label).glob("*.zarr"))
        for label in ("random", "pretrained")
    }
    assert [len(stores) for stores in embedded.values()] == [6, 6]
    for random_store, trained_store in zip(*embedded.values(), strict=True):
        random_emb, trained_emb = xr.open_zarr(random_store), xr.open_zarr(trained_store)
        assert random_emb.attrs["xcsmoe_complete"] and trained_emb.attrs["xcsmoe_complete"]
        assert np.isfinite(trained_emb.cls.values).all()
        assert random_emb.odc.geobox == trained_emb.odc.geobox
        assert not np.allclose(random_emb.cls.values, trained_emb.cls.values)

    import xcsmoe

    model = xcsmoe.create_model("csmoe_tiny", weights=out / "pretrain" / "encoder.safetensors")
    assert sum(p.numel() for p in model.parameters()) > 0
    losses = pd.read_csv(out / "pretrain" / "metrics.csv")["train/total"].dropna()
    assert len(losses) >= 1 and np.isfinite(losses).all()

    table = gpd.read_parquet(out / "cls_embeddings.parquet")
    assert set(table["item_id"]) == {p.stem for p in embedded["pretrained"]}
    assert table.geometry.notna().all() and len(table) >= 6

    results = pd.read_csv(out / "results.csv")
    assert {"random", "pretrained", "chance"} <= set(results.columns)
    assert results[["random", "pretrained"]].notna().all().all()
    assert results[["random", "pretrained"]].apply(lambda c: c.between(0, 100)).all().all()
    pair = results[results["task"].str.contains("pair retrieval")]
    assert len(pair) == 4
    assert np.allclose(pair.loc[pair["metric"] == "top-1 hit", "chance"], 100 / 6, atol=0.01)
    balance = results[results["task"].str.startswith("expert balance")]
    assert len(balance) == 12  # 2 measures x 2 sensors x 3 Soft MoE layers of csmoe_tiny
    markdown = (out / "results.md").read_text()
    assert markdown.startswith("| task | metric | random | pretrained | chance |")
    assert (docs / "results.md").read_text() == markdown

    from PIL import Image

    for name in FIGURES:
        for folder in (out / "figures", docs):
            path = folder / name
            assert path.read_bytes()[:8] == PNG, path
            assert path.stat().st_size <= 150_000, (path, path.stat().st_size)
            with Image.open(path) as image:
                assert min(image.size) >= 200
    record = json.loads((out / "demo.json").read_text())
    assert record["cache"] == {"key": result.cache_key, "hit": False}
    assert record["patches"] == 6 and record["settings"]["steps"] == SMALL["steps"]


def test_second_run_reuses_the_cached_pretraining(first_run, tmp_path):
    first, _ = first_run
    encoder = "pretrain/encoder.safetensors"
    trained = (first.out / encoder).read_bytes()
    out = tmp_path / "again"
    shutil.copytree(first.out, out)  # the README command run twice in one folder
    (out / encoder).unlink()
    again = run_demo(out, settings=DemoSettings(**SMALL), progress=False)
    assert again.cache_hit and again.cache_key == first.cache_key
    assert (out / encoder).read_bytes() == trained
    assert json.loads((out / "demo.json").read_text())["cache"]["hit"] is True
    pd.testing.assert_frame_equal(again.table, first.table)


def test_cli_runs_the_demo_to_success_from_the_cache(first_run, demo_cache, capsys, tmp_path):
    from xcsmoe.cli import main

    first, _ = first_run
    capsys.readouterr()  # drop what the first run printed, if it ran in this test's setup
    out = tmp_path / "out"
    args = ["demo", "--out", str(out), "--no-progress", "--workers", str(SMALL["workers"])]
    for flag in ("patch_size", "steps", "batch_size"):
        args += [f"--{flag.replace('_', '-')}", str(SMALL[flag])]
    # no --top-k flag: the default 5 (< the 6 patches) does not enter the cache key
    assert main(args) == 0
    printed = capsys.readouterr().out
    results = out / "results.md"
    assert results.is_file()
    assert results.read_text().startswith("| task | metric | random | pretrained | chance |")
    assert f"cache hit: {cache_root() / first.cache_key}" in printed
    assert "(pretraining reused from the cache)" in printed
    assert re.search(rf"^  results +{re.escape(str(results))}$", printed, flags=re.M)
    assert json.loads((out / "demo.json").read_text())["cache"] == {
        "key": first.cache_key,
        "hit": True,
    }


def test_module_entry_point_documents_the_demo():
    done = subprocess.run(
        [sys.executable, "-m", "xcsmoe", "demo", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--steps" in done.stdout and "--patch-size" in done.stdout


def test_changed_budget_misses_and_half_written_entries_are_never_reused(first_run):
    from xcsmoe.demo.cache import publish, staging_folder

    first, _ = first_run
    entry = cache_root() / first.cache_key
    digest = store_digest(first.out / "patches.zarr")
    assert cache_key(DemoSettings(**SMALL).training(), digest)[0] == first.cache_key
    settings = DemoSettings(**{**SMALL, "steps": SMALL["steps"] + 1})
    key, inputs = cache_key(settings.training(), digest)
    assert key != first.cache_key and lookup(key) is None
    # a run killed while training: a staging folder of a dead process, encoder and logs
    # complete but never sealed
    crashed = cache_root() / f".{key}.999999999.deadbeef.tmp"
    shutil.copytree(entry, crashed)
    (crashed / MANIFEST).unlink()
    assert lookup(key) is None
    # an entry whose encoder no longer matches its manifest
    damaged = cache_root() / key
    shutil.copytree(entry, damaged)
    manifest = json.loads((damaged / MANIFEST).read_text())
    (damaged / MANIFEST).write_text(json.dumps({**manifest, "key": key}))
    with open(damaged / "encoder.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\0\0\0\0")
    assert lookup(key) is None
    # the next run of that key: leftovers of dead processes go, the damaged entry is replaced
    staging = staging_folder(key)
    assert not crashed.exists() and staging.name.startswith(f".{key}.")
    shutil.copytree(entry, staging, dirs_exist_ok=True)
    (staging / MANIFEST).unlink()
    published = publish(staging, key, inputs)
    assert published.folder == damaged and not staging.exists()
    assert lookup(key) is not None and lookup(first.cache_key) is not None


@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"steps": 0}, "steps"),
        ({"patch_size": 20}, "patch_size"),
        ({"patch_size": 128}, "patch_size"),
        ({"batch_size": 40}, "batch_size"),
        ({"model": "csmae_p15"}, "model"),
        ({"lr": 0.0}, "lr"),
        ({"warmup_steps": 5000}, "warmup_steps"),
        ({"top_k": 54}, "top_k"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    demo_cache, tmp_path, changes, argument
):
    before = sorted(p.name for p in demo_cache.iterdir())
    with pytest.raises(ConfigError, match=rf"^{argument}\b.*expected"):
        run_demo(tmp_path / "out", **changes)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in demo_cache.iterdir()) == before


def test_bad_folders_are_refused_before_anything_is_written(demo_cache, tmp_path):
    foreign = tmp_path / "holiday-photos"
    foreign.mkdir()
    (foreign / "beach.jpg").write_bytes(b"not ours")
    with pytest.raises(ConfigError, match=r"^out: .*holds other files"):
        run_demo(foreign, **SMALL)
    assert [p.name for p in foreign.iterdir()] == ["beach.jpg"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"^out: expected a folder"):
        run_demo(a_file, **SMALL)
    with pytest.raises(ConfigError, match=r"^figures: expected a folder that can be written"):
        run_demo(tmp_path / "out", figures=a_file / "images", **SMALL)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_bad_patch_size_in_one_line(capsys, demo_cache, tmp_path):
    from xcsmoe.cli import main

    assert main(["demo", "--out", str(tmp_path / "out"), "--patch-size", "20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xcsmoe: error: --patch-size: expected")
    assert not (tmp_path / "out").exists()
