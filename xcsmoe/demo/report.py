"""The demo's results table (CSV, JSON, Markdown) and the closing summary it prints."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["markdown_table", "results_table", "summary_text", "write_tables"]


def results_table(rows: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> pd.DataFrame:
    """Rows of :mod:`xcsmoe.demo.scores` as one table: task, metric, one column per
    weights label (percent), chance (percent, where defined)."""
    table = pd.DataFrame(list(rows), columns=["task", "metric", *labels, "chance"])
    table.attrs["units"] = "percent"
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """The table as GitHub Markdown, numbers with one decimal, blanks where undefined."""
    columns = list(table.columns)
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if c in ("task", "metric") else "---:" for c in columns) + "|",
    ]
    for record in table.to_dict("records"):
        cells = [_cell(record[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(table: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """``results.csv``/``results.json`` (:func:`xcsmoe.evaluation.report.write_results`)
    and ``results.md`` into ``folder``."""
    from xcsmoe.evaluation.report import write_results

    csv_path, json_path = write_results(table, folder)
    md_path = folder / "results.md"
    md_path.write_text(markdown_table(table))
    return {"csv": csv_path, "json": json_path, "markdown": md_path}


def summary_text(
    *,
    settings: Any,
    patches: int,
    pairs: int,
    params: int,
    cache_hit: bool,
    seconds: float,
    artefacts: Mapping[str, Path],
    table: pd.DataFrame,
) -> str:
    """What the run did, where everything is, and what the numbers mean."""
    source = "reused from the cache" if cache_hit else "trained in this run"
    lines = [
        "",
        f"xcsmoe demo finished in {seconds:.0f} s (pretraining {source}).",
        "",
        markdown_table(table),
        "What this is: a demonstration-sized pretraining, not the paper's model. "
        f"{settings.model} ({params / 1e6:.2f} M parameters) trained for {settings.steps} "
        f"steps of {settings.batch_size} on {patches} patches of {settings.patch_size} px cut "
        f"from {pairs} real BigEarthNet S1+S2 pairs; the paper trains ~270 M-parameter "
        "models for 150 epochs on a global selection. Retrieval is in-sample: queries and "
        "archive are the patches the model was pretrained on (chance = 1/N and k/N). "
        "Expert balance is measured on the sample cubes.",
        "",
        "Written:",
    ]
    width = max(len(k) for k in artefacts)
    lines += [f"  {name.ljust(width)}  {path}" for name, path in artefacts.items()]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
