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
