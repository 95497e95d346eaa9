"""xcsmoe: the CSMoE remote-sensing foundation model on the Pangeo/STAC stack.

Heavy submodules (torch, odc-stac, geopandas) load on first use of a name; importing
``xcsmoe`` registers the ``ds.csmoe`` xarray accessor and little else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xcsmoe import errors
from xcsmoe.embedding import accessor as _accessor  # noqa: F401  (registers ds.csmoe)

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # model (issue: the CSMoE model)
    "CSMoE": "xcsmoe.model.encoder",
    "CSMoEConfig": "xcsmoe.model.config",
    "CSMoEForPretraining": "xcsmoe.model.pretrain",
    "SoftMoE": "xcsmoe.model.soft_moe",
    "create_model": "xcsmoe.model.registry",
    "list_models": "xcsmoe.model.registry",
    "load_checkpoint": "xcsmoe.model.checkpoint",
    "save_checkpoint": "xcsmoe.model.checkpoint",
    "model_figures": "xcsmoe.model.figures",
    # sensors and STAC
    "S1": "xcsmoe.sensors",
    "S2": "xcsmoe.sensors",
    "SensorSpec": "xcsmoe.sensors",
    "normalise": "xcsmoe.sensors",
    "example_catalog": "xcsmoe.stac.sample_catalog",
    "provider_config": "xcsmoe.stac.providers",
    "search": "xcsmoe.stac.search",
    "load_cube": "xcsmoe.stac.load",
    # embeddings
    "embed": "xcsmoe.embedding.api",
    "expert_usage": "xcsmoe.embedding.api",
    "embed_to_zarr": "xcsmoe.embedding.batch",
    "cls_to_geoparquet": "xcsmoe.embedding.export",
    "plot_embedding_pca": "xcsmoe.embedding.export",
    "plot_expert_usage": "xcsmoe.embedding.export",
    "similar": "xcsmoe.embedding.similar",
    "plot_similarity": "xcsmoe.embedding.similar",
    "build_patch_store": "xcsmoe.pretraining.patch_store",
    "PatchStoreReport": "xcsmoe.pretraining.patch_store",
    "tiles_from_items": "xcsmoe.pretraining.tiles",
    "tiles_from_selection": "xcsmoe.pretraining.tiles",
    "read_majortom": "xcsmoe.pretraining.readers",
    "read_ssl4eo": "xcsmoe.pretraining.readers",
    "majortom_tiles": "xcsmoe.pretraining.readers",
    "ssl4eo_tiles": "xcsmoe.pretraining.readers",
    "open_patch_store": "xcsmoe.pretraining.loader",
    "patch_loader": "xcsmoe.pretraining.loader",
    "PretrainRecipe": "xcsmoe.pretraining.recipe",
    "load_recipe": "xcsmoe.pretraining.recipe",
    "pretrain": "xcsmoe.pretraining.train",
    "PretrainResult": "xcsmoe.pretraining.train",
    "PretrainModule": "xcsmoe.pretraining.module",
    "PatchDataModule": "xcsmoe.pretraining.module",
    "retrieve": "xcsmoe.evaluation.retrieval",
    "evaluate_retrieval": "xcsmoe.evaluation.retrieval",
    "encode_features": "xcsmoe.evaluation.features",
    "open_features": "xcsmoe.evaluation.features",
    "feature_vectors": "xcsmoe.evaluation.features",
    "linear_probe": "xcsmoe.evaluation.probe",
    "ProbeConfig": "xcsmoe.evaluation.probe",
    "segmentation_probe": "xcsmoe.evaluation.segmentation",
    "SegmentationConfig": "xcsmoe.evaluation.segmentation",
    "evaluate": "xcsmoe.evaluation.run",
    "read_eurosat_ms": "xcsmoe.evaluation.readers",
    "read_bigearthnet": "xcsmoe.evaluation.readers",
    "read_sample_catalog": "xcsmoe.evaluation.readers",
    "read_geobench": "xcsmoe.evaluation.geobench",
    "read_generic": "xcsmoe.evaluation.datasets",
    # sampling
    "archive_from_items": "xcsmoe.sampling.archive",
    "majortom_archive": "xcsmoe.sampling.archive",
    "add_descriptors": "xcsmoe.sampling.descriptors",
    "select_genetic": "xcsmoe.sampling.select",
    "select_random": "xcsmoe.sampling.select",
    "selection_statistics": "xcsmoe.sampling.stats",
    "plot_selection": "xcsmoe.sampling.plots",
    "register_weights": "xcsmoe.model.hub",
    "list_weights": "xcsmoe.model.hub",
    "weights_path": "xcsmoe.model.hub",
    "run_demo": "xcsmoe.demo.run",
    "DemoSettings": "xcsmoe.demo.settings",
    "DemoResult": "xcsmoe.demo.run",
    "select_greedy": "xcsmoe.sampling.select",
    "class_table": "xcsmoe.sampling.classtables",
}

__all__ = [
    "S1",
    "S2",
    "CSMoE",
    "CSMoEConfig",
    "CSMoEForPretraining",
    "DemoResult",
    "DemoSettings",
    "PatchDataModule",
    "PatchStoreReport",
    "PretrainModule",
    "PretrainRecipe",
    "PretrainResult",
    "ProbeConfig",
    "SegmentationConfig",
    "SensorSpec",
    "SoftMoE",
    "__version__",
    "add_descriptors",
    "archive_from_items",
    "build_patch_store",
    "class_table",
    "cls_to_geoparquet",
    "create_model",
    "embed",
    "embed_to_zarr",
    "encode_features",
    "errors",
    "evaluate",
    "evaluate_retrieval",
    "example_catalog",
    "expert_usage",
    "feature_vectors",
    "linear_probe",
    "list_models",
    "list_weights",
    "load_checkpoint",
    "load_cube",
    "load_recipe",
    "majortom_archive",
    "majortom_tiles",
    "model_figures",
    "normalise",
    "open_features",
    "open_patch_store",
    "patch_loader",
    "plot_embedding_pca",
    "plot_expert_usage",
    "plot_selection",
    "plot_similarity",
    "pretrain",
    "provider_config",
    "read_bigearthnet",
    "read_eurosat_ms",
    "read_generic",
    "read_geobench",
    "read_majortom",
    "read_sample_catalog",
    "read_ssl4eo",
    "register_weights",
    "retrieve",
    "run_demo",
    "save_checkpoint",
    "search",
    "segmentation_probe",
    "select_genetic",
    "select_greedy",
    "select_random",
    "selection_statistics",
    "similar",
    "ssl4eo_tiles",
    "tiles_from_items",
    "tiles_from_selection",
    "weights_path",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xcsmoe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from xcsmoe.demo import DemoResult, DemoSettings, run_demo
    from xcsmoe.embedding.api import embed, expert_usage
    from xcsmoe.embedding.batch import embed_to_zarr
    from xcsmoe.embedding.export import cls_to_geoparquet, plot_embedding_pca, plot_expert_usage
    from xcsmoe.embedding.similar import plot_similarity, similar
    from xcsmoe.evaluation.datasets import read_generic
    from xcsmoe.evaluation.features import encode_features, feature_vectors, open_features
    from xcsmoe.evaluation.geobench import read_geobench
    from xcsmoe.evaluation.probe import ProbeConfig, linear_probe
    from xcsmoe.evaluation.readers import read_bigearthnet, read_eurosat_ms, read_sample_catalog
    from xcsmoe.evaluation.retrieval import evaluate_retrieval, retrieve
    from xcsmoe.evaluation.run import evaluate
    from xcsmoe.evaluation.segmentation import SegmentationConfig, segmentation_probe
    from xcsmoe.model.checkpoint import load_checkpoint, save_checkpoint
    from xcsmoe.model.config import CSMoEConfig
    from xcsmoe.model.encoder import CSMoE
    from xcsmoe.model.figures import model_figures
    from xcsmoe.model.hub import list_weights, register_weights, weights_path
    from xcsmoe.model.pretrain import CSMoEForPretraining
    from xcsmoe.model.registry import create_model, list_models
    from xcsmoe.model.soft_moe import SoftMoE
    from xcsmoe.pretraining.loader import open_patch_store, patch_loader
    from xcsmoe.pretraining.module import PatchDataModule, PretrainModule
    from xcsmoe.pretraining.patch_store import PatchStoreReport, build_patch_store
    from xcsmoe.pretraining.readers import majortom_tiles, read_majortom, read_ssl4eo, ssl4eo_tiles
    from xcsmoe.pretraining.recipe import PretrainRecipe, load_recipe
    from xcsmoe.pretraining.tiles import tiles_from_items, tiles_from_selection
    from xcsmoe.pretraining.train import PretrainResult, pretrain
    from xcsmoe.sampling.archive import archive_from_items, majortom_archive
    from xcsmoe.sampling.classtables import class_table
    from xcsmoe.sampling.descriptors import add_descriptors
    from xcsmoe.sampling.plots import plot_selection
    from xcsmoe.sampling.select import select_genetic, select_greedy, select_random
    from xcsmoe.sampling.stats import selection_statistics
    from xcsmoe.sensors import S1, S2, SensorSpec, normalise
    from xcsmoe.stac.load import load_cube
    from xcsmoe.stac.providers import provider_config
    from xcsmoe.stac.sample_catalog import example_catalog
    from xcsmoe.stac.search import search
