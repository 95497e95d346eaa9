"""Every ``python`` code block of README.md runs as written.

The blocks are joined in order (as a reader pastes them into one session) and run as a
script by a fresh interpreter in an empty folder, with its own xcsmoe cache, so the
sample catalog is built from scratch the way a first-time user gets it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def readme_python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every fenced ``python`` block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_block_extraction_finds_fenced_python_only():
    text = "intro\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
    assert readme_python_blocks(text) == [(3, "x = 1\n"), (9, "y = x + 1\n")]


def test_readme_python_blocks_run_as_written(tmp_path):
    blocks = readme_python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md has no python code block"
    script = "".join(f"# README.md line {line}\n{code}\n" for line, code in blocks)
    (tmp_path / "readme_blocks.py").write_text(script)
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = os.environ | {"XCSMOE_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "readme_blocks.py")],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"README code failed:\n{script}\n{result.stderr[-4000:]}"


def test_readme_pictures_exist_and_stay_small():
    text = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert pictures, "README.md shows no picture"
    for picture in pictures:
        path = ROOT / picture
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
        assert path.stat().st_size <= 150_000, (picture, path.stat().st_size)


def test_readme_results_table_is_the_one_the_demo_wrote():
    """The README's table is ``docs/images/demo/results.md``, written by ``xcsmoe demo
    --figures docs/images/demo`` together with the pictures."""
    text = (ROOT / "README.md").read_text()
    table = re.search(
        r"<!-- demo results: start -->\n(.*?)<!-- demo results: end -->", text, re.DOTALL
    )
    assert table, "README.md lost its demo results markers"
    written = (ROOT / "docs" / "images" / "demo" / "results.md").read_text()
    assert table.group(1).strip() == written.strip()
