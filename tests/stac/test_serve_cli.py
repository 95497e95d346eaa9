"""The loopback STAC server helper and the ``xcsmoe catalog`` commands."""

from __future__ import annotations

import json
import urllib.request

import pytest

from xcsmoe.cli import main
from xcsmoe.errors import ConfigError, StacConnectionError
from xcsmoe.stac.serve import api_files, serve_stac


def test_serve_files_and_stop(sample_catalog, tmp_path):
    files = api_files(sample_catalog, tmp_path)
    names = [f.name for f in files]
    assert sorted(names[:2]) == ["bigearthnet-s1.collection.json", "bigearthnet-s2.collection.json"]
    with serve_stac(files) as url:
        with urllib.request.urlopen(f"{url}/collections/bigearthnet-s2/items", timeout=5) as r:
            features = json.load(r)["features"]
        assert len(features) == 6
        assert features[0]["assets"]["B02"]["href"].startswith("file://")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/collections", timeout=2)


def test_serve_reports_a_server_that_fails(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(StacConnectionError, match="rustac"), serve_stac([broken]):
        pass
    with pytest.raises(ConfigError, match="hrefs"), serve_stac([]):
        pass


def test_cli_search_and_providers(stac_api_url, capsys):
    assert main(["catalog", "search", stac_api_url, "--collections", "bigearthnet-s1",
                 "--datetime", "2017-06"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("bigearthnet-s1\t") for line in lines)
    assert main(["catalog", "providers"]) == 0
    assert "planetary-computer\tsentinel-1-rtc\ts1\tlinear" in capsys.readouterr().out


def test_catalog_serve_command_answers_a_search(sample_catalog, tmp_path):
    """``xcsmoe catalog serve`` as a user runs it: a process that serves until killed."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from xcsmoe.stac.search import search
    from xcsmoe.stac.serve import rustac_executable

    try:
        rustac_executable()
    except ConfigError as error:
        pytest.skip(str(error))
    exe = Path(sys.executable).parent / "xcsmoe"
    command = [str(exe)] if exe.is_file() else [sys.executable, "-m", "xcsmoe.cli"]
    catalog = sample_catalog.self_href
    process = subprocess.Popen(
        [*command, "catalog", "serve", "--catalog", catalog],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        line = process.stdout.readline()  # printed once the API answers
        assert line.startswith("STAC API at http://127.0.0.1:"), process.stderr.read()
        url = line.split()[3]
        items = search(url, collections="bigearthnet-s2", datetime="2017-06-17", timeout=10)
        assert sorted(item.id for item in items) == [
            "S2A_MSIL2A_20170617T113321_36_85", "S2A_MSIL2A_20170617T113321_4_55",
        ]  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()
    assert returncode == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/collections", timeout=2)
