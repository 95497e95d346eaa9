"""GA vs random selection of a described archive, written to disk with Table II and maps.

Shared by the CLI, the recipes and the benchmark: ``compare_selections`` runs both
selections (and, with ``greedy=True``, the greedy farthest-point baseline) on the same
strata and seed, measures wall time and peak memory per stage, and writes
``genetic.parquet``, ``random.parquet`` (GeoParquet; ``greedy.parquet``),
``table_ii.csv``, ``table_ii.txt`` (headed by the descriptor products), ``map.png`` and
``run.json`` (products, settings, per-stratum GA logs, timings) to ``out_dir``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

__all__ = ["Comparison", "compare_selections", "peak_rss_mib", "stage"]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux: ``VmHWM`` of ``/proc/self/status`` (``ru_maxrss`` would carry the parent's
    peak into freshly started worker processes); elsewhere ``ru_maxrss``.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _worker_peaks_mib(client: Any) -> float:
    if client is None:
        return 0.0
    peaks = client.run(peak_rss_mib)
    return float(sum(peaks.values()))


@contextmanager
def stage(timings: dict[str, dict[str, float]], name: str, *, client: Any = None) -> Iterator[None]:
    """Record wall seconds and peak RSS (this process, plus Dask workers) of a block."""
    started = time.perf_counter()
    yield
    timings[name] = {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "workers_peak_rss_mib": round(_worker_peaks_mib(client), 1),
    }


@dataclass
class Comparison:
    """Both selections, their Table II and where things were written."""

    genetic: gpd.GeoDataFrame
    random: gpd.GeoDataFrame
    table: pd.DataFrame
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    greedy: gpd.GeoDataFrame | None = None


def _write_frame(frame: gpd.GeoDataFrame, path: Path) -> None:
    out = frame.copy()
    out.attrs = {}
    for column in ("climate", "landcover", "stratum"):
        if column in out.columns:
            out[column] = out[column].astype(str)
    out.to_parquet(path)


def compare_selections(
    archive: gpd.GeoDataFrame,
    *,
    out_dir: str | Path | None = None,
    per_stratum: int = 100,
    seed: int = 0,
    client: Any = None,
    archive_statistics: bool = True,
    greedy: bool = False,
    timings: dict[str, dict[str, float]] | None = None,
    progress: Callable[[str], None] | None = None,
    **ga_settings: Any,
) -> Comparison:
    """GA and random selections of a described ``archive``, Table II side by side, maps."""
    from xcsmoe.sampling.plots import plot_selection
    from xcsmoe.sampling.select import select_genetic, select_greedy, select_random
    from xcsmoe.sampling.stats import format_statistics, products_line, selection_statistics

    say = progress or (lambda _message: None)
    timings = {} if timings is None else timings
    say(f"selecting: {archive['stratum'].nunique()} strata, {per_stratum} per stratum")
    with stage(timings, "genetic selection", client=client):
        genetic = select_genetic(
            archive, per_stratum=per_stratum, seed=seed, client=client, **ga_settings
        )
    with stage(timings, "random selection", client=client):
        rnd = select_random(archive, per_stratum=per_stratum, seed=seed)
    baseline = None
    if greedy:
        with stage(timings, "greedy selection"):
            baseline = select_greedy(archive, per_stratum=per_stratum)
    frames = {"archive": archive} if archive_statistics else {}
    frames["random"] = rnd
    if baseline is not None:
        frames["greedy"] = baseline
    frames["genetic"] = genetic
    say("computing Table II")
    with stage(timings, "statistics"):
        table = selection_statistics(frames, seed=seed)
    result = Comparison(genetic=genetic, random=rnd, table=table, timings=timings, greedy=baseline)
    if out_dir is None:
        return result
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with stage(timings, "writing"):
        _write_frame(genetic, out / "genetic.parquet")
        _write_frame(rnd, out / "random.parquet")
        if baseline is not None:
            _write_frame(baseline, out / "greedy.parquet")
        table.to_csv(out / "table_ii.csv")
        (out / "table_ii.txt").write_text(format_statistics(table) + "\n")
        plot_selection(
            {"random stratified": rnd, "genetic (entropy-maximising)": genetic},
            out / "map.png",
            title="Selections by joint stratum",
        )
        run = {
            "products": table.attrs.get("products", {}),
            "table_ii_header": products_line(table),
            "archive": archive.attrs.get("summary", {}),
            "genetic": {
                **genetic.attrs.get("selection", {}),
                "strata_log": genetic.attrs.get("strata_log", {}),
            },
            "random": rnd.attrs.get("selection", {}),
            "timings": timings,
        }
        (out / "run.json").write_text(json.dumps(run, indent=1, default=str))
    names = ["genetic.parquet", "random.parquet", "table_ii.csv", "table_ii.txt"]
    names += ["map.png", "run.json"] + (["greedy.parquet"] if baseline is not None else [])
    result.files = {name: str(out / name) for name in names}
    return result
