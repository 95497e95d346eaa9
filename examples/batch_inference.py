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
# # Batch inference on a Dask cluster, with resume
#
# `xcsmoe.embed_to_zarr` runs the same lazy graph as `ds.csmoe.embed` on a
# `dask.distributed` cluster and writes the embeddings into a Zarr store, one *region*
# (one block of windows) per task. Each region sets a marker once its values are on disk,
# so a job that dies half-way is simply started again: the rerun computes only the
# regions whose marker is missing and ends with the same store as an uninterrupted run.
#
# This notebook:
#
# 1. plans a job over one real S1 + S2 scene of the bundled sample;
# 2. starts it as a separate process (`python -m xcsmoe embed`, as a scheduler would) and
#    kills that process half-way, like a pre-empted node;
# 3. resumes it from Python on a local cluster (with its dashboard link) and checks the
#    store against an in-memory computation;
# 4. shows how the same call runs on many machines (SLURM or Kubernetes).
#
#     python examples/batch_inference.py
#
# | variable | default | meaning |
# |---|---|---|
# | `XCSMOE_EXAMPLE_OUT` | `example-output` | store and PNGs go to `<out>/batch_inference` |
# | `XCSMOE_EXAMPLE_MODEL` | `csmoe_p16` | model name |
# | `XCSMOE_EXAMPLE_WEIGHTS` | `random` | checkpoint path, `https://` URL or registered name |
# | `XCSMOE_EXAMPLE_WINDOW` | `64` | model window in pixels: one window is one region here |
# | `XCSMOE_EXAMPLE_WORKERS` | `2` | local Dask workers |
#
# The sample scene is only about 120 × 120 px (1.2 km), so the job cuts it into small windows to
# have several regions to interrupt. On a real scene keep the model's own window (224 px
# for `csmoe_p16`): a Sentinel-2 tile then makes a few thousand regions.

# %%
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from distributed import Client, LocalCluster

import xcsmoe
from xcsmoe.regionstore import read_markers

OUT = Path(os.environ.get("XCSMOE_EXAMPLE_OUT", "example-output")) / "batch_inference"
MODEL = os.environ.get("XCSMOE_EXAMPLE_MODEL", "csmoe_p16")
WEIGHTS = os.environ.get("XCSMOE_EXAMPLE_WEIGHTS", "random")
WINDOW = int(os.environ.get("XCSMOE_EXAMPLE_WINDOW", "64"))
WORKERS = int(os.environ.get("XCSMOE_EXAMPLE_WORKERS", "2"))
PATCH = 16
STORE = (OUT / "embeddings.zarr").absolute()
OUT.mkdir(parents=True, exist_ok=True)
print(f"store {STORE}; model {MODEL}, weights {WEIGHTS}, window {WINDOW} px")

# %% [markdown]
# ## 1. The job
#
# One scene of the sample catalog (S2 L2A and its S1 partner near Linz, the S2 item's
# bounding box), searched and loaded exactly as the command line will do it. `chunks=WINDOW` makes every window its
# own Dask block, hence its own region of the store.

# %%
catalog = xcsmoe.example_catalog()
CATALOG_PATH = catalog.get_self_href()
S2_COLLECTION, S1_COLLECTION = "bigearthnet-s2", "bigearthnet-s1"
BBOX = tuple(
    xcsmoe.search(catalog, collections=S2_COLLECTION, bbox=(13.70, 48.21, 13.74, 48.23))[0].bbox
)

s2 = xcsmoe.search(CATALOG_PATH, collections=S2_COLLECTION, bbox=BBOX)
s1 = xcsmoe.search(CATALOG_PATH, collections=S1_COLLECTION, bbox=BBOX)
cube = xcsmoe.load_cube(s2, s1, bbox=BBOX)
JOB = {"patch": PATCH, "model": MODEL, "weights": WEIGHTS, "window": WINDOW, "chunks": WINDOW}
plan = cube.csmoe.embed(**JOB)
times, _, block_rows, block_cols = plan.cls.data.numblocks  # one region per block
regions = times * block_rows * block_cols
print(f"cube {dict(cube.sizes)} in EPSG:{cube.odc.crs.epsg}")
print(f"{plan.sizes['cls_y']} x {plan.sizes['cls_x']} windows of {WINDOW} px -> {regions} regions")

# %% [markdown]
# ## 2. A first run, interrupted
#
# The job starts as its own process through the command line, with one worker so that
# regions finish one after the other. As soon as the first regions are marked done in the
# store, the whole process group is killed with `SIGKILL`: no clean-up, no chance to flush
# anything, as when a node is pre-empted or a job hits its wall-time.

# %%
command = [
    sys.executable, "-m", "xcsmoe", "embed", str(STORE),
    "--stac", CATALOG_PATH, "--bbox", *map(repr, BBOX),
    "--s2-collection", S2_COLLECTION, "--s1-collection", S1_COLLECTION,
    "--model", MODEL, "--patch", str(PATCH), "--weights", WEIGHTS,
    "--window", str(WINDOW), "--chunks", str(WINDOW), "--workers", "1", "--no-progress",
]  # fmt: skip
print(" ".join(command[1:]))


def regions_done(store):
    """Regions whose marker is set (0 while the store does not exist yet)."""
    try:
        return int(read_markers(store).sum())
    except Exception:
        return 0


def kill(process):
    """SIGKILL the process and its workers (its whole process group where there is one)."""
    if hasattr(os, "killpg"):
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.wait()


STOP_AFTER = max(1, regions // 4)
shutil.rmtree(STORE, ignore_errors=True)  # this notebook's own store: start from scratch
start = time.monotonic()
first_run = subprocess.Popen(command, start_new_session=True)
while regions_done(STORE) < STOP_AFTER and first_run.poll() is None:
    if time.monotonic() - start > 600:
        break
    time.sleep(0.01)
if first_run.poll() is None:
    kill(first_run)
    print(f"killed the first run after {time.monotonic() - start:.1f} s")
elif first_run.returncode != 0:
    raise RuntimeError(f"the command failed (exit {first_run.returncode}); see its output above")
else:
    print("the first run finished before it could be killed: nothing will be left to resume")
done_before = read_markers(STORE).copy()
complete = xr.open_zarr(STORE).attrs["xcsmoe_complete"]
print(
    f"regions on disk: {int(done_before.sum())} of {done_before.size}; store complete: {complete}"
)

# %% [markdown]
# ## 3. Resume on a local cluster
#
# The rerun is the same job from Python, on a `LocalCluster`. Its dashboard (task stream,
# memory, progress) is at the link printed below while the job runs; it needs `bokeh`
# installed. The cluster here uses threads (`processes=False`): a notebook run as a script
# cannot start worker *processes* without an `if __name__ == "__main__":` guard, and torch
# releases the GIL, so threads use the cores as well. In a script of your own (guarded),
# `embed_to_zarr(..., client=None)` starts a process-based `LocalCluster` itself.
#
# The store carries the job's fingerprint (model, weights digest, grid, window, dtype…);
# a rerun with any value-changing setting different would be refused, naming the setting.

# %%
cluster = LocalCluster(
    n_workers=WORKERS, threads_per_worker=1, processes=False, dashboard_address=":0"
)
client = Client(cluster)
dashboard = "" if importlib.util.find_spec("bokeh") else " (install bokeh to serve it)"
print(f"Dask dashboard: {client.dashboard_link}{dashboard}")

report = xcsmoe.embed_to_zarr(cube, STORE, client=client, **JOB)
print(f"resumed: {report.computed} regions computed, {report.skipped} skipped, of {report.regions}")
if report.skipped != int(done_before.sum()):
    raise RuntimeError("the rerun did not skip exactly the regions of the first run")

# %% [markdown]
# Running it once more is a no-op: the store is complete, nothing is computed and the
# store is not even opened for writing.

# %%
again = xcsmoe.embed_to_zarr(cube, STORE, client=client, **JOB)
print(f"third run: {again.computed} computed, {again.skipped} skipped")

# %% [markdown]
# ## 4. Check the store
#
# The resumed store must hold what an uninterrupted, in-memory run gives. The grid is the
# cube's, zoomed out by 16 for the tokens.

# %%
stored = xr.open_zarr(STORE).load()
reference = plan.compute()
for name in ("tokens", "cls"):
    difference = float(np.nanmax(np.abs(stored[name].values - reference[name].values)))
    print(f"{name}: max |store - in memory| = {difference:.2e}")
    np.testing.assert_allclose(stored[name].values, reference[name].values, atol=1e-5)
print(
    "token grid matches the cube's zoomed out by 16:",
    stored.odc.geobox == cube.odc.geobox.zoom_out(PATCH),
)
client.close()
cluster.close()

# %% [markdown]
# Which regions came from which run, over the scene (true colour), and the stored tokens'
# PCA map:

# %%
first = done_before.astype(bool)[0]
a, _, c, _, e, f = stored.attrs["cls_transform"]
rows, cols = first.shape
rgb = np.stack([cube[b].isel(time=0).values.astype("float32") for b in ("B04", "B03", "B02")], -1)
low, high = np.nanpercentile(rgb, [2, 98])
fig, ax = plt.subplots(figsize=(5.5, 5))
left, bottom, right, top = cube.odc.geobox.boundingbox
ax.imshow(np.clip((rgb - low) / (high - low), 0, 1), extent=(left, right, bottom, top))
x_edges, y_edges = c + a * np.arange(cols + 1), f + e * np.arange(rows + 1)
ax.pcolormesh(
    x_edges, y_edges, np.where(first, 0.0, 1.0), cmap="coolwarm", vmin=0, vmax=1, alpha=0.4,
    edgecolors="white", linewidth=0.8,
)  # fmt: skip
for i in range(rows):
    for j in range(cols):
        label = "run 1" if first[i, j] else "resumed"
        ax.text(
            c + a * (j + 0.5),
            f + e * (i + 0.5),
            label,
            ha="center",
            va="center",
            fontsize=7,
            color="white",
        )
ax.set_title(
    f"regions: {int(first.sum())} from the killed run, {report.computed} resumed", fontsize=9
)
ax.ticklabel_format(useOffset=False, style="plain")
ax.tick_params(labelsize=7)
fig.tight_layout()
fig.savefig(OUT / "resume.png", dpi=120)
plt.close(fig)
print("wrote", OUT / "resume.png")
print("wrote", xcsmoe.plot_embedding_pca(stored, OUT / "pca.png", title="stored tokens, PCA"))

# %% [markdown]
# ## 5. The same call on many machines
#
# Nothing above is tied to one machine: `embed_to_zarr` accepts any `distributed.Client`
# (or a scheduler address). Workers load the model once each and regions are independent.
# The store is any location every worker can reach: an object-store URL (`s3://`, `gs://`,
# `az://`), so the workers share no disk at all, or a folder on a shared file system
# mounted at the same path everywhere. Markers and the job fingerprint live in the store
# itself, so kill the driver, lose workers, get pre-empted: run the same cell again and it
# resumes, on S3 as on disk.
#
# Credentials come the usual way: the `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
# `AWS_ENDPOINT_URL` for an S3-compatible store such as MinIO or Ceph) variables or an
# `~/.aws` profile, on the client *and* on every worker (SLURM jobs inherit the
# submitting shell's environment; give pods the variables, e.g. from a Kubernetes
# secret). `storage_options=` (s3fs's `endpoint_url`, `key`, `secret`, `profile`, ...)
# sets them explicitly instead; it travels with every task, so prefer the environment
# for secrets on a shared cluster.
#
# - **SLURM** with [dask-jobqueue](https://jobqueue.dask.org): `SLURMCluster` submits
#   worker jobs; `gpu_resources=True` pins each region on a worker that declared a GPU.
# - **Kubernetes** with [dask-kubernetes](https://kubernetes.dask.org): the operator's
#   `KubeCluster` starts scheduler and worker pods.
#
# The cell below is the recipe for either; it does nothing unless `SCALE_OUT` names a
# system you have (neither package is a dependency of xcsmoe).

# %%
SCALE_OUT = None  # "slurm" or "kubernetes" on such a system; not run here

if SCALE_OUT is not None:
    if SCALE_OUT == "slurm":
        from dask_jobqueue import SLURMCluster

        big_cluster = SLURMCluster(
            queue="gpu", cores=8, processes=1, memory="64GB", walltime="04:00:00",
            job_extra_directives=["--gres=gpu:1"], worker_extra_args=["--resources", "GPU=1"],
        )  # fmt: skip
    else:
        from dask_kubernetes.operator import KubeCluster

        big_cluster = KubeCluster(
            name="xcsmoe-embed", image="ghcr.io/your-org/xcsmoe:latest", n_workers=16,
            resources={"limits": {"nvidia.com/gpu": "1"}},
        )  # fmt: skip
    big_cluster.scale(16)
    big_client = Client(big_cluster)
    print("dashboard:", big_client.dashboard_link)
    import planetary_computer

    area = {"bbox": (13.0, 47.5, 14.5, 48.5), "datetime": "2023-06"}
    s2_items = xcsmoe.search(
        "planetary-computer", collections="sentinel-2-l2a", max_cloud_cover=10,
        modifier=planetary_computer.sign_inplace, **area,
    )  # fmt: skip
    s1_items = xcsmoe.search(
        "planetary-computer", collections="sentinel-1-rtc",
        modifier=planetary_computer.sign_inplace, **area,
    )  # fmt: skip
    scene = xcsmoe.load_cube(s2_items, s1_items, provider="planetary-computer", crs="utm")
    # keys from the AWS_* variables of client and workers; None endpoint: AWS itself
    storage_options = {"endpoint_url": os.environ.get("AWS_ENDPOINT_URL")}
    xcsmoe.embed_to_zarr(
        scene, "s3://your-bucket/embeddings/upper-austria.zarr", client=big_client, patch=16,
        model="csmoe_p16", weights="path/or/url/of/csmoe_p16.safetensors",
        device="cuda", gpu_resources=True, storage_options=storage_options,
    )  # fmt: skip
