"""``ds.csmoe.embed`` / ``expert_usage`` on a synthetic cube with the tiny model."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

from xcsmoe.embedding.runtime import build_model, model_spec
from xcsmoe.errors import ConfigError, CRSError, GridError, WeightsRequiredError

TINY = "csmoe_tiny"
WINDOW = 64
ATOL = 1e-5  # float32 batched vs unbatched matmul reorderings
# Compared with a float32 CPU forward, so pinned to the CPU in float32: "auto" would pick
# bf16 on CUDA (see test_gpu.py for that comparison).
PINNED = {"device": "cpu", "dtype": "float32"}


def embed(ds: xr.Dataset, **kwargs) -> xr.Dataset:
    defaults = {"model": TINY, "weights": "random", "window": WINDOW, "normalise": False}
    return ds.csmoe.embed(patch=16, **(defaults | PINNED | kwargs))


@pytest.fixture
def reference(direct_forward):
    """cls (D,) and tokens (D, g, g) of window (t, row, col), computed by hand."""
    model = build_model(model_spec(TINY, "random"))

    def forward(ds, t, row, col, sensors=("s1", "s2")):
        return direct_forward(model, ds.isel(time=t), row, col, WINDOW, sensors)

    return forward


class TaskCounter(Callback):
    def __init__(self):
        super().__init__()
        self.tasks = 0

    def _start_state(self, dsk, state):
        self.tasks += len(state["ready"]) + len(state["waiting"])


def test_embed_is_lazy_and_on_exact_grids(cube):
    with TaskCounter() as counter:
        emb = embed(cube)
    assert counter.tasks == 0
    assert all(isinstance(v.data, dask.array.Array) for v in emb.data_vars.values())
    geobox = cube.odc.geobox
    assert emb.tokens.odc.geobox == geobox.zoom_out(16)
    assert emb.tokens.dims == ("time", "embedding", "y", "x")
    assert emb.tokens.shape[2:] == (8, 13)  # ceil(120/16), ceil(200/16)
    assert emb.cls.dims == ("time", "embedding", "cls_y", "cls_x")
    assert emb.cls.shape[2:] == (2, 4)  # ceil(120/64), ceil(200/64)
    assert emb.attrs["model"] == TINY and emb.attrs["random_weights"] == 1
    assert str(emb.spatial_ref.attrs.get("crs_wkt", "")).startswith("PROJCRS")


def test_windows_match_direct_forward(cube, reference):
    emb = embed(cube).compute()
    g = WINDOW // 16
    for t, row, col in [(0, 0, 0), (1, 1, 2), (0, 1, 3)]:  # (1, 3) is a padded edge window
        cls, tokens = reference(cube, t, row, col)
        np.testing.assert_allclose(emb.cls.values[t, :, row, col], cls, atol=ATOL)
        grid = emb.tokens.values[t, :, row * g : (row + 1) * g, col * g : (col + 1) * g]
        np.testing.assert_allclose(grid, tokens[:, : grid.shape[1], : grid.shape[2]], atol=ATOL)
    edge_fraction = emb.valid_fraction.values[0, 1, 3]
    assert edge_fraction == pytest.approx((120 - 64) * (200 - 192) / 64**2)


def test_chunking_does_not_change_the_numbers(make_cube):
    a = embed(make_cube(chunks=64)).compute()
    b = embed(make_cube(chunks=None), chunks=128).compute()
    c = embed(make_cube(chunks=37)).compute()  # rechunked to whole windows
    for other in (b, c):
        np.testing.assert_allclose(a.tokens.values, other.tokens.values, atol=ATOL)
        np.testing.assert_allclose(a.cls.values, other.cls.values, atol=ATOL)


def test_nan_never_reaches_the_model(make_cube, reference):
    ds = make_cube(chunks=None)
    ds["B02"][0, :10, :10] = np.nan  # a few NaN pixels in window (0, 0)
    for name in ds.data_vars:
        ds[name][0, :64, 64:128] = np.nan  # window (0, 1) entirely NaN
    emb = embed(ds).compute()
    assert np.isfinite(emb.cls.values[0, :, 0, 0]).all()
    assert emb.valid_fraction.values[0, 0, 0] == pytest.approx(1 - 100 / 64**2)
    assert np.isnan(emb.cls.values[0, :, 0, 1]).all()
    assert emb.valid_fraction.values[0, 0, 1] == 0
    cls, _ = reference(ds, 0, 0, 0)
    np.testing.assert_allclose(emb.cls.values[0, :, 0, 0], cls, atol=ATOL)


def test_batches_smaller_than_a_block_give_the_same_numbers(make_cube, reference):
    ds = make_cube(chunks=None)  # one dask block holding all 2 x 4 windows of a time step
    for name in ds.data_vars:
        ds[name][0, :64, 64:128] = np.nan  # window (0, 1) skipped: batches are not contiguous
    one_batch = embed(ds, batch_size=16)
    assert one_batch.cls.data.numblocks[-2:] == (1, 1)
    expected = one_batch.compute()
    for batch_size in (1, 3):  # 8 windows in batches of 3, 3, 2 (and one by one)
        small = embed(ds, batch_size=batch_size).compute()
        for name in ("cls", "tokens", "valid_fraction"):
            np.testing.assert_allclose(small[name].values, expected[name].values, atol=ATOL)
    assert np.isnan(expected.cls.values[0, :, 0, 1]).all()
    cls, _ = reference(ds, 0, 1, 3)
    np.testing.assert_allclose(expected.cls.values[0, :, 1, 3], cls, atol=ATOL)


def test_single_sensor_and_no_time_dimension(cube, reference):
    s2 = embed(cube.isel(time=0), sensors="s2").compute()
    assert "time" not in s2.dims
    both = embed(cube.isel(time=0)).compute()
    assert both.sizes["embedding"] == 2 * s2.sizes["embedding"]
    cls, _ = reference(cube, 0, 0, 0, sensors=("s2",))
    np.testing.assert_allclose(s2.cls.values[:, 0, 0], cls, atol=ATOL)


def test_drop_edge_gives_only_whole_windows(cube):
    emb = embed(cube, edge="drop")
    assert emb.cls.shape[2:] == (1, 3)
    assert emb.tokens.odc.geobox == cube.odc.geobox[:64, :192].zoom_out(16)
    assert float(emb.valid_fraction.min()) == 1.0


def test_bad_inputs_are_refused_before_anything_runs(cube):
    with pytest.raises(WeightsRequiredError, match='weights="random"'):
        cube.csmoe.embed(patch=16, model=TINY, window=WINDOW)
    with pytest.raises(ConfigError, match="patch"):
        cube.csmoe.embed(patch=32, model=TINY, weights="random", window=WINDOW)
    with pytest.raises(ConfigError, match="model"):
        cube.csmoe.embed(patch=16, model="csmoe_p17", weights="random")
    with pytest.raises(GridError, match="window"):
        embed(cube, window=256)
    no_crs = cube.drop_vars("spatial_ref")
    for name in ("x", "y"):
        no_crs[name].attrs = {}
    with pytest.raises(CRSError, match="no CRS"):
        embed(no_crs)
    with pytest.raises(ConfigError, match="output"):
        embed(cube, output=("pixels",))


def test_expert_usage_shares_sum_to_one(cube):
    usage = cube.csmoe.expert_usage(
        patch=16, model=TINY, weights="random", window=WINDOW, normalise=False, sensor="s2",
        **PINNED,
    )  # fmt: skip
    assert usage.dims == ("time", "expert", "y", "x")
    assert usage.odc.geobox == cube.odc.geobox.zoom_out(16)
    values = usage.compute()
    np.testing.assert_allclose(values.sum("expert").values, 1.0, atol=1e-5)
    dominant = values.dominant_expert.values
    assert dominant.min() >= 0 and dominant.max() < usage.sizes["expert"]
    np.testing.assert_array_equal(dominant, values.argmax("expert").values)
