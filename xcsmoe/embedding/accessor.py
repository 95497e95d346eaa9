"""The ``ds.csmoe`` accessor: a thin namespace over :mod:`xcsmoe.embedding`'s functions.

Importing :mod:`xcsmoe` registers it; every method forwards to a plain function that
also works on its own (``xcsmoe.embed(ds, ...)`` ≡ ``ds.csmoe.embed(...)``).
"""

from __future__ import annotations

from typing import Any

import xarray as xr


@xr.register_dataset_accessor("csmoe")
class CSMoEAccessor:
    """``ds.csmoe.embed(patch=16, ...)``, ``ds.csmoe.expert_usage(...)``,
    ``ds.csmoe.to_zarr(store, ...)``, ``ds.csmoe.similar(query, k=None, ...)``."""

    __slots__ = ("_obj",)

    def __init__(self, xarray_obj: xr.Dataset) -> None:
        self._obj = xarray_obj

    def embed(self, patch: int = 16, **kwargs: Any) -> xr.Dataset:
        """Lazy embeddings; see :func:`xcsmoe.embedding.api.embed`."""
        from xcsmoe.embedding.api import embed

        return embed(self._obj, patch, **kwargs)

    def expert_usage(self, patch: int = 16, **kwargs: Any) -> xr.DataArray:
        """Per-token expert shares; see :func:`xcsmoe.embedding.api.expert_usage`."""
        from xcsmoe.embedding.api import expert_usage

        return expert_usage(self._obj, patch, **kwargs)

    def to_zarr(self, store: Any, patch: int = 16, **kwargs: Any) -> Any:
        """Batch inference into a Zarr store; see :func:`xcsmoe.embedding.batch.embed_to_zarr`."""
        from xcsmoe.embedding.batch import embed_to_zarr

        return embed_to_zarr(self._obj, store, patch=patch, **kwargs)

    def similar(self, query: Any, k: int | None = None, **kwargs: Any) -> xr.Dataset:
        """Lazy cosine-similarity map to ``query``; see :func:`xcsmoe.embedding.similar.similar`."""
        from xcsmoe.embedding.similar import similar

        return similar(self._obj, query, k, **kwargs)
