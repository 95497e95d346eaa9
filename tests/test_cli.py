"""The ``xcsmoe`` command line: one-line user errors, early refusals, real end-to-end runs.

Runs on the bundled sample catalog (``--stac sample``), real LocalClusters and real Zarr
stores; ``xcsmoe`` itself is run as a subprocess where the exit status matters.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from xcsmoe.cli import cli_message, main
from xcsmoe.errors import ConfigError

FIRST_PAIR_BBOX = ["13.712", "48.216", "13.73", "48.228"]  # one real S1+S2 pair
TINY_EMBED = [
    "--stac", "sample", "--bbox", *FIRST_PAIR_BBOX, "--model", "csmoe_tiny",
    "--weights", "random", "--window", "64", "--workers", "1", "--no-progress",
]  # fmt: skip
UNREACHABLE = "tcp://127.0.0.1:9"


def xcsmoe_command(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``xcsmoe`` console script (the module when it is not on PATH)."""
    exe = shutil.which("xcsmoe", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "xcsmoe.cli"]
    return subprocess.run(
        [*command, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("xcsmoe: error: ")
    return err[0]


# ------------------------------------------------------------------ user errors


def test_console_script_prints_one_line_and_exits_2(tmp_path):
    result = xcsmoe_command("embed", "s.zarr", *TINY_EMBED, "--workers", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "xcsmoe: error: argument --workers: expected a positive integer, got '0'"
    )
    assert "Traceback" not in result.stderr and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("flag", "value", "wanted"),
    [
        ("--workers", "0", "a positive integer"),
        ("--workers", "two", "a positive integer"),
        ("--batch-size", "0", "a positive integer"),
        ("--patch", "-16", "a positive integer"),
        ("--window", "64.0", "a positive integer"),
        ("--chunks", "0", "a positive pixel count"),
        ("--chunks", "64,64,64", "a positive pixel count"),
        ("--seed", "-1", "an integer >= 0"),
        ("--sensors", "s3", "invalid choice"),
        ("--dtype", "int8", "invalid choice"),
    ],
)
def test_impossible_values_are_refused_by_the_parser(capsys, tmp_path, flag, value, wanted):
    assert main(["embed", str(tmp_path / "s.zarr"), *TINY_EMBED, flag, value]) == 2
    line = one_error_line(capsys)
    assert f"argument {flag}" in line and wanted in line
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["catalog", "serve", "--port", "70000"],
        ["catalog", "search", "--max-items", "0"],
        ["catalog", "search", "--max-cloud-cover", "101"],
        ["sample", "majortom", "--out", "x", "--workers", "0"],
        ["demo", "--workers", "0"],
        ["demo", "--steps", "0"],
    ],
)
def test_every_command_refuses_impossible_numbers(capsys, argv):
    assert main(argv) == 2
    assert "expected" in one_error_line(capsys)


def test_library_errors_name_the_flag_and_debug_shows_the_traceback(capsys, tmp_path):
    argv = ["embed", str(tmp_path / "s.zarr"), *TINY_EMBED, "--model", "csmoe_nope"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith("xcsmoe: error: --model: expected one of")
    assert "csmoe_nope" in line
    with pytest.raises(ConfigError, match="csmoe_nope"):
        main(["--debug", *argv])
    assert not (tmp_path / "s.zarr").exists()


def test_unreachable_scheduler_fails_within_seconds_and_writes_nothing(capsys, tmp_path):
    store = tmp_path / "s.zarr"
    start = time.monotonic()
    assert main(["embed", str(store), *TINY_EMBED, "--scheduler", UNREACHABLE]) == 2
    assert time.monotonic() - start < 20
    line = one_error_line(capsys)
    assert line.startswith("xcsmoe: error: --scheduler: expected a Dask scheduler address")
    assert os.listdir(tmp_path) == []


def test_cli_message_uses_the_commands_flags():
    flags = {"overwrite": "--overwrite", "workers": "--workers", "window": "--window",
             "normalise": "--normalise", "no-normalise": "--no-normalise", "store": "STORE"}  # fmt: skip
    assert cli_message("store: x. Pass overwrite=True to replace it.", flags) == (
        "store: x. Pass --overwrite to replace it."
    )
    assert cli_message("n_workers: expected 1. Pass n_workers=1.", flags) == (
        "--workers: expected 1. Pass --workers 1."
    )
    assert cli_message("x. Or normalise=False,\n window='64'.", flags) == (
        "x. Or --no-normalise, --window 64."
    )
    assert cli_message("seed: bad. Pass seed=1.", flags) == "seed: bad. Pass seed=1."


# ------------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """``xcsmoe embed`` run once on the first sample pair (csmoe_tiny, random weights)."""
    store = tmp_path_factory.mktemp("cli") / "emb.zarr"
    assert main(["embed", str(store), *TINY_EMBED, "--chunks", "64", "--batch-size", "1"]) == 0
    return store


def test_embed_end_to_end_matches_the_library(embedded, capsys):
    import xcsmoe

    stored = xr.open_zarr(embedded).load()
    assert stored.attrs["xcsmoe_complete"] is True
    items = {
        sensor: list(xcsmoe.search(xcsmoe.example_catalog(), collections=[cid],
                                   bbox=[float(v) for v in FIRST_PAIR_BBOX]))
        for sensor, cid in (("s2", "bigearthnet-s2"), ("s1", "bigearthnet-s1"))
    }  # fmt: skip
    cube = xcsmoe.load_cube(items["s2"], items["s1"], bbox=[float(v) for v in FIRST_PAIR_BBOX])
    reference = xcsmoe.embed(
        cube, 16, model="csmoe_tiny", weights="random", window=64, device="cpu"
    ).compute()
    np.testing.assert_allclose(stored.cls.values, reference.cls.values, atol=1e-5)
    np.testing.assert_allclose(stored.tokens.values, reference.tokens.values, atol=1e-5)
    assert stored.odc.geobox == reference.odc.geobox
    assert json.loads(stored.attrs["xcsmoe_job"])["sensors"] == ["s1", "s2"]


def test_rerun_resumes_and_another_job_gets_a_cli_hint(embedded, capsys):
    same = ["embed", str(embedded), *TINY_EMBED, "--chunks", "64"]
    assert main([*same, "--batch-size", "4"]) == 0  # batch size changes no value
    assert "0 regions computed" in capsys.readouterr().out
    assert main([*same, "--no-normalise"]) == 2
    line = one_error_line(capsys)
    assert "normalise: store true, this job false" in line
    assert "--overwrite" in line and "overwrite=True" not in line
