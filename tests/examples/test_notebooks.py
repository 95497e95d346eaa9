"""The notebooks in ``examples/``: valid jupytext ``py:percent`` files that run as scripts.

The format is checked twice: by hand (header, cells that parse on their own) and by
``jupytext`` itself (a dev dependency), which must read each file as ``py:percent`` and
write it back unchanged.

The three notebooks start together in subprocesses (module fixture) with a cache folder
of their own and the small settings of ``SMALL``, passed as ``XCSMOE_EXAMPLE_*``
variables: the ``csmoe_tiny`` model, 32 px windows and patches, a 1° x 0.5° grid region
with 2 cells per stratum, a pretraining of 2 steps and 2 Dask workers. The notebooks'
own defaults (``csmoe_p16``, Austria, 30 steps) are larger; these keep the run to minutes
on a CPU. Each test waits for its notebook and checks what it wrote.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NOTEBOOKS = ("analysis", "batch_inference", "dataset_construction")
SMALL = {
    "XCSMOE_EXAMPLE_MODEL": "csmoe_tiny",
    "XCSMOE_EXAMPLE_WINDOW": "32",  # 4 x 4 windows: 16 regions in the batch job to interrupt
    "XCSMOE_EXAMPLE_WORKERS": "2",
    "XCSMOE_EXAMPLE_REGION": "13,47.5,14,48",
    "XCSMOE_EXAMPLE_PER_STRATUM": "2",
    "XCSMOE_EXAMPLE_PATCH_SIZE": "32",
    "XCSMOE_EXAMPLE_STEPS": "2",
}
RUN_TIMEOUT_S = 400


# ---------------------------------------------------------------------- file format


def split_cells(text: str) -> list[tuple[str, str]]:
    """``(kind, source)`` of each ``# %%`` cell after the header, kind "markdown" or "code"."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_py_percent(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    header = text.split("\n# %%", 1)[0]
    assert header.startswith("# ---\n# jupyter:\n#   jupytext:\n"), "jupytext header first"
    for field in ("formats: py:percent", "text_representation:", "format_name: percent"):
        assert re.search(rf"^#\s+{re.escape(field)}$", header, flags=re.M), field
    assert header.rstrip().endswith("# ---")

    cells = split_cells(text)
    kinds = [kind for kind, _ in cells]
    assert kinds[0] == "markdown" and kinds.count("code") >= 4 and kinds.count("markdown") >= 4
    for kind, source in cells:
        assert source.strip(), "no empty cells"
        if kind == "markdown":
            lines = source.splitlines()
            assert all(line == "#" or line.startswith("# ") for line in lines), lines[0]
            prose = " ".join(line[2:] for line in lines)
            assert len(re.findall(r"[A-Za-z]{3,}", prose)) >= 10, f"markdown too thin: {prose!r}"
        else:
            ast.parse(source)  # each code cell parses on its own, as a kernel runs it
    ast.parse(text)

    jupytext = pytest.importorskip("jupytext")  # a dev dependency: a skip shows
    notebook = jupytext.read(EXAMPLES / f"{name}.py")
    assert [cell.cell_type for cell in notebook.cells] == kinds
    assert {"code", "markdown"} <= set(kinds)
    codes = [source for kind, source in cells if kind == "code"]
    assert [cell.source for cell in notebook.cells if cell.cell_type == "code"] == codes
    metadata = notebook.metadata["jupytext"]
    assert metadata["formats"] == "py:percent"
    assert metadata["text_representation"]["extension"] == ".py"
    assert metadata["text_representation"]["format_name"] == "percent"
    # round trip: written back as py:percent it is the file again, less the version stamp
    # jupytext adds; through .ipynb and back it is the same notebook
    written = jupytext.writes(notebook, fmt="py:percent")
    assert re.sub(r"^#\s+jupytext_version: .*\n", "", written, flags=re.M) == text
    via_ipynb = jupytext.reads(jupytext.writes(notebook, fmt="ipynb"), fmt="ipynb")
    assert jupytext.writes(via_ipynb, fmt="py:percent") == written


# ---------------------------------------------------------------------- execution


@dataclass
class Run:
    process: subprocess.Popen
    log: Path
    out: Path

    def finish(self) -> str:
        try:
            self.process.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        output = self.log.read_text(errors="replace")
        assert self.process.returncode == 0, f"exit {self.process.returncode}:\n{output[-6000:]}"
        return output


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[dict[str, Run]]:
    """All three notebooks, started at once with the small settings."""
    root = tmp_path_factory.mktemp("notebooks")
    env = {**os.environ, **SMALL, "XCSMOE_CACHE": str(root / "cache")}
    env["XCSMOE_EXAMPLE_OUT"] = str(root / "out")
    env["MPLBACKEND"] = "Agg"
    from xcsmoe.stac.sample_catalog import example_catalog

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XCSMOE_CACHE", env["XCSMOE_CACHE"])
        example_catalog()  # built once here rather than by all three at once
    started = {}
    for name in NOTEBOOKS:
        log = root / f"{name}.log"
        with log.open("w") as sink:
            process = subprocess.Popen(
                [sys.executable, str(EXAMPLES / f"{name}.py")],
                cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started[name] = Run(process, log, root / "out" / name)
    yield started
    for run in started.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def has_rustac() -> bool:
    from xcsmoe.errors import ConfigError
    from xcsmoe.stac.serve import rustac_executable

    try:
        rustac_executable()
    except ConfigError:
        return False
    return True


def read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.is_file(), f"{path.name} not written"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100, image.shape
    assert float(image[..., :3].std()) > 0.01, f"{path.name} is blank"
    return image


def test_analysis_notebook(runs):
    import geopandas as gpd

    output = runs["analysis"].finish()
    out = runs["analysis"].out
    for png in ("pca.png", "similarity.png", "similarity_elsewhere.png", "expert_usage.png"):
        read_png(out / png)
    if has_rustac():
        assert "STAC API: http://127.0.0.1:" in output  # searched over the loopback API
    assert "same as the input grid zoomed out by 16: True" in output
    table = gpd.read_parquet(out / "cls.parquet")
    assert len(table) == 16  # 120 px in 32 px windows: 4 x 4, the last ones padded
    assert table.crs.to_epsg() == 4326
    assert {len(v) for v in table["embedding"]} == {128}  # csmoe_tiny: 64 per sensor
    assert np.isfinite(np.stack(table["embedding"].to_numpy())).all()
    top = re.findall(r"^\s+\d+ +\d+\s+([+-]\d\.\d+)$", output, flags=re.M)
    assert len(top) == 5 and float(top[0]) == pytest.approx(1.0, abs=1e-3)  # query itself


def test_batch_inference_notebook(runs):
    import xarray as xr

    output = runs["batch_inference"].finish()
    out = runs["batch_inference"].out
    regions = int(re.search(r"-> (\d+) regions", output).group(1))
    assert regions == 16
    before = int(re.search(r"regions on disk: (\d+) of 16; store complete: False", output)[1])
    computed, skipped = map(
        int, re.search(r"resumed: (\d+) regions computed, (\d+) skipped", output).groups()
    )
    assert 0 < before < regions, "the first run was not interrupted half-way"
    assert (computed, skipped) == (regions - before, before)
    assert "third run: 0 computed, 16 skipped" in output
    assert "Dask dashboard: http" in output
    store = xr.open_zarr(out / "embeddings.zarr")
    assert store.attrs["xcsmoe_complete"] is True
    assert bool(store["region_done"].all())
    assert store.attrs["model"] == "csmoe_tiny" and store.attrs["window"] == 32
    assert bool(np.isfinite(store["tokens"].values).all())
    read_png(out / "resume.png")
    read_png(out / "pca.png")


def test_dataset_construction_notebook(runs):
    import pandas as pd

    import xcsmoe

    output = runs["dataset_construction"].finish()
    out = runs["dataset_construction"].out
    table = pd.read_csv(out / "table_ii.csv", index_col=0)
    assert list(table.columns) == ["archive", "random", "genetic"]
    assert table.loc["tiles", "archive"] > table.loc["tiles", "genetic"] > 0
    read_png(out / "selection_map.png")
    read_png(out / "patches.png")

    selected = re.findall(r"^ ?(S2[AB]_MSIL2A_\S+) ", output.split("one per stratum:")[1], re.M)
    patches = xcsmoe.open_patch_store(out / "patches.zarr")
    assert patches.attrs["patch_size"] == 32 and patches.sizes["patch"] > 0
    assert set(patches.item_s2.values.tolist()) == set(selected)
    assert bool(patches.has_s1.values.all() and patches.has_s2.values.all())

    recipe = xcsmoe.load_recipe(out / "pretrain.yaml")
    assert (recipe.variant, recipe.max_steps) == ("csmoe_tiny", 2)
    assert recipe.store == (out / "patches.zarr").resolve()
    run = out / "pretrain-run"
    assert (run / "encoder.safetensors").stat().st_size > 0
    losses = pd.read_csv(run / "logs" / "csv" / "metrics.csv")["train/total"].dropna()
    assert len(losses) == 2 and np.isfinite(losses).all()
    read_png(run / "loss_curve.png")
