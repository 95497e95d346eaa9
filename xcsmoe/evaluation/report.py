"""Results tables: one row per (task, metric), one column per model, scores in %."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

__all__ = ["format_results", "write_results"]


def write_results(table: pd.DataFrame, folder: str | Path) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.json`` (records plus the table's notes) into
    ``folder``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder / "results.csv", folder / "results.json"
    table.to_csv(csv_path, index=False, float_format="%.2f")
    payload = {
        "units": "percent",
        "notes": {k: v for k, v in table.attrs.items()},
        "results": json.loads(table.to_json(orient="records", double_precision=4)),
    }
    json_path.write_text(json.dumps(payload, indent=2))
    return csv_path, json_path


def format_results(table: pd.DataFrame) -> str:
    """The table as aligned text, with skipped models noted underneath."""
    text = table.to_string(index=False, float_format=lambda v: f"{v:6.2f}")
    skipped = table.attrs.get("skipped") or []
    if skipped:
        text += f"\n(skipped, weights not found: {', '.join(skipped)})"
    return text
