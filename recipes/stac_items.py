"""Recipe: descriptor-driven GA vs random selection of the items of a STAC search.

Items come from a STAC API search (``--api URL --collections ... --bbox ...``), from
Item / ItemCollection JSON files or a static ``catalog.json`` (positional paths), or, with
neither, from the package's example catalog. Footprints → climate zone + land cover at
each item's centre → ``--per-stratum`` items per joint stratum by GA and at random →
GeoParquet, Table II and maps in ``--out``.

    python recipes/stac_items.py catalog.json --out runs/items --per-stratum 10
    python recipes/stac_items.py --api https://earth-search.aws.element84.com/v1 \\
        --collections sentinel-2-l2a --bbox 5 45 15 55 --max-items 2000 --out runs/items
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xcsmoe.sampling.archive import archive_from_items
from xcsmoe.sampling.cli import read_items
from xcsmoe.sampling.descriptors import add_descriptors
from xcsmoe.sampling.stats import format_statistics
from xcsmoe.sampling.workflow import Comparison, compare_selections


def search_items(
    api: str, *, collections: list[str], bbox: list[float] | None, max_items: int
) -> list[Any]:
    """Items of a STAC API search (needs network access)."""
    import pystac_client

    search = pystac_client.Client.open(api).search(
        collections=collections, bbox=bbox, max_items=max_items
    )
    return list(search.items())


def example_items() -> list[Any]:
    """Items of the package's example catalog (built offline by ``xcsmoe.example_catalog``)."""
    import xcsmoe

    catalog = xcsmoe.example_catalog()
    if hasattr(catalog, "get_items"):  # a pystac Catalog
        return list(catalog.get_items(recursive=True))
    return read_items([str(catalog)])  # a path to catalog.json


def run(
    items: Any,
    out_dir: str | Path,
    *,
    per_stratum: int = 10,
    seed: int = 0,
    landcover: Any = None,
    landcover_classes: Any = None,
    **ga_settings: Any,
) -> Comparison:
    """Archive from ``items`` (invalid footprints dropped and counted) → both selections.

    ``landcover``: None (MODIS IGBP, offline), a product name (``"esa-worldcover"``,
    read through STAC) or a raster; ``landcover_classes``: its class table.
    """
    archive = archive_from_items(items, on_invalid="drop")
    described = add_descriptors(archive, landcover=landcover, landcover_classes=landcover_classes)
    print(
        f"items: {archive.attrs['summary']}; described: {described.attrs['summary']['descriptors']}"
    )
    return compare_selections(
        described, out_dir=out_dir, per_stratum=per_stratum, seed=seed, **ga_settings
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="Item/ItemCollection JSON files or catalog.json")
    parser.add_argument("--api", default=None, help="STAC API URL to search")
    parser.add_argument("--collections", nargs="*", default=None)
    parser.add_argument("--bbox", type=float, nargs=4, default=None)
    parser.add_argument("--max-items", type=int, default=1000)
    parser.add_argument("--out", default="runs/stac_items")
    parser.add_argument(
        "--per-stratum", type=int, default=None, help="default 10 (2 for the example catalog)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--landcover", default=None, help="product name or raster path")
    parser.add_argument("--landcover-classes", default=None, help="class table name or file")
    args = parser.parse_args()
    if args.api:
        items = search_items(
            args.api, collections=args.collections, bbox=args.bbox, max_items=args.max_items
        )
    elif args.paths:
        items = read_items(args.paths)
    else:  # 12 items in 5 strata: a target below the largest stratum's 4
        items = example_items()
    per_stratum = args.per_stratum or (10 if args.api or args.paths else 2)
    comparison = run(
        items,
        args.out,
        per_stratum=per_stratum,
        seed=args.seed,
        landcover=args.landcover,
        landcover_classes=args.landcover_classes,
    )
    print(format_statistics(comparison.table))
    print("\n".join(f"wrote {path}" for path in comparison.files.values()))


if __name__ == "__main__":
    main()
