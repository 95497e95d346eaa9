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
    # sampling
    "archive_from_items": "xcsmoe.sampling.archive",
    "majortom_archive": "xcsmoe.sampling.archive",
    "add_descriptors": "xcsmoe.sampling.descriptors",
    "select_genetic": "xcsmoe.sampling.select",
    "select_random": "xcsmoe.sampling.select",
    "selection_statistics": "xcsmoe.sampling.stats",
    "plot_selection": "xcsmoe.sampling.plots",
}

__all__ = [
    "S1",
    "S2",
    "CSMoE",
    "CSMoEConfig",
    "CSMoEForPretraining",
    "SensorSpec",
    "SoftMoE",
    "__version__",
    "add_descriptors",
    "archive_from_items",
    "cls_to_geoparquet",
    "create_model",
    "embed",
    "embed_to_zarr",
    "errors",
    "example_catalog",
    "expert_usage",
    "list_models",
    "load_checkpoint",
    "load_cube",
    "majortom_archive",
    "model_figures",
    "normalise",
    "plot_embedding_pca",
    "plot_selection",
    "provider_config",
    "save_checkpoint",
    "search",
    "select_genetic",
    "select_random",
    "selection_statistics",
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
    from xcsmoe.embedding.api import embed, expert_usage
    from xcsmoe.embedding.batch import embed_to_zarr
    from xcsmoe.embedding.export import cls_to_geoparquet, plot_embedding_pca
    from xcsmoe.model.checkpoint import load_checkpoint, save_checkpoint
    from xcsmoe.model.config import CSMoEConfig
    from xcsmoe.model.encoder import CSMoE
    from xcsmoe.model.figures import model_figures
    from xcsmoe.model.pretrain import CSMoEForPretraining
    from xcsmoe.model.registry import create_model, list_models
    from xcsmoe.model.soft_moe import SoftMoE
    from xcsmoe.sampling.archive import archive_from_items, majortom_archive
    from xcsmoe.sampling.descriptors import add_descriptors
    from xcsmoe.sampling.plots import plot_selection
    from xcsmoe.sampling.select import select_genetic, select_random
    from xcsmoe.sampling.stats import selection_statistics
    from xcsmoe.sensors import S1, S2, SensorSpec, normalise
    from xcsmoe.stac.load import load_cube
    from xcsmoe.stac.providers import provider_config
    from xcsmoe.stac.sample_catalog import example_catalog
    from xcsmoe.stac.search import search
