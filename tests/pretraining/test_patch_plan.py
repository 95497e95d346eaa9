"""The layout fixed tile by tile while scans arrive in any order equals the layout of all
scans at once (pure planning, no pixel read)."""

from __future__ import annotations

import numpy as np
import pytest

from xcsmoe.pretraining.patch_plan import Block, LayoutStream, PatchSettings, plan_layout


def random_job(rng: np.random.Generator):
    """Tiles (some never read), blocks of up to 2x2 patches, random kept patches."""
    settings = PatchSettings(
        chunk_patches=int(rng.integers(1, 4)), region_chunks=int(rng.integers(1, 3)),
        block_patches=2,
    )  # fmt: skip
    tiles, blocks = int(rng.integers(1, 6)), []
    for tile in range(tiles):
        if rng.random() < 0.2:
            continue  # an unpaired tile: no block
        rows, cols = (int(v) for v in rng.integers(1, 5, 2))
        for r in range(0, rows, 2):
            for c in range(0, cols, 2):
                blocks.append(Block(len(blocks), tile, r, min(r + 2, rows), c, min(c + 2, cols)))
    scans = []
    for block in blocks:
        size = int(rng.integers(0, block.patches + 1))
        kept = sorted(int(k) for k in rng.choice(block.patches, size, replace=False))
        has_s2 = [bool(v) for v in rng.integers(0, 2, size)]
        scans.append({"kept": kept, "has_s1": [True] * size, "has_s2": has_s2,
                      "invalid": block.patches - size})  # fmt: skip
    return settings, tiles, blocks, scans


@pytest.mark.parametrize("seed", range(40))
def test_streamed_layout_equals_the_layout_of_all_scans(seed):
    rng = np.random.default_rng(seed)
    settings, tiles, blocks, scans = random_job(rng)
    whole = plan_layout(blocks, scans, settings)
    stream = LayoutStream(tiles, blocks, settings)
    ready = stream.take_ready()
    for index in rng.permutation(len(blocks)):
        stream.add(int(index), scans[index])
        for region in stream.take_ready():  # a region is handed out once its patches are
            start, region_blocks, slots = stream.sources(region)  # fixed: never changes
            np.testing.assert_array_equal(region_blocks, whole.block[whole.region(region)])
            np.testing.assert_array_equal(slots, whole.slot[whole.region(region)])
            assert start == whole.region(region).start
            ready.append(region)
    assert stream.complete and ready == list(range(whole.regions))
    streamed = stream.layout()
    for name in ("block", "slot", "tile", "row", "col", "has_s1", "has_s2"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(whole, name))
    for tile in range(tiles):
        first, stop = stream.tile_span(tile)
        assert (whole.tile[first:stop] == tile).all() and (whole.tile == tile).sum() == stop - first


def test_the_layout_is_refused_before_every_tile_is_scanned():
    block = Block(0, 0, 0, 1, 0, 1)
    stream = LayoutStream(1, [block], PatchSettings())
    assert stream.take_ready() == [] and not stream.complete
    with pytest.raises(RuntimeError, match="every tile is scanned"):
        stream.layout()
