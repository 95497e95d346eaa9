"""Planning rules of the embedding run: pure metadata, no pixels, no model."""

from __future__ import annotations

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from xcsmoe.embedding.plan import plan_embedding, windows_per_chunk
from xcsmoe.errors import ConfigError, CRSError, GridError, InputError, MissingBandError
from xcsmoe.sensors import S1, S2

UTM = "EPSG:32633"
ALL = S1.bands + S2.bands
FLOATS = {name: np.dtype("float32") for name in ALL}


def geobox(height: int, width: int, crs: str = UTM) -> GeoBox:
    resolution = 10 if crs != "EPSG:4326" else 0.0001
    return GeoBox.from_bbox(
        (500_000, 5_000_000, 500_000 + width * resolution, 5_000_000 + height * resolution),
        crs,
        resolution=resolution,
    )


def plan(**overrides):
    arguments = dict(
        variables=ALL, dtypes=FLOATS, geobox=geobox(120, 250), patch=16, window=112,
        model_patch=16,
    )  # fmt: skip
    arguments.update(overrides)
    return plan_embedding(**arguments)


def test_pad_keeps_partial_windows_on_exact_zoomed_grids():
    p = plan()
    assert p.sensors == ("s1", "s2")
    assert p.variables == ALL
    assert p.windows == (2, 3)  # ceil(120/112), ceil(250/112)
    assert p.covered_shape == (224, 336)
    assert p.token_geobox == p.geobox.zoom_out(16)
    assert p.token_geobox.shape == (8, 16)  # ceil(120/16), ceil(250/16)
    assert p.cls_geobox == p.geobox.zoom_out(112)
    assert p.token_geobox.affine.a == 160 and p.cls_geobox.affine.a == 1120
    assert p.token_geobox.affine.c == p.geobox.affine.c  # same origin, never shifted


def test_drop_crops_to_whole_windows():
    p = plan(edge="drop")
    assert p.windows == (1, 2)
    assert p.valid_geobox.shape == (112, 224)
    assert p.token_geobox.shape == (7, 14)
    assert p.cls_geobox.shape == (1, 2)
    assert p.token_geobox.affine.c == p.geobox.affine.c


def test_sensors_auto_and_explicit():
    assert plan(variables=S2.bands).sensors == ("s2",)
    assert plan(variables=S1.bands).sensors == ("s1",)
    assert plan(sensors="s2").variables == S2.bands
    assert plan(sensors=["s2", "s1"]).sensors == ("s1", "s2")


def test_missing_band_is_named():
    variables = tuple(v for v in S2.bands if v != "B8A")
    with pytest.raises(MissingBandError, match="B8A"):
        plan(variables=variables)
    with pytest.raises(MissingBandError, match="vh"):
        plan(variables=("vv", *S2.bands), sensors="s1+s2")


def test_patch_and_window_must_fit_the_model():
    with pytest.raises(ConfigError, match="patch: expected the model's patch size 32, got 16"):
        plan(model_patch=32)
    with pytest.raises(ConfigError, match="window"):
        plan(window=100)
    with pytest.raises(ConfigError, match="edge"):
        plan(edge="shift")


def test_cube_smaller_than_window_suggests_a_window():
    with pytest.raises(GridError, match="window=112"):
        plan(window=224)


def test_crs_is_required_and_projected():
    with pytest.raises(CRSError, match="no CRS"):
        plan(geobox=None)
    with pytest.raises(CRSError, match="projected"):
        plan(geobox=geobox(200, 200, crs="EPSG:4326"))


def test_non_numeric_dtype_is_rejected():
    with pytest.raises(InputError, match=r"ds\['B02'\].dtype"):
        plan(dtypes={**FLOATS, "B02": np.dtype("U4")})


@pytest.mark.parametrize(
    ("chunk", "window", "n", "expected"),
    [
        (None, 112, 100, 9),
        (224, 112, 100, 2),
        (300, 112, 100, 3),
        (50, 112, 100, 1),
        (None, 224, 2, 2),
    ],
)
def test_chunks_hold_whole_windows(chunk, window, n, expected):
    assert windows_per_chunk(chunk, window, n) == expected
