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
# # Analysis: from a STAC search to embedding maps
#
# This notebook takes one real Sentinel-1 + Sentinel-2 scene from a STAC API, embeds it
# lazily with `ds.csmoe.embed(patch=16)` and looks at the result three ways:
#
# 1. a **PCA map** of the patch tokens (three principal components as RGB);
# 2. a **similarity map**: which places of the scene look like a query point;
# 3. **expert usage**: which Soft MoE expert each token is routed to.
#
# It runs offline on the bundled sample (six co-registered BigEarthNet S1/S2 patches of
# 120 × 120 px at 10 m). Open it with Jupyter (`jupytext --to notebook`, or JupyterLab
# with the jupytext extension), or run it as a script:
#
#     python examples/analysis.py
#
# Settings come from environment variables:
#
# | variable | default | meaning |
# |---|---|---|
# | `XCSMOE_EXAMPLE_OUT` | `example-output` | PNGs and tables go to `<out>/analysis` |
# | `XCSMOE_EXAMPLE_MODEL` | the checkpoint's variant, else `csmoe_p16` | model name |
# | `XCSMOE_EXAMPLE_WEIGHTS` | `random` | checkpoint path, `https://` URL or registered name |
# | `XCSMOE_EXAMPLE_WINDOW` | `112` | model window in pixels (a multiple of 16) |
#
# The sample scenes (120 px) are smaller than the 224 px window `csmoe_p16` was built for,
# so the model looks at 112 px windows (7 × 7 tokens); its position embeddings are
# recomputed for that size. On a larger cube leave `window` out to use the model's own.
#
# With `weights="random"` the network is untrained but seeded: the maps then show how the
# architecture reacts to the input, not learned semantics. Point `XCSMOE_EXAMPLE_WEIGHTS`
# at a pretrained encoder (for example the one `xcsmoe demo` or the dataset-construction
# notebook trains) to see what pretraining changes.

# %%
import os
from pathlib import Path

import numpy as np
from tqdm.dask import TqdmCallback

import xcsmoe
from xcsmoe.errors import ConfigError, StacConnectionError
from xcsmoe.stac.serve import serve_stac

OUT = Path(os.environ.get("XCSMOE_EXAMPLE_OUT", "example-output")) / "analysis"
MODEL = os.environ.get("XCSMOE_EXAMPLE_MODEL") or None
WEIGHTS = os.environ.get("XCSMOE_EXAMPLE_WEIGHTS", "random")
WINDOW = int(os.environ.get("XCSMOE_EXAMPLE_WINDOW", "112"))
PATCH = 16
OUT.mkdir(parents=True, exist_ok=True)
print(f"writing to {OUT.resolve()}; model {MODEL or 'default'}, weights {WEIGHTS}")

# %% [markdown]
# ## 1. Search a STAC API
#
# The sample catalog is served as a real STAC API on loopback (`rustac serve`, started by
# `xcsmoe.stac.serve.serve_stac`) and searched over HTTP, exactly as one would search
# Planetary Computer or Earth Search: replace the URL with a provider name such as
# `"planetary-computer"` and the bounding box with your area. Without the `rustac` command
# the static catalog is searched instead; the items are the same.

# %%
BBOX = (13.70, 48.21, 13.74, 48.23)  # around one sample pair near Linz, Austria
catalog = xcsmoe.example_catalog()


def search_pairs(source):
    """S2 and S1 items of the sample collections within BBOX."""
    s2_items = xcsmoe.search(source, collections="bigearthnet-s2", bbox=BBOX)
    s1_items = xcsmoe.search(source, collections="bigearthnet-s1", bbox=BBOX)
    return s2_items, s1_items


try:
    with serve_stac(catalog) as api_url:
        print("STAC API:", api_url)
        s2, s1 = search_pairs(api_url)
except (ConfigError, StacConnectionError) as why:
    print(f"no local STAC API ({why}); searching the static catalog")
    s2, s1 = search_pairs(catalog)
print(f"found {len(s2)} Sentinel-2 and {len(s1)} Sentinel-1 items:")
for item in [*s2, *s1]:
    print(f"  {item.collection_id:15s} {item.id}  {item.datetime:%Y-%m-%d %H:%M}")

# %% [markdown]
# ## 2. Load a cube
#
# `xcsmoe.load_cube` reads both sensors with odc-stac onto one grid (S1 onto the S2 grid,
# paired with the nearest S2 date). Nothing is read yet: the cube is backed by Dask.

# %%
cube = xcsmoe.load_cube(s2, s1, chunks={"x": 128, "y": 128})
print(cube)
print(f"grid: {cube.odc.geobox.shape}, EPSG:{cube.odc.crs.epsg}, {cube.odc.geobox.resolution.x} m")

# %% [markdown]
# ## 3. Embed
#
# `ds.csmoe.embed(patch=16)` plans the embedding and returns at once: `tokens` (one vector
# per 16 × 16 px patch) on the input grid zoomed out by 16, and `cls` (one vector per model
# window) on the grid zoomed out by the window. Both grids are exact: same CRS, transform
# derived from the input's, so the maps below line up with the imagery.

# %%
emb = cube.csmoe.embed(patch=PATCH, model=MODEL, weights=WEIGHTS, window=WINDOW)
print(emb)
token_grid = emb.tokens.odc.geobox
print(
    "token grid", token_grid.shape, "pixel", token_grid.resolution.x, "m;",
    "same as the input grid zoomed out by 16:", token_grid == cube.odc.geobox.zoom_out(PATCH),
)  # fmt: skip

with TqdmCallback(desc="embedding"):
    emb = emb.compute()
tokens = emb.tokens.isel(time=0)
print(
    f"{int(tokens.notnull().all('embedding').sum())} valid tokens of size {tokens.sizes['embedding']}"
)

# %% [markdown]
# ### PCA map
#
# The three strongest directions of variation among the tokens, shown as red, green and
# blue. Similar colours mean similar embeddings.

# %%
pca_png = xcsmoe.plot_embedding_pca(emb, OUT / "pca.png", title="token embeddings, PCA (RGB)")
print("wrote", pca_png)

# %% [markdown]
# ## 4. Similarity map
#
# `ds.csmoe.similar(query)` compares the embedding at a query with every cell of the grid
# (cosine similarity, lazy). The query can be a point in the cube's CRS, a `{"lon", "lat"}`
# mapping, a window index or an embedding vector. Here: the token under the scene's centre,
# on the token grid, with the five most similar tokens outlined (the query itself first). Passing `embeddings=emb`
# reuses the embeddings computed above instead of planning them again.

# %%
west, south, east, north = cube.odc.geobox.extent.to_crs("EPSG:4326").boundingbox
centre = {"lon": (west + east) / 2, "lat": (south + north) / 2}
sim = cube.csmoe.similar(centre, k=5, grid="tokens", embeddings=emb).compute()
top = sim.isel(time=0)
print(f"query at lon {centre['lon']:.4f}, lat {centre['lat']:.4f}")
print("most similar tokens (x, y, similarity):")
for x, y, s in zip(top.top_x.values, top.top_y.values, top.top_similarity.values, strict=True):
    print(f"  {x:10.0f} {y:11.0f}  {s:+.3f}")
similarity_png = xcsmoe.plot_similarity(
    sim, cube, OUT / "similarity.png", title="similarity to the token at the scene centre"
)
print("wrote", similarity_png)

# %% [markdown]
# The query can also be a vector, so the same place can be looked for elsewhere: the
# centre token of this scene against another sample scene, about 1,500 km away in Ireland.

# %%
other_s2 = xcsmoe.search(catalog, collections="bigearthnet-s2", bbox=(-6.9, 52.30, -6.88, 52.32))
other_s1 = xcsmoe.search(catalog, collections="bigearthnet-s1", bbox=(-6.9, 52.30, -6.88, 52.32))
other = xcsmoe.load_cube(other_s2, other_s1, chunks={"x": 128, "y": 128})
query = emb.tokens.isel(time=0).sel(x=top.top_x.values[0], y=top.top_y.values[0])
elsewhere = other.csmoe.similar(
    query, grid="tokens", patch=PATCH, model=MODEL, weights=WEIGHTS, window=WINDOW
)
with TqdmCallback(desc="similarity elsewhere"):
    elsewhere = elsewhere.compute()
values = elsewhere.similarity.values
print(
    f"similarity in the other scene: median {np.nanmedian(values):+.3f}, max {np.nanmax(values):+.3f}"
)
elsewhere_png = xcsmoe.plot_similarity(
    elsewhere, other, OUT / "similarity_elsewhere.png", title="the query, in another scene"
)
print("wrote", elsewhere_png)

# %% [markdown]
# ## 5. Expert usage
#
# Every Soft MoE layer mixes its experts per token. `ds.csmoe.expert_usage` returns, per
# token, the share of combine weight each expert receives (here on the S2 path, last
# layer) and the dominant expert as a coordinate. An untrained network spreads tokens
# across experts by input statistics alone; pretraining with the expert-usage entropy loss
# keeps the spread balanced while making it meaningful.

# %%
usage = cube.csmoe.expert_usage(
    patch=PATCH, model=MODEL, weights=WEIGHTS, window=WINDOW, sensor="s2"
)
with TqdmCallback(desc="expert usage"):
    usage = usage.compute()
share = usage.isel(time=0).mean(["y", "x"])
dominant = usage.dominant_expert.isel(time=0).values
print("mean share per expert:", np.round(share.values, 3))
counts = np.bincount(dominant[dominant >= 0].ravel(), minlength=usage.sizes["expert"])
print("tokens per dominant expert:", counts.tolist())
usage_png = xcsmoe.plot_expert_usage(usage, OUT / "expert_usage.png")
print("wrote", usage_png)

# %% [markdown]
# ## 6. Keep the results
#
# The [CLS] vectors go to GeoParquet in the Major TOM embedding layout (one row per
# window, footprint in WGS84), ready for GeoPandas, DuckDB or a vector database.

# %%
parquet = xcsmoe.cls_to_geoparquet(emb, OUT / "cls.parquet")
print("wrote", parquet)
print("\noutputs:")
for path in sorted(OUT.iterdir()):
    print(f"  {path}  ({path.stat().st_size / 1024:.0f} KiB)")
