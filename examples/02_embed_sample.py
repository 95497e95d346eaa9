"""Embed one real S1+S2 sample patch lazily, then look at it.

Runs offline in well under a minute on a laptop CPU:

    python examples/02_embed_sample.py --out example-output
"""

from __future__ import annotations

import argparse
from pathlib import Path

import xcsmoe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="example-output")
    parser.add_argument("--weights", default="random", help='checkpoint path, or "random"')
    args = parser.parse_args()
    out = Path(args.out)

    catalog = xcsmoe.example_catalog()
    s2 = xcsmoe.search(catalog, collections="bigearthnet-s2", max_items=1)
    s1 = xcsmoe.search(catalog, collections="bigearthnet-s1", intersects=s2[0].geometry)
    cube = xcsmoe.load_cube(s2, s1, chunks={"x": 112, "y": 112})

    emb = cube.csmoe.embed(patch=16, window=112, weights=args.weights)
    print(emb)  # lazy: nothing has run yet
    token_grid = emb.tokens.odc.geobox
    print(
        "token grid:",
        token_grid.shape,
        "pixel size",
        token_grid.resolution.x,
        "m, CRS",
        token_grid.crs.epsg,
    )

    emb = emb.compute()
    print(
        "cls norm per window:",
        emb.cls.isel(time=0).pipe(lambda c: (c**2).sum("embedding") ** 0.5).values,
    )
    xcsmoe.plot_embedding_pca(emb, out / "pca.png")
    xcsmoe.cls_to_geoparquet(emb, out / "cls.parquet")
    print(f"wrote {out / 'pca.png'} and {out / 'cls.parquet'}")


if __name__ == "__main__":
    main()
