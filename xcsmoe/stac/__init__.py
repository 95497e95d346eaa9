"""STAC side of xcsmoe: provider configs, sample catalog, search, cube loading, local API.

Submodules import odc-stac/pystac-client lazily; use the public names in ``xcsmoe``.
"""
