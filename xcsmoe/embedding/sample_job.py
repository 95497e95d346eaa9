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
from xcsmoe.embedding.export import cls_table, plot_embedding_pca
from xcsmoe.embedding.runtime import RANDOM_WEIGHTS

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
    from distributed import Client, LocalCluster

    from xcsmoe.embedding.api import expert_usage
    from xcsmoe.model.registry import model_config
    from xcsmoe.stac.load import load_cube
    from xcsmoe.stac.sample_catalog import example_catalog, iter_pairs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if weights == RANDOM_WEIGHTS:
        print(RANDOM_WEIGHTS_BANNER)
    catalog = example_catalog(out / "catalog")
    patch = model_config(model).patch_size
    options = dict(model=model, weights=weights, window=window)
    results, tables = [], []
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        for item, s1_item in iter_pairs(catalog):
            cube = load_cube([item], [s1_item], chunks={"x": window, "y": window})
            store = out / "embeddings" / f"{item.id}.zarr"
            print(f"{item.id}: cube {dict(cube.sizes)} → {store}")
            embed_to_zarr(
                cube, store, patch=patch, client=client, overwrite=True, progress=progress,
                **options,
            )  # fmt: skip
            emb = xr.open_zarr(store, consolidated=False).load()
            pca = plot_embedding_pca(
                emb, out / "maps" / f"{item.id}_pca.png", title=f"{item.id} (PCA of tokens)"
            )
            usage = expert_usage(cube, patch, sensor="s2", **options).compute()
            usage_png = plot_dominant_expert(
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


def plot_dominant_expert(usage: xr.DataArray, path: Path, *, title: str) -> Path:
    """PNG of the dominant Soft MoE expert per token (first time step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dominant = usage.dominant_expert
    dominant = dominant.isel(time=0) if "time" in dominant.dims else dominant
    experts = usage.sizes["expert"]
    fig, ax = plt.subplots(figsize=(5, 4.3))
    image = ax.imshow(
        dominant.values, cmap="tab10", vmin=-0.5, vmax=experts - 0.5, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, ticks=range(experts), label="dominant expert")
    layer = usage.attrs.get("layer")
    ax.set_title(
        f"{title}\ndominant {usage.attrs.get('sensor', '').upper()} expert, Soft MoE layer {layer}",
        fontsize=9,
    )
    ax.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
