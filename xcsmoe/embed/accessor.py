"""The ``ds.csmoe`` accessor: a thin namespace over :mod:`xcsmoe.embed`'s functions.

Importing :mod:`xcsmoe` registers it; every method forwards to a plain function that
also works on its own (``xcsmoe.embed(ds, ...)`` ≡ ``ds.csmoe.embed(...)``).
"""

from __future__ import annotations

from typing import Any

import xarray as xr


@xr.register_dataset_accessor("csmoe")
class CSMoEAccessor:
    """``ds.csmoe.embed(patch=16, ...)``, ``ds.csmoe.expert_usage(...)``,
    ``ds.csmoe.to_zarr(store, ...)``."""

    __slots__ = ("_obj",)

    def __init__(self, xarray_obj: xr.Dataset) -> None:
        self._obj = xarray_obj

    def embed(self, patch: int = 16, **kwargs: Any) -> xr.Dataset:
        """Lazy embeddings; see :func:`xcsmoe.embed.api.embed`."""
        from xcsmoe.embed.api import embed

        return embed(self._obj, patch, **kwargs)

    def expert_usage(self, patch: int = 16, **kwargs: Any) -> xr.DataArray:
        """Per-token expert shares; see :func:`xcsmoe.embed.api.expert_usage`."""
        from xcsmoe.embed.api import expert_usage

        return expert_usage(self._obj, patch, **kwargs)

    def to_zarr(self, store: Any, patch: int = 16, **kwargs: Any) -> Any:
        """Batch inference into a Zarr store; see :func:`xcsmoe.embed.batch.embed_to_zarr`."""
        from xcsmoe.embed.batch import embed_to_zarr

        return embed_to_zarr(self._obj, store, patch=patch, **kwargs)
