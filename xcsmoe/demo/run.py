"""``run_demo``: the whole system on the bundled real sample, random against pretrained.

Plan first — settings, output folder, figure folder and the ``rustac`` server command are
checked before anything starts — then, with a loopback STAC API and one Dask
``LocalCluster`` up for the whole run (both stopped at the end, also on error):

1. search the served sample catalog over HTTP, pair S2 and S1 items;
2. build the S1+S2 patch store;
3. pretrain (or reuse the cached result of the same training);
4. embed the six cubes with random and with pretrained weights into Zarr;
5. score both: pair and land-cover retrieval on the patches, expert balance on the cubes;
6. write the maps, the GeoParquet of [CLS] rows, the loss curve and the results table.

Output folder::

    patches.zarr                      the patch store
    pretrain/encoder.safetensors      pretrained encoder (xcsmoe.embed(weights=...) reads it)
    pretrain/metrics.csv              every logged loss term per step
    embeddings/{random,pretrained}/<item>.zarr
    features/{random,pretrained}.zarr [CLS] features of the patches
    cls_embeddings.parquet            pretrained [CLS] per window, with footprints
    figures/*.png                     PCA map, similarity map, expert usage and balance, loss
    results.{csv,json,md}             the results table
    demo.json                         settings, cache key, timings, paths
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from xcsmoe.demo.settings import DemoSettings
from xcsmoe.errors import ConfigError, expected

__all__ = ["FIGURES", "DemoResult", "run_demo"]

MARKER = ".xcsmoe-demo"
LABELS = ("random", "pretrained")
FIGURES = (
    "pca_map.png",
    "similarity_map.png",
    "expert_usage_map.png",
    "expert_balance.png",
    "loss_curve.png",
)
RANDOM = "random"


@dataclass(frozen=True)
class DemoResult:
    """What a run wrote and measured."""

    out: Path
    cache_hit: bool
    cache_key: str
    seconds: float
    table: pd.DataFrame
    artefacts: dict[str, Path]
    figures: dict[str, Path]


def run_demo(
    out: str | os.PathLike[str] = "demo-output",
    *,
    settings: DemoSettings | None = None,
    use_cache: bool = True,
    figures: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **changes: Any,
) -> DemoResult:
    """Run the demo into ``out`` (module doc) and return what it wrote.

    Args:
        out: output folder: new, empty, or written by an earlier demo run.
        settings: a :class:`DemoSettings`; ``changes`` override its fields
            (e.g. ``steps=20``).
        use_cache: reuse (and store) the pretraining of identical settings and patches.
        figures: also copy the PNGs into this folder (e.g. ``docs/images/demo``).
        progress: progress bars for the long steps.
    """
    settings = settings if settings is not None else DemoSettings()
    if not isinstance(settings, DemoSettings):
        raise ConfigError(expected("settings", "a DemoSettings", type(settings).__name__))
    unknown = sorted(set(changes) - set(DemoSettings.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            expected("settings", f"fields among {sorted(DemoSettings.__dataclass_fields__)}",
                     unknown)
        )  # fmt: skip
    settings = settings.replace(**changes) if changes else settings
    out = check_out(out)
    figure_dir = check_folder(figures, "figures") if figures is not None else None
    from xcsmoe.stac.serve import rustac_executable

    rustac_executable()  # the STAC API needs it: refuse now, not after minutes of work
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by xcsmoe demo\n")
    timings: dict[str, float] = {}
    with _served_and_clustered(settings) as (url, client):
        state = _pipeline(out, settings, url, client, use_cache, progress, timings)
    seconds = time.monotonic() - started
    figure_paths = {name: out / "figures" / name for name in FIGURES}
    if figure_dir is not None:
        figure_dir.mkdir(parents=True, exist_ok=True)
        for name, path in figure_paths.items():
            shutil.copyfile(path, figure_dir / name)
        shutil.copyfile(state["tables"]["markdown"], figure_dir / "results.md")
    artefacts = _artefacts(out, state)
    _write_record(out, settings, state, timings, seconds, artefacts)
    from xcsmoe.demo.report import summary_text

    print(
        summary_text(
            settings=settings, patches=state["store"].patches, pairs=state["pairs"],
            params=_encoder_parameters(settings.model), cache_hit=state["entry"].hit,
            seconds=seconds, artefacts={**artefacts, **({"README figures": figure_dir}
                                                        if figure_dir else {})},
            table=state["table"],
        )
    )  # fmt: skip
    return DemoResult(
        out=out,
        cache_hit=state["entry"].hit,
        cache_key=state["entry"].key,
        seconds=seconds,
        table=state["table"],
        artefacts=artefacts,
        figures=figure_paths,
    )


# ------------------------------------------------------------------------------ plan


def check_out(out: Any) -> Path:
    """``out`` as a path that may be written: absent, empty, or an earlier demo's folder."""
    if not isinstance(out, str | os.PathLike) or not str(out):
        raise ConfigError(expected("out", "a folder path", out))
    path = Path(out).expanduser().absolute()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(expected("out", "a folder", f"{path} (a file)"))
        if any(path.iterdir()) and not (path / MARKER).is_file():
            raise ConfigError(
                expected("out", "a new or empty folder, or one an earlier demo wrote",
                         f"{path} (holds other files)", "Choose another --out folder.")
            )  # fmt: skip
    return check_folder(path, "out")


def check_folder(folder: Any, argument: str) -> Path:
    """``folder`` as an absolute path whose nearest existing ancestor is writable."""
    if not isinstance(folder, str | os.PathLike) or not str(folder):
        raise ConfigError(expected(argument, "a folder path", folder))
    path = Path(folder).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            expected(argument, "a folder that can be written", str(path),
                     f"{existing} is not writable; choose another folder.")
        )  # fmt: skip
    return path


@contextmanager
def _served_and_clustered(settings: DemoSettings) -> Iterator[tuple[str, Any]]:
    """The sample catalog on a loopback STAC API and a ``LocalCluster``, for one run."""
    from xcsmoe.cluster import connect
    from xcsmoe.stac.sample_catalog import example_catalog
    from xcsmoe.stac.serve import serve_stac

    catalog = example_catalog()
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    try:
        with serve_stac(catalog) as url, connect(None, n_workers=settings.workers) as client:
            print(f"STAC API (rustac) serving the sample catalog at {url}")
            print(f"Dask LocalCluster: {len(client.scheduler_info()['workers'])} workers, "
                  f"dashboard {client.dashboard_link}")  # fmt: skip
            try:
                yield url, client
            finally:  # workers that take a few seconds to exit are stopped; no news
                nanny.setLevel(logging.ERROR)
    finally:
        nanny.setLevel(level)


# ------------------------------------------------------------------------- execution


def _pipeline(
    out: Path,
    settings: DemoSettings,
    url: str,
    client: Any,
    use_cache: bool,
    progress: bool,
    timings: dict[str, float],
) -> dict[str, Any]:
    from xcsmoe.demo import figures, report, scores, steps

    state: dict[str, Any] = {}
    with _step("1/6 search the STAC API", timings, "search"):
        pairs = steps.search_pairs(url)
        names = [s2.id for s2, _ in pairs]
        print(f"  {len(pairs)} S2+S1 pairs found over HTTP")
    with _step("2/6 build the S1+S2 patch store", timings, "patches"):
        store = out / "patches.zarr"
        state["store"] = steps.build_store(pairs, store, settings, client=client, progress=progress)
        print(f"  {state['store'].patches} patches of {settings.patch_size} px → {store}")
    with _step(f"3/6 pretrain {settings.model} for {settings.steps} steps", timings, "pretrain"):
        entry = steps.pretrained_weights(
            settings, store, use_cache=use_cache, scratch=out / "pretrain" / ".run",
            progress=progress,
        )  # fmt: skip
        print(f"  {'cache hit' if entry.hit else 'trained'}: {entry.folder}")
        weights = _keep_pretraining(entry, out / "pretrain")
        state["entry"], state["weights"] = entry, weights
    weights_of = {RANDOM: RANDOM, "pretrained": str(weights)}
    with _step("4/6 embed the sample cubes into Zarr", timings, "embed"):
        cubes = client.persist(steps.load_cubes(pairs, settings))  # read once, used thrice
        embeddings = {}
        for label, w in weights_of.items():
            stores = steps.embed_cubes(
                cubes, names, out / "embeddings" / label, weights=w, settings=settings,
                client=client, progress=progress,
            )  # fmt: skip
            embeddings[label] = [xr.open_zarr(store).load() for store in stores]
    with _step("5/6 evaluate random against pretrained weights", timings, "evaluate"):
        labels = {s2.id: list(s2.properties["bigearthnet:labels"]) for s2, _ in pairs}
        samples = scores.patch_samples(store, labels)
        features, usages, balance = {}, {}, {}
        in_memory = [cube.compute() for cube in cubes]
        for label, w in weights_of.items():
            features[label] = scores.encode(
                samples, out / "features" / f"{label}.zarr", weights=w, settings=settings,
                progress=False,
            )  # fmt: skip
            lazy = scores.expert_usages(in_memory, weights=w, settings=settings)
            usages[label] = _computed(lazy, progress, f"expert usage ({label})")
            balance[label] = {k: scores.expert_balance(v) for k, v in usages[label].items()}
        rows = scores.retrieval_rows(features, settings.top_k)
        rows += scores.balance_rows(balance, settings)
        table = report.results_table(rows, LABELS)
        state["table"] = table
        state["tables"] = report.write_tables(table, out)
        state["samples"] = samples.sizes["sample"]
    with _step("6/6 maps, GeoParquet and loss curve", timings, "figures"):
        folder = out / "figures"
        cubes = in_memory
        figures.pca_panel(cubes, embeddings, names, folder / "pca_map.png")
        _similarity_map(cubes[0], embeddings["pretrained"][0], folder / "similarity_map.png")
        last = max(k[1] for k in usages["pretrained"])
        _usage_map(usages["pretrained"][("s2", last)][0], names[0], folder / "expert_usage_map.png")
        figures.balance_chart(table, LABELS, folder / "expert_balance.png")
        _loss_curve(out / "pretrain" / "metrics.csv", folder / "loss_curve.png", settings)
        for name in FIGURES:
            figures.compact_png(folder / name)
        state["parquet"] = _geoparquet(
            embeddings["pretrained"], names, out / "cls_embeddings.parquet"
        )
    state["pairs"] = len(pairs)
    return state


@contextmanager
def _step(title: str, timings: dict[str, float], key: str) -> Iterator[None]:
    print(f"[{title}]", flush=True)
    start = time.monotonic()
    yield
    timings[key] = round(time.monotonic() - start, 2)


def _keep_pretraining(entry: Any, folder: Path) -> Path:
    """Copy the encoder and the metrics log next to the demo's other outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    encoder = folder / "encoder.safetensors"
    shutil.copyfile(entry.encoder, encoder)
    shutil.copyfile(entry.metrics, folder / "metrics.csv")
    if not entry.hit and entry.folder.parent == folder:  # a --no-cache run's scratch folder
        shutil.rmtree(entry.folder, ignore_errors=True)
    return encoder


def _computed(
    arrays: dict[Any, list[xr.DataArray]], progress: bool, desc: str
) -> dict[Any, list[xr.DataArray]]:
    """Compute every lazy array here, on threads, keeping the layout.

    The routing graphs are many small ones (six Soft MoE layers per cube) over cubes
    already in memory: in this process they cost a fraction of a round trip through the
    cluster's scheduler.
    """
    import dask
    from tqdm.auto import tqdm

    out: dict[Any, list[xr.DataArray]] = {}
    for key, values in tqdm(arrays.items(), desc=desc, unit="layer", disable=not progress):
        out[key] = list(dask.compute(*values, scheduler="threads"))
    return out


def _similarity_map(cube: xr.Dataset, emb: xr.Dataset, path: Path) -> Path:
    """Cosine similarity of every token to the centre token of the first cube."""
    from xcsmoe.embedding.similar import plot_similarity, similar

    row, col = emb.sizes["y"] // 2, emb.sizes["x"] // 2
    result = similar(cube, {"row": row, "col": col}, k=5, grid="tokens", embeddings=emb).compute()
    title = f"pretrained: similarity to token (row {row}, col {col}); 5 most similar outlined"
    return plot_similarity(result, cube, path, title=title)


def _usage_map(usage: xr.DataArray, name: str, path: Path) -> Path:
    from xcsmoe.embedding.export import plot_expert_usage

    return plot_expert_usage(usage, path, title=f"{name} (pretrained)")


def _loss_curve(metrics: Path, path: Path, settings: DemoSettings) -> Path:
    from xcsmoe.pretraining.train import plot_loss_curve

    path.parent.mkdir(parents=True, exist_ok=True)
    return plot_loss_curve(metrics, path, title=f"{settings.model}, demo run")


def _geoparquet(embeddings: list[xr.Dataset], names: list[str], path: Path) -> Path:
    from xcsmoe.embedding.export import cls_table

    tables = []
    for name, emb in zip(names, embeddings, strict=True):
        table = cls_table(emb)
        table.insert(1, "item_id", name)
        tables.append(table)
    pd.concat(tables, ignore_index=True).to_parquet(path)
    return path


def _encoder_parameters(model: str) -> int:
    from xcsmoe.model.registry import create_model

    return sum(p.numel() for p in create_model(model).parameters())


def _artefacts(out: Path, state: dict[str, Any]) -> dict[str, Path]:
    return {
        "patch store": out / "patches.zarr",
        "encoder": state["weights"],
        "embeddings": out / "embeddings",
        "features": out / "features",
        "GeoParquet": state["parquet"],
        "figures": out / "figures",
        "results": state["tables"]["markdown"],
    }


def _write_record(
    out: Path,
    settings: DemoSettings,
    state: dict[str, Any],
    timings: dict[str, float],
    seconds: float,
    artefacts: dict[str, Path],
) -> None:
    from xcsmoe import __version__

    record = {
        "xcsmoe": __version__,
        "settings": asdict(settings),
        "cache": {"key": state["entry"].key, "hit": state["entry"].hit},
        "patches": state["store"].patches,
        "evaluation_samples": state["samples"],
        "seconds": round(seconds, 1),
        "step_seconds": timings,
        "artefacts": {k: str(v) for k, v in artefacts.items()},
    }
    (out / "demo.json").write_text(json.dumps(record, indent=2))
