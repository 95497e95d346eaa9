"""Feature stores: computed once, equal to the model's own forward, resumable, guarded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xcsmoe.errors import ConfigError, InputError
from xcsmoe.evaluation.datasets import model_inputs
from xcsmoe.evaluation.features import encode_features, feature_vectors, open_features
from xcsmoe.model.registry import model_config

TINY = "csmoe_tiny"


def _reference(samples, name, sensor, size, seed=0):
    """The encoder run by hand on the set's normalised, resized inputs."""
    from xcsmoe.embedding.runtime import ModelSpec, build_model

    model = build_model(ModelSpec(name, "random", seed))
    x = torch.from_numpy(model_inputs(samples, model.config, (sensor,))[sensor])
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    with torch.inference_mode():
        out = model.forward_features(**{sensor: x})
        pooled = model.forward_head(out)
    return out, pooled


def test_store_holds_the_encoder_outputs(sample_set, sample_features):
    f = sample_features
    assert f.attrs["model"] == TINY and f.attrs["weights"] == "random:0"
    assert list(f["sensor"].values) == ["s1", "s2"]
    assert f["tokens"].shape == (6, 2, 3, 64, 4, 4)
    np.testing.assert_array_equal(f["labels"].values, sample_set["labels"].values)
    for i, sensor in enumerate(("s1", "s2")):
        out, _ = _reference(sample_set, TINY, sensor, 64)
        np.testing.assert_allclose(
            f["cls"].values[:, i], out.cls[sensor].numpy(), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            f["token_mean"].values[:, i], out.tokens[sensor].mean(1).numpy(), rtol=1e-4, atol=1e-5
        )
    # Table V options
    raw = feature_vectors(f, "raw")
    assert raw.shape == (6, 128)
    np.testing.assert_allclose(
        np.linalg.norm(feature_vectors(f, "normalised", sensors="s2"), axis=1), 1, rtol=1e-5
    )
    mean_all = feature_vectors(f, "mean_all", sensors="s1")
    np.testing.assert_allclose(
        mean_all, (f["cls"].values[:, 0] + 16 * f["token_mean"].values[:, 0]) / 17, rtol=1e-5
    )
    assert np.array_equal(feature_vectors(f, "auto"), raw)  # CSMoE: the raw [CLS]
    with pytest.raises(ConfigError, match="pooled"):
        feature_vectors(f, "pooled")


def test_token_grids_are_the_chosen_blocks(sample_set, sample_features):
    from xcsmoe.embedding.runtime import ModelSpec, build_model

    model = build_model(ModelSpec(TINY, "random", 0))
    x = torch.from_numpy(model_inputs(sample_set, model.config, ("s2",))["s2"])
    x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    with torch.inference_mode():
        final, kept = model.forward_intermediates(x, "s2", (0, 1, 2))
        cls = model.forward_features(s2=x).cls["s2"]
    torch.testing.assert_close(final[:, 0], cls)
    grid = kept[2][:, 1:].transpose(1, 2).reshape(6, 64, 4, 4).numpy()
    np.testing.assert_allclose(
        sample_features["tokens"].sel(sensor="s2").values[:, 2], grid, rtol=1e-4, atol=1e-5
    )


def test_resume_and_refusals(sample_set, tmp_path):
    store = tmp_path / "f.zarr"
    subset = sample_set.isel(sample=slice(0, 2))
    first = encode_features(
        subset, store, model=TINY, weights="random", sensors="s2", progress=False
    )
    stamp = (store / "cls" / "zarr.json").stat().st_mtime_ns
    again = encode_features(
        subset, store, model=TINY, weights="random", sensors="s2", progress=False
    )
    assert (store / "cls" / "zarr.json").stat().st_mtime_ns == stamp  # nothing rewritten
    np.testing.assert_array_equal(first["cls"].values, again["cls"].values)
    # a store from another model (other weights) is refused, when writing and when reading
    with pytest.raises(ConfigError, match="weights"):
        encode_features(
            subset, store, model=TINY, weights="random", seed=1, sensors="s2", progress=False
        )
    with pytest.raises(InputError, match="feature store from another model"):
        open_features(store, model=TINY, weights="random", seed=1)
    assert open_features(store, model=TINY, weights="random").attrs["model"] == TINY
    with pytest.raises(ConfigError, match="layers"):
        encode_features(
            subset, tmp_path / "g.zarr", model=TINY, weights="random", layers=(9,), progress=False
        )
    with pytest.raises(ConfigError, match="image_size"):
        encode_features(
            subset, tmp_path / "g.zarr", model=TINY, weights="random", image_size=70, progress=False
        )
    assert not (tmp_path / "g.zarr").exists()  # checked before anything is written


def test_csmae_default_feature_is_fc_norm_of_mean_tokens(sample_set, tmp_path):
    """csmae_p15 keeps fc_norm and pools through it, like CSMAE's released code
    (timm global_pool="avg": fc_norm(mean of patch tokens))."""
    from xcsmoe.model.registry import create_model

    config = model_config("csmae_p15")
    assert config.global_pool == "avg" and config.bands("s1") == ("vh", "vv")
    with torch.device("meta"):
        model = create_model("csmae_p15")
    assert "fc_norm.weight" in model.state_dict()
    # the pooled feature on a small real input, by hand (full-size model: one sample)
    torch.manual_seed(0)
    model = create_model("csmae_p15").eval()
    with torch.no_grad():
        model.fc_norm.weight.uniform_(0.5, 1.5)  # not the identity, so the check means something
    one = sample_set.isel(sample=[0])
    x = {s: torch.from_numpy(v) for s, v in model_inputs(one, config, ("s1", "s2")).items()}
    with torch.inference_mode():
        out = model.forward_features(**x)
        head = model.forward_head(out)
    expected = torch.cat([model.fc_norm(out.tokens[s].mean(1)) for s in ("s1", "s2")], -1)
    torch.testing.assert_close(head, expected)
    assert not torch.allclose(head[:, :768], out.cls["s1"])


def test_encoding_on_a_dask_cluster_matches_in_process(sample_set, sample_features, tmp_path):
    pytest.importorskip("distributed")
    store = encode_features(
        sample_set, tmp_path / "cluster.zarr", model=TINY, weights="random", layers=(0, 1, 2),
        region_size=3, n_workers=1, progress=False,
    )  # fmt: skip
    assert store.attrs["xcsmoe_complete"] is True
    # float32, values O(1): another batch split and thread count sum in another order
    tol = {"rtol": 1e-5, "atol": 1e-5}
    np.testing.assert_allclose(store["cls"].values, sample_features["cls"].values, **tol)
    np.testing.assert_allclose(store["tokens"].values, sample_features["tokens"].values, **tol)
