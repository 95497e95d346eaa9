"""Thematic-climatic descriptor-driven sampling (the paper's "Minor TOM" selection).

Pipeline, each stage in its own module:

- ``archive``: samples as a GeoDataFrame (EPSG:4326; ``sample_id``, footprint
  ``geometry``, centre ``lon``/``lat``) from STAC items or Major TOM grid cells;
- ``rasters`` + ``descriptors``: Köppen–Geiger climate zone and IGBP land cover per
  sample (or any categorical raster), joint ``stratum`` labels;
- ``fitness`` + ``genetic`` + ``select``: per-stratum genetic algorithm (deap) that
  maximises an entropy-based spread score, and the random-stratified baseline;
- ``stats`` + ``plots``: the paper's Table II and world maps;
- ``workflow`` + ``cli``: both selections written to disk; ``xcsmoe sample ...``.
"""
