"""The main job on the bundled real sample data.

Sample STAC catalog (six co-registered S1+S2 BigEarthNet patches) → one S1+S2 cube per
S2 item (odc-stac, exact S2 grid) → CSMoE embeddings on a Dask ``LocalCluster`` into one
Zarr store per cube → PCA maps, expert-usage maps and one GeoParquet of [CLS] rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import xarray as xr

from xcsmoe.embedding.batch import embed_to_zarr
from xcsmoe.embedding.export import cls_table, plot_embedding_pca, plot_expert_usage
from xcsmoe.embedding.runtime import RANDOM_WEIGHTS, model_spec
from xcsmoe.regionstore import check_cluster_args, connect

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_BANNER = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  weights="random": this run embeds with an UNTRAINED, seeded CSMoE network.      !!
!!  The grids, Zarr stores, maps and tables are real; the embeddings carry no        !!
!!  learned meaning. Pass --weights PATH (a checkpoint saved by                       !!
!!  xcsmoe.save_checkpoint) for real embeddings.                                      !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


@dataclass(frozen=True)
class CubeResult:
    """One embedded cube of the sample job."""

    item: str
    store: str
    pca_png: str
    usage_png: str
    windows: int


def run_sample_job(
    out: str | Path,
    *,
    model: str = "csmoe_p16",
    weights: str = RANDOM_WEIGHTS,
    window: int = 112,
    n_workers: int = 2,
    progress: bool = True,
) -> list[CubeResult]:
    """Run the whole sample job into ``out`` and return what it wrote."""
    from xcsmoe.embedding.api import embedding_graph, expert_usage
    from xcsmoe.model.registry import model_config
    from xcsmoe.stac.load import load_cube
    from xcsmoe.stac.sample_catalog import example_catalog, iter_pairs

    check_cluster_args(None, n_workers)
    model_spec(model, weights)
    patch = model_config(model).patch_size
    options = dict(model=model, weights=weights, window=window)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    catalog = example_catalog(out / "catalog")
    pairs = list(iter_pairs(catalog))
    cubes = [load_cube([s2], [s1], chunks={"x": window, "y": window}) for s2, s1 in pairs]
    embedding_graph(cubes[0], patch, **options)  # every argument checked before any work
    if weights == RANDOM_WEIGHTS:
        print(RANDOM_WEIGHTS_BANNER)
    results, tables = [], []
    with connect(None, n_workers=n_workers) as client:
        for (item, _), cube in zip(pairs, cubes, strict=True):
            store = out / "embeddings" / f"{item.id}.zarr"
            print(f"{item.id}: cube {dict(cube.sizes)} → {store}")
            embed_to_zarr(
                cube, store, patch=patch, client=client, overwrite=True, progress=progress,
                **options,
            )  # fmt: skip
            emb = xr.open_zarr(store).load()
            pca = plot_embedding_pca(
                emb, out / "maps" / f"{item.id}_pca.png", title=f"{item.id} (PCA of tokens)"
            )
            usage = expert_usage(cube, patch, sensor="s2", **options).compute()
            usage_png = plot_expert_usage(
                usage, out / "maps" / f"{item.id}_experts.png", title=item.id
            )
            table = cls_table(emb)
            table.insert(1, "item_id", item.id)
            tables.append(table)
            results.append(CubeResult(item.id, str(store), str(pca), str(usage_png), len(table)))
    parquet = out / "cls_embeddings.parquet"
    pd.concat(tables, ignore_index=True).to_parquet(parquet)
    summary = {
        "model": model,
        "weights": weights,
        "window": window,
        "cubes": [asdict(r) for r in results],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(results)} Zarr stores, {2 * len(results)} maps and {parquet}")
    if weights == RANDOM_WEIGHTS:
        print("reminder: embeddings come from RANDOM weights (plumbing check, not science)")
    return results
