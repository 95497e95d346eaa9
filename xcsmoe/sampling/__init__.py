"""Thematic-climatic descriptor-driven sampling (the paper's "Minor TOM" selection).

Pipeline, each stage in its own module:

- ``archive`` (+ ``lonlat``): samples as a GeoDataFrame (EPSG:4326; ``sample_id``,
  footprint ``geometry``, centre ``lon``/``lat``) from STAC items or Major TOM grid
  cells; bboxes and footprints across the antimeridian are split, never wrapped;
- ``rasters`` + ``classtables`` + ``stac_product`` + ``descriptors``: Köppen–Geiger
  climate zone and land cover per sample, joint ``stratum`` labels. Land cover is the
  paper's ESA WorldCover read through STAC (``landcover="esa-worldcover"``, mosaicked
  across tiles) or, offline and by default, MODIS MCD12C1 IGBP 2019 shipped with the
  package; water and nodata codes come from each product's class table, and every
  output names the product used;
- ``fitness`` + ``genetic`` + ``select``: per-stratum genetic algorithm (deap) seeded
  with greedy farthest-point, with a convergence stop, that maximises an entropy-based
  spread score; the random-stratified and greedy baselines;
- ``stats`` + ``plots``: the paper's Table II and world maps with legends and coastlines;
- ``workflow`` + ``cli``: the selections written to disk; ``xcsmoe sample ...``.
"""
