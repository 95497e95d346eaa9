"""The repository keeps its promises: README commands, CI script, public API."""

from __future__ import annotations

import re
from pathlib import Path

import xcsmoe

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_has_setup_and_test_commands():
    setup, test = readme_commands()[:2]
    assert "pip install -e" in setup and "xcsmoe demo --out" in setup
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines


def test_public_api_resolves_every_name():
    for name in xcsmoe.__all__:
        assert getattr(xcsmoe, name) is not None, name


def test_all_lists_exactly_the_lazy_exports():
    assert set(xcsmoe.__all__) == {"__version__", "errors", *xcsmoe._EXPORTS}


def test_every_test_tier_the_readme_advertises_has_tests():
    text = (ROOT / "README.md").read_text()
    tiers = set(re.findall(r"python -m pytest -m (\w+)", text))
    assert "slow" in tiers
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for tier in tiers:
        assert re.search(rf"pytest\.mark\.{tier}\b", sources), f"no test is marked {tier}"
