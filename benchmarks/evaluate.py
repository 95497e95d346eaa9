"""Evaluation cost: probing vs encoding, exact vs FAISS retrieval, in one run.

Prints (and writes ``--out``/evaluate.json plus a PNG):
  1. 50 linear-probe epochs on stored features ÷ one encoding pass over the same samples
     (target ≤ 1.2: features are computed once, every epoch reads them);
  2. retrieval queries/s on an archive of ``--archive`` random ``--dim``-d vectors: exact
     (torch) vs FAISS IVF at the default settings, and FAISS recall@10 against exact —
     on clustered random vectors (the neighbourhood structure embeddings have) and on
     isotropic Gaussian noise (no structure: the worst case for any approximate index).

The samples are the six real S1+S2 pairs of the sample catalog, repeated to
``--samples`` (each a full encoder pass; repetition does not change the cost).

Usage: python benchmarks/evaluate.py [--model csmoe_p16] [--samples 48]
       [--archive 1000000] [--dim 768] [--queries 1000] [--out benchmark-output]
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from xcsmoe.evaluation.features import encode_features, open_features
from xcsmoe.evaluation.probe import ProbeConfig, linear_probe
from xcsmoe.evaluation.readers import read_sample_catalog
from xcsmoe.evaluation.retrieval import retrieve


def probing_cost(model: str, samples: int, batch: int) -> dict[str, float]:
    base = read_sample_catalog()
    repeats = -(-samples // base.sizes["sample"])
    data = xr.concat([base] * repeats, dim="sample").isel(sample=slice(0, samples))
    data = data.assign_coords(sample=[f"s{i}" for i in range(samples)])
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "features.zarr"
        start = time.perf_counter()
        encode_features(data, store, model=model, weights="random", batch_size=batch, device="cpu")
        encode_s = time.perf_counter() - start
        import torchmetrics.functional.classification  # noqa: F401  (one-off import, not timed)

        start = time.perf_counter()
        features = open_features(store)  # the probe reads the store, as a user's would
        result = linear_probe(
            features, ProbeConfig(epochs=50, batch_size=16, cls_mode="raw"), eval_split="train"
        )
        probe_s = time.perf_counter() - start
    return {
        "model": model,
        "samples": samples,
        "encode_s": encode_s,
        "probe_50_epochs_s": probe_s,
        "probe_over_encode": probe_s / encode_s,
        "mAP_micro": result.value,
    }


def archive_vectors(n: int, d: int, queries: int, *, clustered: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    if not clustered:
        return (
            rng.standard_normal((queries, d), dtype=np.float32),
            rng.standard_normal((n, d), dtype=np.float32),
        )
    centres = rng.standard_normal((n // 50, d), dtype=np.float32)
    archive = np.empty((n, d), dtype=np.float32)
    step = 100_000
    for start in tqdm(range(0, n, step), desc="archive vectors", unit="block"):
        rows = min(step, n - start)
        archive[start : start + rows] = centres[rng.integers(0, len(centres), rows)]
        archive[start : start + rows] += 0.5 * rng.standard_normal((rows, d), dtype=np.float32)
    q = centres[rng.integers(0, len(centres), queries)]
    q += 0.5 * rng.standard_normal((queries, d), dtype=np.float32)
    return q, archive


def retrieval_speed(n: int, d: int, queries: int, *, clustered: bool) -> dict[str, float]:
    q, archive = archive_vectors(n, d, queries, clustered=clustered)
    start = time.perf_counter()
    exact = retrieve(q, archive, k=10, method="exact")
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    approx = retrieve(q, archive, k=10, method="faiss", index="ivf")
    faiss_total_s = time.perf_counter() - start
    # search alone: rebuild once more and time only the queries (index build is one-off)
    import faiss

    norm = archive / np.linalg.norm(archive, axis=1, keepdims=True)
    lists = round(np.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(norm[np.sort(rng.choice(n, min(n, 40 * lists), replace=False))])
    index.add(norm)
    index.nprobe = max(8, lists // 16)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    start = time.perf_counter()
    index.search(qn, 10)
    faiss_search_s = time.perf_counter() - start
    recall = float(
        np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(approx.indices, exact.indices, strict=True)]
        )
    )
    del archive, norm, index
    gc.collect()
    return {
        "archive": n,
        "dim": d,
        "queries": queries,
        "clustered": clustered,
        "exact_qps": queries / exact_s,
        "faiss_ivf_qps_search_only": queries / faiss_search_s,
        "faiss_ivf_total_s_incl_build": faiss_total_s,
        "nlist": lists,
        "nprobe": max(8, lists // 16),
        "faiss_recall_at_10": recall,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    p = results["probing"]
    left.bar(
        ["encode once", "50 probe epochs"],
        [p["encode_s"], p["probe_50_epochs_s"]],
        color=["#4c72b0", "#dd8452"],
    )
    left.set_ylabel("seconds")
    left.set_title(
        f"{p['model']}, {p['samples']} samples: ratio {p['probe_over_encode']:.3f}", fontsize=9
    )
    labels, exact, approx = [], [], []
    for r in results["retrieval"]:
        labels.append(
            f"{'clustered' if r['clustered'] else 'isotropic'}\nrecall {r['faiss_recall_at_10']:.3f}"
        )
        exact.append(r["exact_qps"])
        approx.append(r["faiss_ivf_qps_search_only"])
    x = np.arange(len(labels))
    right.bar(x - 0.2, exact, 0.4, label="exact (torch)")
    right.bar(x + 0.2, approx, 0.4, label="FAISS IVF")
    right.set_xticks(x, labels, fontsize=8)
    right.set_ylabel("queries / s")
    right.set_yscale("log")
    right.legend(fontsize=8)
    right.set_title(
        f"{results['retrieval'][0]['archive']:,} x {results['retrieval'][0]['dim']}-d archive",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="csmoe_p16")
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--archive", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--skip-isotropic", action="store_true")
    parser.add_argument("--out", default="benchmark-output")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"probing": probing_cost(args.model, args.samples, args.batch), "retrieval": []}
    print(json.dumps(results["probing"], indent=2), flush=True)
    for clustered in (True, False)[: 1 if args.skip_isotropic else 2]:
        row = retrieval_speed(args.archive, args.dim, args.queries, clustered=clustered)
        results["retrieval"].append(row)
        print(json.dumps(row, indent=2), flush=True)
    (out / "evaluate.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "evaluate.png")
    print(f"written: {out / 'evaluate.json'}, {out / 'evaluate.png'}")


if __name__ == "__main__":
    main()
