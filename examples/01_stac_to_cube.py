"""From STAC to a co-registered, model-ready Sentinel-1/Sentinel-2 cube.

Runs offline on the sample catalog (six BigEarthNet patches); swap the search source for
"planetary-computer" (and sign its assets) to do the same over any area.

    python examples/01_stac_to_cube.py
"""

from __future__ import annotations

import xcsmoe

# 1. search: a static catalog here; a STAC API URL or provider name works the same way
catalog = xcsmoe.example_catalog()
items = xcsmoe.search(catalog, bbox=[13.6, 48.1, 13.8, 48.3], datetime="2017-06")
s2 = [i for i in items if i.collection_id == "bigearthnet-s2"]
s1 = [i for i in items if i.collection_id == "bigearthnet-s1"]
print(f"found {len(s2)} Sentinel-2 and {len(s1)} Sentinel-1 items")

# 2. load: lazy, dask-backed; S1 on the S2 grid, paired with the nearest S2 date
cube = xcsmoe.load_cube(s2, s1, chunks={"x": 112, "y": 112})
print(cube)
print("grid:", cube.odc.geobox.shape, f"EPSG:{cube.odc.crs.epsg}", cube.odc.geobox.resolution)
print("S1 acquisition paired with each S2 step:", cube.s1_time.values)

# 3. normalise: raw values stay inspectable in `cube`; the model gets standardised ones
ready = xcsmoe.normalise(cube).compute()
for band in ("B04", "B08", "vv"):
    print(
        f"{band}: raw mean {float(cube[band].mean()):10.4f}  ->  standardised mean "
        f"{float(ready[band].mean()):+.3f}"
    )
