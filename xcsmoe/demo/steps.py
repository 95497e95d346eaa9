"""The demo's execution steps, each a plain function over plain values.

1. :func:`search_pairs` — the sample catalog searched over HTTP, paired S2/S1 items;
2. :func:`build_store` — the S1+S2 patch store (:func:`xcsmoe.build_patch_store`);
3. :func:`pretrained_weights` — a short pretraining of the model, or its cached result;
4. :func:`load_cubes` / :func:`embed_cubes` — the sample cubes through
   :func:`xcsmoe.embed_to_zarr` into one Zarr store per cube and set of weights.

Scale: the pretraining sees 32 px patches (10 m) resized bilinearly to the model's
``img_size`` (64 px for ``csmoe_tiny``), i.e. one 16 px model patch covers 80 m. The cubes
are therefore loaded at ``10 * patch_size / img_size`` m (5 m, bilinear) so that a token
covers the same ground at inference as during pretraining.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pystac
import xarray as xr

from xcsmoe.demo.cache import CacheEntry, cache_key, lookup, publish, staging_folder, store_digest
from xcsmoe.demo.settings import DemoSettings
from xcsmoe.errors import InputError, expected

__all__ = [
    "build_store",
    "cube_resolution",
    "embed_cubes",
    "embed_options",
    "load_cubes",
    "model_patch",
    "pretrain_recipe",
    "pretrained_weights",
    "search_pairs",
]

Pair = tuple[pystac.Item, pystac.Item]


def search_pairs(url: str) -> list[Pair]:
    """``(S2 item, S1 item)`` pairs of the sample catalog served at ``url``, by S2 id."""
    from xcsmoe.stac.sample_catalog import S1_COLLECTION, S2_COLLECTION
    from xcsmoe.stac.search import search

    s2_items = list(search(url, collections=[S2_COLLECTION]))
    s1_items = list(search(url, collections=[S1_COLLECTION]))
    partner = {item.properties.get("bigearthnet:s2_patch"): item for item in s1_items}
    pairs = [
        (s2, partner[s2.id]) for s2 in sorted(s2_items, key=lambda i: i.id) if s2.id in partner
    ]
    if not pairs:
        raise InputError(
            expected("catalog", "S2 items with an S1 partner", f"{len(s2_items)} S2, "
                     f"{len(s1_items)} S1 items without pairs", "Rebuild the sample catalog.")
        )  # fmt: skip
    return pairs


def build_store(
    pairs: Sequence[Pair], store: Path, settings: DemoSettings, *, client: Any, progress: bool
) -> Any:
    """Cut the pairs into ``settings.patch_size`` px S1+S2 patches; returns the report."""
    from xcsmoe.pretraining.patch_store import build_patch_store

    items = [item for pair in pairs for item in pair]
    return build_patch_store(
        items, store, patch_size=settings.patch_size, model=settings.model,
        val_fraction=settings.val_fraction, seed=settings.seed, client=client,
        overwrite=True, progress=progress,
    )  # fmt: skip


def pretrain_recipe(settings: DemoSettings, store: Path, output: Path) -> Any:
    """The :class:`~xcsmoe.PretrainRecipe` of the demo (AdamW, warm-up + cosine, fp32 on
    CPU; validation loss six times per run when the store holds validation patches)."""
    from xcsmoe.pretraining.recipe import PretrainRecipe

    values = settings.training()
    with xr.open_zarr(store) as ds:
        validation = bool((ds["split"].values == 1).any())
    return PretrainRecipe(
        variant=values["variant"], store=store, output=output, max_steps=values["max_steps"],
        batch_size=values["batch_size"], lr=values["lr"], min_lr=values["min_lr"],
        warmup_steps=values["warmup_steps"], seed=values["seed"],
        checkpoint_every=values["max_steps"], keep_checkpoints=1,
        val_every=max(1, values["max_steps"] // 6) if validation else 0,
        log_every=max(1, min(5, values["max_steps"] // 4)), workers=0,
    )  # fmt: skip


def pretrained_weights(
    settings: DemoSettings, store: Path, *, use_cache: bool, scratch: Path, progress: bool
) -> CacheEntry:
    """Pretrain on ``store`` — or reuse the cached result of the same training.

    With ``use_cache=False`` the cache is neither read nor written: the run happens in
    ``scratch`` (emptied first).
    """
    from xcsmoe.pretraining.train import pretrain

    key, inputs = cache_key(settings.training(), store_digest(store))
    if use_cache:
        entry = lookup(key)
        if entry is not None:
            return entry
        folder = staging_folder(key)
    else:
        shutil.rmtree(scratch, ignore_errors=True)
        folder = scratch
    try:
        with _quiet_lightning():
            bars = [_step_bar(settings.steps)] if progress else []
            pretrain(pretrain_recipe(settings, store, folder), progress=False, callbacks=bars)
    except BaseException:
        if use_cache:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if not use_cache:
        return CacheEntry(folder, key, hit=False)
    return publish(folder, key, inputs)


def cube_resolution(settings: DemoSettings) -> float:
    """Metres per cube pixel at which a token covers the ground it covered in training."""
    from xcsmoe.model.registry import model_config

    return 10.0 * settings.patch_size / model_config(settings.model).img_size


def load_cubes(pairs: Sequence[Pair], settings: DemoSettings) -> list[xr.Dataset]:
    """One lazy S1+S2 cube per pair, at :func:`cube_resolution` (bilinear)."""
    from xcsmoe.stac.load import load_cube

    resolution = cube_resolution(settings)
    resampling = "nearest" if resolution >= 10 else "bilinear"
    return [
        load_cube([s2], [s1], resolution=resolution, resampling=resampling, chunks=-1)
        for s2, s1 in pairs
    ]


def embed_cubes(
    cubes: Sequence[xr.Dataset],
    names: Sequence[str],
    folder: Path,
    *,
    weights: str,
    settings: DemoSettings,
    client: Any,
    progress: bool,
) -> list[Path]:
    """Embed each cube into ``folder/<name>.zarr`` on ``client``; returns the stores."""
    from xcsmoe.embedding.batch import embed_to_zarr

    stores = []
    for name, cube in zip(names, cubes, strict=True):
        store = folder / f"{name}.zarr"
        embed_to_zarr(
            cube, store, patch=model_patch(settings), client=client, overwrite=True,
            progress=progress, **embed_options(settings, weights),
        )  # fmt: skip
        stores.append(store)
    return stores


def model_patch(settings: DemoSettings) -> int:
    from xcsmoe.model.registry import model_config

    return model_config(settings.model).patch_size


def embed_options(settings: DemoSettings, weights: str) -> dict[str, Any]:
    """``model``/``weights``/``window``/``device`` for :func:`xcsmoe.embed` and
    :func:`xcsmoe.expert_usage`: one window is the model's ``img_size``."""
    from xcsmoe.model.registry import model_config

    window = model_config(settings.model).img_size
    return {
        "model": settings.model, "weights": weights, "window": window, "device": "cpu",
        "dtype": "float32",
    }  # fmt: skip


def _step_bar(total: int) -> Any:
    """A Lightning callback drawing one tqdm bar over the run's steps, with the loss."""
    from lightning.pytorch.callbacks import Callback
    from tqdm.auto import tqdm

    class StepBar(Callback):
        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.bar = tqdm(total=total, desc="pretraining", unit="step")

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *args: Any) -> None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if loss is not None:
                self.bar.set_postfix(loss=f"{float(loss):.2f}", refresh=False)
            self.bar.update(trainer.global_step - self.bar.n)

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self.bar.close()

    return StepBar()


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's start-up notices (accelerator, tips) and its notes on small epochs
    (54 patches make 3 batches) down to warnings of substance, for the run."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
