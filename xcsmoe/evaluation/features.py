"""Feature stores: a labelled sample set encoded once by a frozen encoder, kept in Zarr.

Every probe epoch and every retrieval query reads these features, never the images.
A store (a resumable region store, :mod:`xcsmoe.regionstore`) holds

* ``cls`` ``(sample, sensor, embedding)`` — the raw [CLS] token of each sensor;
* ``token_mean`` ``(sample, sensor, embedding)`` — the mean of the final patch tokens;
* ``pooled`` ``(sample, sensor, embedding)`` — ``fc_norm`` of that mean, for models whose
  own feature is pooled (CSMAE, ``global_pool="avg"``);
* ``tokens`` ``(sample, sensor, layer, embedding, token_y, token_x)`` — patch-token grids
  of the blocks in ``layers`` (for segmentation probes), when asked for;
* ``labels`` and the ``split`` coordinate of the sample set; attributes ``model``,
  ``weights`` (a content digest), ``task``, ``classes``, ``num_tokens``.

:func:`feature_vectors` builds the classification input of the paper's Table V from it:
``"raw"`` [CLS], ``"normalised"`` (L2) [CLS], ``"mean"`` of patch tokens, ``"mean_all"``
(patch tokens and [CLS]), or ``"pooled"`` (the model's own feature); ``"auto"`` is
``"pooled"`` for CSMAE and ``"raw"`` otherwise.

``store`` is a local path or a URL (``s3://``, ``gs://``, ``az://``, ``file://``,
``memory://``; :mod:`xcsmoe.storage`) with ``storage_options``: markers, fingerprint and
completion flag live in the store, so resume and refusal work the same on object storage.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor
from tqdm.auto import tqdm

from xcsmoe.errors import ConfigError, InputError, expected
from xcsmoe.evaluation.datasets import check_samples, model_inputs, sensors_of
from xcsmoe.storage import StoreLocation, inspect_location, store_location

__all__ = [
    "CLS_MODES",
    "check_same_model",
    "encode_features",
    "feature_vectors",
    "open_features",
    "splits_of",
]

CLS_MODES = ("auto", "raw", "normalised", "mean", "mean_all", "pooled")
FEATURE_FORMAT = 1


def encode_features(
    samples: xr.Dataset,
    store: str | PathLike[str] | StoreLocation,
    *,
    model: str,
    weights: str | PathLike[str] | None,
    sensors: str | Sequence[str] = "auto",
    layers: Sequence[int] = (),
    image_size: int | None = None,
    batch_size: int = 32,
    region_size: int = 256,
    device: str = "auto",
    dtype: str = "float32",
    seed: int = 0,
    client: Any = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Encode ``samples`` once into the feature store at ``store``; returns it opened.

    Args:
        samples: a sample set (:mod:`xcsmoe.evaluation.datasets`).
        store: a local path or a URL (``s3://bucket/features.zarr``, see
            :mod:`xcsmoe.storage`); a new location, an empty folder, or a store of this
            same job (to resume).
        storage_options: backend options for a URL ``store`` (e.g. s3fs's
            ``endpoint_url``, ``key``, ``secret``); by default the backend reads its
            environment variables (``AWS_*``) on the client and on every worker.
        model, weights, seed: the frozen encoder (``weights="random"`` for a seeded
            untrained one).
        sensors: ``"auto"`` (every sensor the set has complete), ``"s1"``, ``"s2"`` or both.
        layers: block indices whose token grids to keep (e.g. ``(1, 3, 5, -1)``).
        image_size: side the images are resized to (bilinear, antialiased); default the
            model's ``img_size``. Must be a multiple of the patch size.
        batch_size: images per forward pass; ``region_size``: samples per stored region
            (the unit of resumption and of a cluster task).
        device, dtype: where and at which precision the encoder runs. Default float32,
            the precision of the paper's evaluation; ``"auto"`` is bf16 autocast where the
            device computes bf16 natively (see :func:`xcsmoe.embed`; on the sample pairs
            bf16 keeps S1→S2 retrieval rankings at Kendall τ ≥ 0.98 of float32). Stored in
            ``attrs["dtype"]`` and the fingerprint.
        client, n_workers: run the regions on a Dask cluster (a ``distributed.Client``, a
            scheduler address, or a new ``LocalCluster`` of ``n_workers``); default: in
            this process, batch after batch (the GPU path).

    An interrupted run resumes; a store written by another model, other weights or other
    settings is refused (``overwrite=True`` replaces it). Every argument is checked and
    the store inspected (bucket, credentials, what is there) before a cluster starts or
    a byte is written.
    """
    from xcsmoe.cluster import check_cluster_args, check_workers_reach
    from xcsmoe.embedding.precision import resolve_dtype
    from xcsmoe.embedding.runtime import resolve_device, resolve_model, weights_digest
    from xcsmoe.regionstore import StoreSpec, check_store, create_store, finish_store

    location = store_location(store, storage_options)
    on_cluster = client is not None or n_workers is not None
    workers = 2 if n_workers is None else n_workers
    if on_cluster:
        check_cluster_args(client, workers)
        check_workers_reach(location, client)  # memory:// is not shared by processes
    samples = check_samples(samples)
    dtype = resolve_dtype(dtype, resolve_device(device))  # the precision every region uses
    if not isinstance(model, str):
        raise ConfigError(expected("model", "a variant name, e.g. 'csmoe_p16'", model))
    spec, config = resolve_model(model, weights, patch=16, seed=seed)  # checkpoint checked now
    chosen = _sensors(samples, sensors)
    size = image_size or config.img_size
    if size % config.patch_size:
        raise ConfigError(
            expected("image_size", f"a multiple of the patch size {config.patch_size}", size)
        )
    depth = config.depth_specific + config.depth_shared
    layers = tuple(int(i) for i in layers)
    if any(not -depth <= i < depth for i in layers) or len(set(layers)) != len(layers):
        raise ConfigError(
            expected("layers", f"distinct block indices in [-{depth}, {depth})", layers)
        )
    for name, value in (("batch_size", batch_size), ("region_size", region_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(expected(name, "a positive integer", value))
    model_inputs(samples.isel(sample=slice(0, 1)), config, chosen)  # bands checked up front
    grid = size // config.patch_size
    n = samples.sizes["sample"]
    fingerprint = {
        "format": FEATURE_FORMAT, "model": model, "weights": weights_digest(spec),
        "sensors": list(chosen), "layers": list(layers), "image_size": size,
        "samples": _samples_digest(samples),
    }  # fmt: skip
    if dtype != "float32":  # float32 stores keep the fingerprint they had before dtype existed
        fingerprint["dtype"] = dtype
    template = _template(samples, config, chosen, layers, grid, spec.name, fingerprint["weights"])
    template.attrs["dtype"] = dtype
    regions = -(-n // region_size)
    encoding = {
        name: {"chunks": (region_size, *template[name].shape[1:])}
        for name in template.data_vars
        if template[name].dims[0] == "sample"
    }
    store_spec = StoreSpec(template, encoding, ("region",), (regions,), fingerprint)
    status = check_store(location, store_spec, overwrite=overwrite)
    if not status.complete:
        job = _Job(
            spec=spec,
            config=config,
            sensors=chosen,
            layers=layers,
            size=size,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
        )
        todo = status.todo
        if not on_cluster:
            create_store(status, store_spec)
            for (index,) in tqdm(
                todo, desc="encoding features", unit="region", disable=not progress
            ):
                part = slice(index * region_size, min(n, (index + 1) * region_size))
                _write(
                    location,
                    index,
                    part,
                    job.run(model_inputs(samples.isel(sample=part), config, chosen)),
                )
        else:
            _run_on_cluster(
                location,
                status,
                store_spec,
                samples,
                job,
                region_size,
                client,
                workers,
                progress,
            )
        finish_store(location)
    return open_features(location)


def open_features(
    store: str | PathLike[str] | StoreLocation | xr.Dataset,
    *,
    model: str | None = None,
    weights: str | PathLike[str] | None = None,
    seed: int = 0,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Open a feature store (a local path, or a URL with ``storage_options``, see
    :mod:`xcsmoe.storage`); with ``model``/``weights`` given, refuse one written by another
    model or other weights (:class:`InputError` naming both)."""
    if isinstance(store, xr.Dataset):
        ds = store
    else:
        location = store_location(store, storage_options)
        if inspect_location(location).kind != "zarr":
            raise InputError(
                expected(
                    "features", "a feature store written by encode_features", str(location.path)
                )
            )
        ds = xr.open_zarr(**location.zarr_args(), chunks=None)
    if ds.attrs.get("xcsmoe_features") != FEATURE_FORMAT:
        raise InputError(
            expected(
                "features",
                f"a feature store (format {FEATURE_FORMAT})",
                ds.attrs.get("xcsmoe_features"),
            )
        )
    if ds.attrs.get("xcsmoe_complete") is False:
        raise InputError(
            expected(
                "features",
                "a complete feature store",
                "an unfinished one",
                "Rerun encode_features to resume it.",
            )
        )
    if model is not None:
        from xcsmoe.embedding.runtime import model_spec, weights_digest

        wanted = {"model": model, "weights": weights_digest(model_spec(model, weights, seed=seed))}
        _compare_identity(ds.attrs, wanted, "features")
    return ds


def check_same_model(*stores: xr.Dataset) -> None:
    """Raise :class:`InputError` unless every store was encoded by the same model/weights."""
    first = stores[0].attrs
    for other in stores[1:]:
        _compare_identity(
            other.attrs, {"model": first.get("model"), "weights": first.get("weights")}, "archive"
        )


def feature_vectors(
    features: xr.Dataset, mode: str = "auto", *, sensors: str | Sequence[str] = "all"
) -> np.ndarray:
    """(N, D·k) float32 classification input built from a feature store (module doc);
    ``sensors`` picks ``"s1"``, ``"s2"`` or ``"all"`` (concatenated, S1 first)."""
    if mode not in CLS_MODES:
        raise ConfigError(expected("mode", f"one of {CLS_MODES}", mode))
    chosen = (
        list(features["sensor"].values)
        if sensors == "all"
        else [sensors]
        if isinstance(sensors, str)
        else list(sensors)
    )
    unknown = [s for s in chosen if s not in features["sensor"].values]
    if unknown:
        raise InputError(
            expected("sensors", f"sensors of the store {list(features['sensor'].values)}", unknown)
        )
    if mode == "auto":
        mode = "pooled" if "pooled" in features else "raw"
    part = features.sel(sensor=chosen)
    if mode == "pooled":
        if "pooled" not in part:
            raise ConfigError(
                expected(
                    "mode", "a mode the model has ('pooled' is for global_pool='avg' models)", mode
                )
            )
        values = part["pooled"].values
    elif mode == "mean":
        values = part["token_mean"].values
    elif mode == "mean_all":
        n = int(features.attrs["num_tokens"])
        values = (part["cls"].values + n * part["token_mean"].values) / (n + 1)
    else:
        values = part["cls"].values
        if mode == "normalised":
            values = F.normalize(torch.from_numpy(np.ascontiguousarray(values)), dim=-1).numpy()
    return np.ascontiguousarray(values.reshape(values.shape[0], -1), dtype=np.float32)


def splits_of(features: xr.Dataset) -> np.ndarray:
    """The ``split`` coordinate as a plain ``<U`` array (Zarr may return other string dtypes)."""
    return np.asarray([str(s) for s in features["split"].values])


# ----------------------------------------------------------------------------- execution


class _Job:
    """Encodes normalised inputs of one region; small and picklable (no model inside)."""

    def __init__(
        self,
        *,
        spec: Any,
        config: Any,
        sensors: tuple[str, ...],
        layers: tuple[int, ...],
        size: int,
        batch_size: int,
        device: str,
        dtype: str = "float32",
    ) -> None:
        self.spec, self.config, self.sensors, self.layers = spec, config, sensors, layers
        self.size, self.batch_size, self.device, self.dtype = size, batch_size, device, dtype

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from xcsmoe.embedding.precision import compute_precision
        from xcsmoe.embedding.runtime import cached_model, resolve_device

        device = resolve_device(self.device)
        model = cached_model(self.spec, device)
        n = next(iter(inputs.values())).shape[0]
        out: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode(), compute_precision(self.dtype, device):
            for start in range(0, n, self.batch_size):
                rows: dict[str, list[Tensor]] = {}
                for sensor in self.sensors:
                    x = torch.from_numpy(inputs[sensor][start : start + self.batch_size]).to(device)
                    if x.shape[-1] != self.size or x.shape[-2] != self.size:
                        x = F.interpolate(
                            x,
                            size=(self.size, self.size),
                            mode="bilinear",
                            antialias=True,
                            align_corners=False,
                        )
                    final, kept = model.forward_intermediates(x, sensor, self.layers)
                    patch = final[:, 1:]
                    rows.setdefault("cls", []).append(final[:, 0])
                    rows.setdefault("token_mean", []).append(patch.mean(dim=1))
                    if getattr(model, "fc_norm", None) is not None:
                        rows.setdefault("pooled", []).append(model.fc_norm(patch.mean(dim=1)))
                    if self.layers:
                        g = self.size // self.config.patch_size
                        grids = torch.stack(
                            [h[:, 1:].transpose(1, 2).reshape(h.shape[0], -1, g, g) for h in kept],
                            dim=1,
                        )
                        rows.setdefault("tokens", []).append(grids)
                for name, parts in rows.items():
                    out.setdefault(name, []).append(torch.stack(parts, dim=1).float().cpu().numpy())
        return {name: np.concatenate(parts) for name, parts in out.items()}


def _write(location: StoreLocation, index: int, part: slice, values: dict[str, np.ndarray]) -> int:
    from xcsmoe.regionstore import write_region

    selection = {
        name: ((part, *(slice(None),) * (array.ndim - 1)), array) for name, array in values.items()
    }
    write_region(location, selection, (index,))
    return index


def _run_on_cluster(
    location: StoreLocation,
    status: Any,
    store_spec: Any,
    samples: xr.Dataset,
    job: _Job,
    region_size: int,
    client: Any,
    n_workers: int,
    progress: bool,
) -> None:
    import dask

    from xcsmoe.cluster import check_workers_reach, connect, run_tasks
    from xcsmoe.regionstore import create_store

    n = samples.sizes["sample"]

    def task(index: int) -> Any:
        part = slice(index * region_size, min(n, (index + 1) * region_size))
        inputs = model_inputs(samples.isel(sample=part), job.config, job.sensors)
        encoded = dask.delayed(job.run, pure=False)(inputs)
        return dask.delayed(_write, pure=False)(location, index, part, encoded)

    with connect(client, n_workers=n_workers) as active:
        check_workers_reach(location, active)
        create_store(status, store_spec)
        run_tasks(
            [task(i) for (i,) in status.todo], active, desc="encoding features", progress=progress
        )


# ------------------------------------------------------------------------------ metadata


def _sensors(samples: xr.Dataset, sensors: str | Sequence[str]) -> tuple[str, ...]:
    have = sensors_of(samples)
    if sensors == "auto":
        return have
    wanted = tuple(sensors.split("+")) if isinstance(sensors, str) else tuple(sensors)
    if not wanted or any(s not in ("s1", "s2") for s in wanted):
        raise ConfigError(expected("sensors", '"auto", "s1", "s2" or "s1+s2"', sensors))
    return tuple(s for s in ("s1", "s2") if s in wanted)


def _template(
    samples: xr.Dataset,
    config: Any,
    sensors: tuple[str, ...],
    layers: tuple[int, ...],
    grid: int,
    name: str,
    weights: str,
) -> xr.Dataset:
    import dask.array as da

    n, d, k = samples.sizes["sample"], config.embed_dim, len(sensors)
    variables: dict[str, Any] = {
        "cls": (
            ("sample", "sensor", "embedding"),
            da.zeros((n, k, d), dtype=np.float32, chunks=-1),
        ),
        "token_mean": (
            ("sample", "sensor", "embedding"),
            da.zeros((n, k, d), dtype=np.float32, chunks=-1),
        ),
        "labels": samples["labels"].variable.copy(deep=False),
    }
    if config.global_pool == "avg":
        variables["pooled"] = variables["cls"]
    if layers:
        dims = ("sample", "sensor", "layer", "embedding", "token_y", "token_x")
        variables["tokens"] = (
            dims,
            da.zeros((n, k, len(layers), d, grid, grid), dtype=np.float32, chunks=-1),
        )
    coords = {
        "sample": samples["sample"].values.astype(object),
        "split": ("sample", samples["split"].values.astype(object)),
        "sensor": np.asarray(sensors, dtype=object),
        **({"layer": list(layers)} if layers else {}),
    }
    attrs = {
        "xcsmoe_features": FEATURE_FORMAT,
        "model": name,
        "weights": weights,
        "task": samples.attrs["task"],
        "classes": list(samples.attrs.get("classes", [])),
        "dataset": samples.attrs.get("dataset", ""),
        "num_tokens": grid * grid,
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _samples_digest(samples: xr.Dataset) -> str:
    """Identity of a sample set: ids, labels and a hash of its pixels."""
    digest = hashlib.sha256()
    digest.update(json.dumps([str(i) for i in samples["sample"].values]).encode())
    digest.update(np.ascontiguousarray(samples["labels"].values).tobytes())
    for name in sorted(map(str, samples.data_vars)):
        if name != "labels":
            digest.update(name.encode() + np.ascontiguousarray(samples[name].values).tobytes())
    return digest.hexdigest()[:16]


def _compare_identity(attrs: Any, wanted: dict[str, Any], argument: str) -> None:
    got = {key: attrs.get(key) for key in wanted}
    if got != wanted:
        raise InputError(
            expected(
                argument,
                f"features of model {wanted['model']} with weights {wanted['weights']}",
                f"a feature store from another model ({got['model']}, weights {got['weights']})",
                "Encode the data with this model (encode_features) or pass its own store.",
            )
        )
