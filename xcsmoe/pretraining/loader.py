"""Patch store → xbatcher → torch ``DataLoader``: the pretraining input pipeline.

Metadata → plan → execution:

* :func:`open_patch_store` opens a store lazily (no dask) and checks its layout;
  :func:`store_plan` checks that it holds the bands a model needs and picks the patches of
  one split — both cheap, before any worker starts. A store is a local folder or a URL
  (``s3://``, ``gs://``, ``az://``, ``file://``, ``memory://`` for ``workers=0``;
  :mod:`xcsmoe.storage`) with ``storage_options=``, or a
  :class:`~xcsmoe.storage.StoreLocation` that carries them (what
  :class:`~xcsmoe.pretraining.module.PatchDataModule` passes on).
* :class:`PatchSampler` (main process) owns every random choice: the order of an epoch
  (seeded by ``seed`` and the epoch) and each sample's flips. It shards the order over DDP
  ranks and can start mid-epoch, which is how resume neither replays nor skips samples.
* :class:`PatchDataset` (workers) reads one patch through xbatcher's
  :class:`~xbatcher.loaders.torch.MapDataset`, normalises it with :mod:`xcsmoe.sensors`
  (S2 offset per patch, S1 in dB), stacks channels in ``config.bands(sensor)`` order,
  flips and resizes it. It holds no random state, so any worker count gives the same data.

Resize: when the store's patch size differs from the model's ``img_size``, patches are
resampled bilinearly with antialiasing (``torch.nn.functional.interpolate(...,
mode="bilinear", antialias=True, align_corners=False)``), the same for both sensors.
Flips: horizontal and vertical, each with probability 1/2, the same for both sensors of a
pair (as CSMAE's training transforms).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from xcsmoe.errors import ConfigError, InputError, MissingBandError, expected
from xcsmoe.model.config import CSMoEConfig
from xcsmoe.sensors import S1, S2, linear_to_db
from xcsmoe.storage import StoreLocation, inspect_location, local_folder, store_location

LAYOUT_ATTR = "xcsmoe_patch_store"
LAYOUT_VERSION = 1
SPLITS = {"train": 0, "validation": 1}
IMAGE_VARS = ("s1", "s2")
PATCH_VARS = ("has_s1", "has_s2", "s2_offset", "split")

__all__ = [
    "PatchDataset",
    "PatchLoader",
    "PatchSampler",
    "StorePlan",
    "open_patch_store",
    "patch_loader",
    "store_plan",
]


# ----------------------------------------------------------------------------- metadata


def open_patch_store(
    path: str | PathLike[str] | StoreLocation,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Open a patch store lazily (xarray lazy indexing, no dask) and check its layout.

    ``path`` is a local folder or a URL (``s3://bucket/patches.zarr``, ``file://``, ...;
    :mod:`xcsmoe.storage`) with ``storage_options`` (e.g. s3fs's ``endpoint_url``,
    ``key``, ``secret``; by default the backend's ``AWS_*`` environment variables). A
    missing bucket, refused credentials or a silent endpoint raise
    :class:`~xcsmoe.errors.StorageError`."""
    location, shown = _location(path, storage_options)
    if location.is_local:
        if not Path(shown).is_dir():
            raise InputError(
                expected(
                    "store", "a patch store folder", str(shown), "Build one with build_patch_store."
                )
            )
    elif inspect_location(location).kind in ("absent", "empty", "file"):
        raise InputError(
            expected("store", "a patch store", str(shown), "Build one with build_patch_store.")
        )
    try:
        if location.is_local:
            ds = xr.open_zarr(shown, chunks=None)
        else:
            ds = xr.open_zarr(**location.zarr_args(), chunks=None)
    except Exception as error:
        raise InputError(
            expected("store", "a Zarr patch store", f"{shown} ({type(error).__name__}: {error})")
        ) from error
    version = ds.attrs.get(LAYOUT_ATTR)
    if version != LAYOUT_VERSION:
        raise InputError(
            expected(
                f"store attribute {LAYOUT_ATTR}",
                f"layout version {LAYOUT_VERSION}",
                version,
                "Rebuild the store with this version of xcsmoe.",
            )
        )
    if ds.attrs.get("xcsmoe_complete") is False:
        raise InputError(
            expected(
                "store",
                "a complete patch store",
                f"{shown} (unfinished)",
                "Finish the build (rerun it to resume) before training.",
            )
        )
    missing = [v for v in (*IMAGE_VARS, *PATCH_VARS) if v not in ds.variables]
    if missing:
        raise InputError(expected("store variables", "s1, s2 and per-patch flags", missing))
    if ds.sizes.get("patch", 0) == 0:
        raise InputError(expected("store", "at least one patch", 0))
    return ds


def _location(
    path: str | PathLike[str] | StoreLocation, storage_options: Mapping[str, Any] | None
) -> tuple[StoreLocation, Path | str]:
    """The store's location, and how it is shown: the path as given for a local folder
    (a ``file://`` URL as its path), the URL otherwise."""
    if isinstance(path, PathLike) and not isinstance(path, Path):
        path = Path(path)
    location = store_location(path, storage_options)
    if not location.is_local:
        return location, location.url
    return location, local_folder(path if not isinstance(path, StoreLocation) else path.url)


@dataclass(frozen=True)
class StorePlan:
    """What a loader reads: the store, the patches of one split, channel order, sizes.

    ``path`` is a :class:`~pathlib.Path` for a local store, the URL otherwise;
    ``storage_options`` go with the URL (left out of the repr: they may hold
    credentials)."""

    path: Path | str
    indices: tuple[int, ...]
    bands_s1: tuple[str, ...]
    bands_s2: tuple[str, ...]
    patch_size: int
    img_size: int
    chunk: int
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    @property
    def location(self) -> StoreLocation:
        return store_location(self.path, self.storage_options or None)


def store_plan(
    path: str | PathLike[str] | StoreLocation,
    config: CSMoEConfig,
    *,
    split: str = "train",
    storage_options: Mapping[str, Any] | None = None,
) -> StorePlan:
    """Check that the store at ``path`` (a folder, a URL with ``storage_options``, or a
    :class:`~xcsmoe.storage.StoreLocation`) fits ``config`` and list the patches of
    ``split``."""
    location, path = _location(path, storage_options)
    if split not in SPLITS:
        raise ConfigError(expected("split", f"one of {sorted(SPLITS)}", split))
    ds = open_patch_store(path, storage_options=_options(location))
    for sensor in IMAGE_VARS:
        held = [str(b) for b in ds[f"band_{sensor}"].values]
        wanted = config.bands(sensor)
        lacking = [b for b in wanted if b not in held]
        if lacking:
            raise MissingBandError(
                expected(
                    f"store band_{sensor}",
                    f"the bands {list(wanted)} of model {config.name}",
                    held,
                    f"This store was built for another band set (missing {lacking}); "
                    "rebuild it with the model's bands.",
                )
            )
    h, w = ds.sizes["y"], ds.sizes["x"]
    if h != w:  # any square size works: patches are resized to the model's img_size
        raise InputError(
            expected("store patch size", "square patches", (h, w), "Rebuild the store.")
        )
    split_values = np.asarray(ds["split"].values)
    indices = tuple(int(i) for i in np.flatnonzero(split_values == SPLITS[split]))
    if not indices:
        raise InputError(
            expected(
                f"store split {split!r}",
                "at least one patch",
                0,
                "Rebuild with a different val_fraction, or train without validation.",
            )
        )
    chunk = ds["s2"].encoding.get("chunks") or ds["s2"].encoding.get("preferred_chunks")
    chunk = int(chunk[0]) if isinstance(chunk, Sequence) else 1
    return StorePlan(
        path=path,
        indices=indices,
        bands_s1=tuple(config.bands("s1")),
        bands_s2=tuple(config.bands("s2")),
        patch_size=int(h),
        img_size=config.img_size,
        chunk=chunk,
        storage_options=dict(_options(location) or {}),
    )


def _options(location: StoreLocation) -> Mapping[str, Any] | None:
    """``storage_options`` to pass on with the shown path (none for a local folder)."""
    return None if location.is_local else dict(location.storage_options)


# ------------------------------------------------------------------------------ sampling


class PatchSampler(Sampler[tuple[int, int]]):
    """Yields ``(position, flips)`` per sample: ``position`` into the split's patch list,
    ``flips`` a 2-bit code (bit 0: horizontal, bit 1: vertical).

    The epoch order is a permutation drawn from ``seed`` and the epoch (Lightning calls
    :meth:`set_epoch`); it is padded by wrap-around to a multiple of ``world_size`` and
    rank ``rank`` takes every ``world_size``-th sample. :meth:`resume_at` makes the next
    iteration of ``epoch`` start after ``start`` of this rank's samples.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        flips: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples <= 0:
            raise InputError(expected("num_samples", "> 0", num_samples))
        if not 0 <= rank < world_size:
            raise ConfigError(expected("rank", f"in [0, {world_size})", rank))
        self.num_samples, self.seed, self.shuffle, self.flips = num_samples, seed, shuffle, flips
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, start: int) -> None:
        """Skip the first ``start`` samples of this rank in ``epoch`` (once)."""
        self._resume = (epoch, start)

    def epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's positions and flip codes for ``epoch`` (both (len(self),) int64)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        flips = (
            rng.integers(0, 4, self.num_samples) if self.flips else np.zeros(self.num_samples, int)
        )
        total = len(self) * self.world_size
        order, flips = np.resize(order, total), np.resize(flips, total)
        return order[self.rank :: self.world_size], flips[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, flips = self.epoch_plan(self.epoch)
        start = 0
        if self._resume is not None:
            if self._resume[0] == self.epoch:
                start = self._resume[1]
            self._resume = None
        for position, flip in zip(order[start:], flips[start:], strict=True):
            yield int(position), int(flip)


# ------------------------------------------------------------------------------ reading


class PatchDataset(Dataset):
    """One sample per ``(position, flips)`` key: a dict of

    * ``s1`` (C1, S, S) and ``s2`` (C2, S, S) float32, normalised, channels in the model's
      band order, ``S`` = the model's ``img_size``; a missing sensor is all zeros;
    * ``has_s1``, ``has_s2`` bool; ``patch`` int64 (index of the patch in the store).

    The store is opened lazily in each process (workers included) and read through
    xbatcher (:class:`~xbatcher.loaders.torch.MapDataset` over a ``BatchGenerator`` of one
    patch per item). Unreadable chunks and invalid values stop the run with the patch and
    chunk named, never silently.
    """

    def __init__(self, plan: StorePlan) -> None:
        self.plan = plan
        self._items: Any = None

    def __len__(self) -> int:
        return self.plan.num_samples

    def __getstate__(self) -> dict[str, Any]:
        return {"plan": self.plan, "_items": None}

    def _open(self) -> Any:
        from xbatcher import BatchGenerator
        from xbatcher.loaders.torch import MapDataset

        plan = self.plan
        ds = open_patch_store(plan.path, storage_options=plan.storage_options or None)
        ds = ds.isel(patch=list(plan.indices))
        ds = ds.sel(band_s1=list(plan.bands_s1), band_s2=list(plan.bands_s2))
        # per-patch values are small: read them once, so a sample reads only s1 and s2
        meta = ds[["has_s1", "has_s2", "s2_offset"]].load()
        images = ds[list(IMAGE_VARS)].assign(s2_offset=meta["s2_offset"])
        flags = meta[["has_s1", "has_s2"]]
        sizes = {"patch": 1, "band_s1": len(plan.bands_s1), "band_s2": len(plan.bands_s2)}
        sizes |= {"y": plan.patch_size, "x": plan.patch_size}
        return MapDataset(
            BatchGenerator(images, input_dims=sizes, preload_batch=False),
            BatchGenerator(flags, input_dims={"patch": 1}, preload_batch=False),
            transform=_normalised_channels,
            target_transform=_flags,
        )

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        position, flips = key
        if self._items is None:
            self._items = self._open()
        patch = self.plan.indices[position]
        try:
            x, flags = self._items[position]
        except Exception as error:
            c = self.plan.chunk
            raise InputError(
                f"store {self.plan.path}: cannot read patch {patch} (chunk {patch // c} of "
                f"variables s1/s2, patches {patch // c * c}..{patch // c * c + c - 1}): "
                f"{type(error).__name__}: {error}. The store is damaged; rebuild it "
                "(a resumable build rewrites only what is missing) or drop the patch."
            ) from error
        has_s1, has_s2 = bool(flags[0]), bool(flags[1])
        c1 = len(self.plan.bands_s1)
        s1, s2 = x[:c1], x[c1:]
        for name, image, present in (("s1", s1, has_s1), ("s2", s2, has_s2)):
            if present and not bool(torch.isfinite(image).all()):
                raise InputError(
                    f"store {self.plan.path}: patch {patch} has nodata or non-finite {name} "
                    f"values although has_{name} is set (chunk {patch // self.plan.chunk}). "
                    "The store is damaged or was not built by build_patch_store; rebuild it."
                )
        s1 = s1 if has_s1 else torch.zeros_like(s1)
        s2 = s2 if has_s2 else torch.zeros_like(s2)
        both = _augment(torch.cat([s1, s2]), flips, self.plan.img_size)
        return {
            "s1": both[:c1],
            "s2": both[c1:],
            "has_s1": torch.tensor(has_s1),
            "has_s2": torch.tensor(has_s2),
            "patch": torch.tensor(patch, dtype=torch.int64),
        }


def _normalised_channels(batch: xr.Dataset) -> Tensor:
    """One patch (xarray, raw) → (C1 + C2, S, S) float32: S1 in dB and S2 DN + offset, each
    standardised with :mod:`xcsmoe.sensors` statistics; nodata (S2 0, S1 NaN) becomes NaN."""
    batch = batch.isel(patch=0)
    s1 = np.asarray(batch["s1"].values, dtype=np.float32)
    s2 = np.asarray(batch["s2"].values, dtype=np.float32)
    s2 = np.where(s2 == S2.nodata, np.float32(np.nan), s2 + np.float32(batch["s2_offset"]))
    bands_s1 = tuple(str(b) for b in batch["band_s1"].values)
    bands_s2 = tuple(str(b) for b in batch["band_s2"].values)
    mean1, std1 = S1.stats(bands_s1)
    mean2, std2 = S2.stats(bands_s2)
    s1 = (linear_to_db(s1) - mean1[:, None, None]) / std1[:, None, None]
    s2 = (s2 - mean2[:, None, None]) / std2[:, None, None]
    return torch.from_numpy(np.concatenate([s1, s2]).astype(np.float32))


def _flags(batch: xr.Dataset) -> Tensor:
    """(2,) bool: has_s1, has_s2 of one patch."""
    return torch.tensor([bool(batch["has_s1"].values[0]), bool(batch["has_s2"].values[0])])


def _augment(x: Tensor, flips: int, size: int) -> Tensor:
    """Flip (bit 0: horizontal, bit 1: vertical) and resize (C, H, W) to (C, size, size)."""
    if flips & 1:
        x = x.flip(-1)
    if flips & 2:
        x = x.flip(-2)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(
            x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return x.contiguous()


# ------------------------------------------------------------------------------ loading


class PatchLoader(DataLoader):
    """A ``DataLoader`` over a :class:`PatchDataset` driven by a :class:`PatchSampler`;
    :meth:`resume_at` sets where the next iteration of an epoch starts (a checkpoint holds
    the epoch and the batches done, see :class:`~xcsmoe.pretraining.module.PatchDataModule`).
    """

    sampler: PatchSampler

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self.sampler.resume_at(epoch, batches_done * int(self.batch_size or 1))


def patch_loader(
    plan: StorePlan,
    *,
    batch_size: int,
    workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    flips: bool = True,
    drop_last: bool = True,
    rank: int = 0,
    world_size: int = 1,
    prefetch_factor: int = 4,
) -> PatchLoader:
    """A :class:`PatchLoader` for ``plan``; ``workers > 0`` start with the *spawn* context
    (forked workers can deadlock in zarr v3) and stay alive across epochs; each opens a
    store at a URL itself (with the plan's ``storage_options``)."""
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(expected("batch_size", "a positive int", batch_size))
    if not isinstance(workers, int) or workers < 0:
        raise ConfigError(expected("workers", "an int >= 0", workers))
    if workers and str(plan.path).startswith("memory://"):
        raise ConfigError(
            expected(
                "workers",
                "0 for a memory:// store",
                workers,
                "memory:// lives in one process: use workers=0, or a path or an s3://, "
                "gs://, az:// URL.",
            )
        )
    per_rank = -(-plan.num_samples // world_size)
    if drop_last and per_rank < batch_size:
        raise InputError(
            expected(
                "batch_size",
                f"<= the {per_rank} samples per rank of this split",
                batch_size,
                "Lower batch_size or build a larger store.",
            )
        )
    sampler = PatchSampler(
        plan.num_samples, seed=seed, shuffle=shuffle, flips=flips, rank=rank, world_size=world_size
    )
    extra: dict[str, Any] = {}
    if workers:
        extra = {
            "multiprocessing_context": multiprocessing.get_context("spawn"),
            "persistent_workers": True,
            "prefetch_factor": prefetch_factor,
        }
    return PatchLoader(
        PatchDataset(plan),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        **extra,
    )
