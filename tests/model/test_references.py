"""The model against references that do not share its code.

* transformer blocks and a dense encoder against ``timm``'s ``Block`` / ``PatchEmbed``
  loaded with the same weights;
* Soft MoE routing written out from its definition (Puigcerver et al., ICLR 2024) with
  plain torch ops, slot by slot;
* fixed sin-cos position embeddings from the MAE formula (numpy), and position-embedding
  resampling against a direct ``F.interpolate`` call;
* the encoder's state dict against the key list of the released CSMAE backbone
  (``github.com/jakhac/CSMAE``, ``src/csmae_backbone.py``).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed as TimmPatchEmbed
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import Block as TimmBlock
from torch import nn

from xcsmoe.errors import CheckpointError
from xcsmoe.model.blocks import Block
from xcsmoe.model.checkpoint import load_checkpoint, load_state, save_checkpoint
from xcsmoe.model.pos_embed import resample_pos_embed, sincos_2d
from xcsmoe.model.registry import create_model
from xcsmoe.model.soft_moe import SoftMoE

ATOL = 2e-6  # float32: the same sums in another order (outputs are O(1) to O(10))
RTOL = 1e-5
TOLERANCE = {torch.float32: {"rtol": RTOL, "atol": ATOL}, torch.float64: {"rtol": 0, "atol": 1e-12}}


def randomise_(module: nn.Module, seed: int) -> nn.Module:
    """Add N(0, 0.02²) to every trainable parameter (LayerNorm scales and all biases too),
    so that a test cannot pass because some tensor is zero or one; the fixed sin-cos
    ``pos_embed`` stays as built."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.requires_grad:
                param.add_(0.02 * torch.randn(param.shape, generator=g))
    return module


def timm_block(dim: int, heads: int, *, fused: bool = False) -> TimmBlock:
    """timm's ViT block as CSMAE builds it (qkv bias, LayerNorm eps 1e-6)."""
    block = TimmBlock(dim, heads, 4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    block.attn.fused_attn = fused  # explicit softmax(q kᵀ / √d) v unless asked otherwise
    return block.eval()


# --------------------------------------------------------------------------- timm blocks
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("dim", "heads", "tokens"), [(64, 2, 17), (768, 12, 65)])
def test_dense_block_equals_timm_block(dim, heads, tokens, dtype):
    ours = randomise_(Block(dim, heads, 4.0, norm_layer=partial(nn.LayerNorm, eps=1e-6)), 0)
    reference = timm_block(dim, heads)
    reference.load_state_dict(ours.state_dict(), strict=True)  # names map 1:1
    ours, reference = ours.to(dtype), reference.to(dtype)
    x = torch.randn(2, tokens, dim, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with torch.no_grad():
        np.testing.assert_allclose(ours(x).numpy(), reference(x).numpy(), **TOLERANCE[dtype])


def test_decoder_blocks_equal_timm_blocks():
    model = randomise_(create_model("csmoe_tiny", pretraining=True), 2).eval()
    decoder = model.decoder_s2
    x = torch.randn(2, 17, decoder.decoder_embed.out_features)
    for ours in decoder.decoder_blocks:
        reference = timm_block(x.shape[-1], ours.attn.num_heads)
        reference.load_state_dict(ours.state_dict(), strict=True)
        with torch.no_grad():
            expected = reference(x)
            np.testing.assert_allclose(ours(x).numpy(), expected.numpy(), rtol=RTOL, atol=ATOL)
        x = expected


def mae_sincos_2d(dim: int, grid: int) -> np.ndarray:
    """MAE's ``get_2d_sincos_pos_embed`` (cls row of zeros first), from its definition:
    half the channels encode the column, half the row, each as ``[sin(p·ω), cos(p·ω)]``
    with ``ω_k = 1 / 10000^(k / (d/2))``."""

    def one_axis(d: int, positions: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        angles = np.outer(positions.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    emb = np.concatenate([one_axis(dim // 2, cols), one_axis(dim // 2, rows)], axis=1)
    return np.concatenate([np.zeros((1, dim)), emb], axis=0)


def test_sincos_position_embedding_follows_the_mae_formula():
    for dim, grid in ((64, 4), (768, 14), (768, 8)):
        expected = mae_sincos_2d(dim, grid)
        ours = sincos_2d(dim, grid, grid, dtype=torch.float64)[0].numpy()
        np.testing.assert_allclose(ours, expected, atol=1e-12)


@pytest.mark.parametrize("sensor", ["s1", "s2"])
def test_dense_encoder_equals_a_timm_composition(images, sensor):
    """One sensor's path through a dense encoder, rebuilt from timm parts as CSMAE's backbone
    runs it: patch embed + pos, [CLS] + pos, modality blocks, modality norm, shared blocks,
    ``norm``."""
    model = randomise_(create_model("csmoe_tiny", num_experts=0), 3).eval()
    config = model.config
    suffix = "" if sensor == "s1" else "_s2"  # CSMAE names: patch_embed / patch_embed_s2 ...
    embed = getattr(model, f"patch_embed{suffix}")
    cls_token = getattr(model, f"cls_token{suffix}")
    own_blocks, own_norm = getattr(model, f"blocks_{sensor}"), getattr(model, f"norm_{sensor}")
    chans = config.in_chans(sensor)
    patch = TimmPatchEmbed(config.img_size, config.patch_size, chans, config.embed_dim)
    patch.load_state_dict(embed.state_dict(), strict=True)
    specific = [timm_block(config.embed_dim, config.num_heads) for _ in own_blocks]
    shared = [timm_block(config.embed_dim, config.num_heads) for _ in model.blocks]
    for reference, ours in zip(specific + shared, [*own_blocks, *model.blocks], strict=True):
        reference.load_state_dict(ours.state_dict(), strict=True)
    pos = torch.from_numpy(mae_sincos_2d(config.embed_dim, config.grid_size)).float()[None]

    s1, s2 = images(batch=2, size=config.img_size, seed=4)
    pixels = s1 if sensor == "s1" else s2
    with torch.no_grad():
        x = patch(pixels) + pos[:, 1:]
        cls = (cls_token + pos[:, :1]).expand(len(pixels), -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in specific:
            x = block(x)
        x = own_norm(x)  # nn.LayerNorm: torch's own, not model code
        for block in shared:
            x = block(x)
        x = model.norm(x)
        out = model.forward_features(**{sensor: pixels})
    # Our patch embedding sums each 10·16·16-term patch as a matmul, timm's as a convolution:
    # float32 rounding of the two orders differs by ~1e-6 and passes through 6 layers.
    tol = {"rtol": RTOL, "atol": 5 * ATOL}
    np.testing.assert_allclose(out.cls[sensor].numpy(), x[:, 0].numpy(), **tol)
    np.testing.assert_allclose(out.tokens[sensor].numpy(), x[:, 1:].numpy(), **tol)


# --------------------------------------------------------------------------- Soft MoE
def reference_soft_moe(layer: SoftMoE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Soft MoE of one sample ``x`` (N, D), written out step by step.

    Slots (grouped mode): token groups ``[s·E, (s+1)·E)`` (the last one shorter) are
    averaged, projected by ``slot_proj`` to ``E·D`` values, and split into one slot per
    expert; slot of expert ``e`` and group ``s`` has index ``e·S + s``.
    """
    n, d = x.shape
    e_count = layer.num_experts
    if layer.slot_mode == "grouped":
        s_count = math.ceil(n / e_count)
        phi = torch.empty(e_count * s_count, d, dtype=x.dtype)
        for s in range(s_count):
            mean = x[s * e_count : min((s + 1) * e_count, n)].mean(dim=0)
            projected = layer.slot_proj.weight @ mean  # (E·D,)
            for e in range(e_count):
                phi[e * s_count + s] = projected[e * d : (e + 1) * d]
    else:
        phi = layer.slot_embed.detach().clone()
        s_count = phi.shape[0] // e_count
    x_unit = x / x.norm(dim=1, keepdim=True)
    phi_unit = phi / phi.norm(dim=1, keepdim=True)
    logits = layer.scale * (x_unit @ phi_unit.T)  # (N, M)
    dispatch = logits.softmax(dim=0)  # over tokens: each slot mixes the tokens
    combine = logits.softmax(dim=1)  # over all slots: each token mixes the slot outputs
    experts = layer.experts
    slot_outputs = []
    for m in range(e_count * s_count):
        e = m // s_count  # expert-major slot order
        slot_in = (dispatch[:, m : m + 1] * x).sum(dim=0)  # dispatch-weighted token sum
        hidden = F.gelu(slot_in @ experts.fc1_weight[e] + experts.fc1_bias[e])
        slot_outputs.append(hidden @ experts.fc2_weight[e] + experts.fc2_bias[e])
    y = combine @ torch.stack(slot_outputs)  # (N, D)
    return {"y": y, "dispatch": dispatch, "combine": combine, "slots": phi}


@pytest.mark.parametrize(
    ("slot_mode", "tokens"), [("grouped", 17), ("grouped", 16), ("learned", 13)]
)
def test_soft_moe_equals_the_definition(slot_mode, tokens):
    torch.manual_seed(5)
    layer = randomise_(SoftMoE(32, 4, 64, slot_mode=slot_mode, slots_per_expert=3), 6).eval()
    with torch.no_grad():
        layer.scale.fill_(2.5)  # a temperature other than 1
    x = torch.randn(2, tokens, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y, routing = layer(x, return_routing=True)
        for b in range(len(x)):
            expected = reference_soft_moe(layer, x[b])
            np.testing.assert_allclose(y[b].numpy(), expected["y"].numpy(), rtol=RTOL, atol=ATOL)
            for name in ("dispatch", "combine"):
                ours = getattr(routing, name)[b].numpy()
                np.testing.assert_allclose(ours, expected[name].numpy(), atol=ATOL)
            slots = routing.slots if routing.slots.dim() == 2 else routing.slots[b]
            np.testing.assert_allclose(
                slots.numpy(), expected["slots"].numpy(), rtol=RTOL, atol=ATOL
            )


def test_moe_block_uses_the_reference_soft_moe():
    """A CSMoE encoder block = timm's attention half + the hand-written Soft MoE."""
    model = randomise_(create_model("csmoe_tiny"), 8).eval()
    ours = model.blocks_s2[0]
    attention_half = timm_block(model.config.embed_dim, model.config.num_heads)
    dense = {k: v for k, v in ours.state_dict().items() if not k.startswith("mlp.")}
    attention_half.load_state_dict(dense, strict=False)
    x = torch.randn(1, 17, model.config.embed_dim, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        h = x + attention_half.attn(attention_half.norm1(x))
        expected = h + reference_soft_moe(ours.mlp, attention_half.norm2(h)[0])["y"][None]
        np.testing.assert_allclose(ours(x).numpy(), expected.numpy(), rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- pos_embed
def interpolate_grid(pos: torch.Tensor, side: int, size: tuple[int, int]) -> torch.Tensor:
    """Direct F.interpolate of the patch rows of a (1, 1 + side², D) embedding."""
    dim = pos.shape[-1]
    image = pos[0, 1:].T.reshape(1, dim, side, side)  # channels first, row-major patches
    resized = F.interpolate(image, size=size, mode="bicubic", align_corners=False)
    return torch.cat([pos[0, :1], resized.reshape(dim, -1).T])[None]


@pytest.mark.parametrize("size", [(6, 6), (3, 3), (4, 7)])
def test_resample_pos_embed_equals_direct_interpolate(size):
    pos = torch.randn(1, 1 + 5 * 5, 16, generator=torch.Generator().manual_seed(10))
    ours = resample_pos_embed(pos, *size)
    np.testing.assert_array_equal(ours.numpy(), interpolate_grid(pos, 5, size).numpy())
    # timm's resampler agrees when asked for plain bicubic (MAE's convention); its default
    # antialias=True switches to the PIL kernel (a = -0.5) and gives other values.
    timm_result = resample_abs_pos_embed(pos, list(size), [5, 5], antialias=False)
    np.testing.assert_allclose(ours.numpy(), timm_result.numpy(), atol=1e-6)


def test_checkpoint_pos_embed_is_resampled_like_interpolate(tmp_path):
    """A csmoe_tiny saved at img_size 96 (grid 6) loads into img_size 64 (grid 4)."""
    source = create_model("csmoe_tiny", img_size=96)
    with torch.no_grad():
        source.pos_embed.add_(torch.randn(source.pos_embed.shape))  # not sin-cos any more
    path = save_checkpoint(source, tmp_path / "grid6.safetensors")
    target = create_model("csmoe_tiny", weights=path)
    expected = interpolate_grid(source.pos_embed.detach(), 6, (4, 4))
    np.testing.assert_array_equal(target.pos_embed.detach().numpy(), expected.numpy())
    reloaded = load_checkpoint(path)  # built from the file's own config: no resampling
    np.testing.assert_array_equal(reloaded.pos_embed.numpy(), source.pos_embed.detach().numpy())


# --------------------------------------------------------------------------- CSMAE keys
CSMAE_BLOCK = {
    "norm1.weight": ("D",),
    "norm1.bias": ("D",),
    "attn.qkv.weight": ("3D", "D"),
    "attn.qkv.bias": ("3D",),
    "attn.proj.weight": ("D", "D"),
    "attn.proj.bias": ("D",),
    "norm2.weight": ("D",),
    "norm2.bias": ("D",),
    "mlp.fc1.weight": ("4D", "D"),
    "mlp.fc1.bias": ("4D",),
    "mlp.fc2.weight": ("D", "4D"),
    "mlp.fc2.bias": ("D",),
}


def csmae_backbone_keys(
    *, dim: int = 768, patch: int = 15, img: int = 120, specific: int = 10, shared: int = 2
) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of the released CSMAE backbone (``vit_base``, config
    ``csmae_sesd.yaml``: patch 15, image 120, 10 modality-specific + 2 cross-sensor
    layers, ``global_pool: avg``), read off ``CSMAEBackbone.__init__``:

    * timm's ``VisionTransformer`` supplies ``cls_token``, ``pos_embed``, ``blocks``
      (depth = cross-sensor depth) and, because ``global_pool="avg"`` with
      ``fc_norm=None`` turns its fc-norm on, ``fc_norm`` (its ``norm`` becomes an
      Identity, ``head`` an Identity for ``num_classes=0``);
    * CSMAE then replaces ``patch_embed`` with a 2-channel S1 one, sets ``norm`` again,
      and adds ``patch_embed_s2`` (10 channels), ``cls_token_s2``, ``blocks_s1``,
      ``norm_s1``, ``blocks_s2``, ``norm_s2``.
    """
    sizes = {"D": dim, "3D": 3 * dim, "4D": 4 * dim}
    tokens = (img // patch) ** 2 + 1
    keys: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "cls_token_s2": (1, 1, dim),
        "pos_embed": (1, tokens, dim),
        "patch_embed.proj.weight": (dim, 2, patch, patch),
        "patch_embed.proj.bias": (dim,),
        "patch_embed_s2.proj.weight": (dim, 10, patch, patch),
        "patch_embed_s2.proj.bias": (dim,),
    }
    for norm in ("norm", "norm_s1", "norm_s2", "fc_norm"):
        keys[f"{norm}.weight"] = keys[f"{norm}.bias"] = (dim,)
    for prefix, depth in (("blocks", shared), ("blocks_s1", specific), ("blocks_s2", specific)):
        for i in range(depth):
            for name, shape in CSMAE_BLOCK.items():
                keys[f"{prefix}.{i}.{name}"] = tuple(sizes[s] for s in shape)
    return keys


def test_csmae_p15_has_exactly_the_released_backbone_keys():
    released = csmae_backbone_keys()
    with torch.device("meta"):
        model = create_model("csmae_p15")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == released  # fc_norm included: CSMAE's feature pools through it


def test_csmae_lightning_state_dict_loads_strictly_through_the_backbone_prefix():
    """The Lightning module stores ``backbone.*`` plus decoders; the encoder takes the
    backbone and nothing else, and every one of our tensors is covered."""
    state = {
        f"backbone.{k}": torch.empty(v, device="meta") for k, v in csmae_backbone_keys().items()
    }
    state["decoder_s1_to_s2.decoder_embed.weight"] = torch.empty(512, 768, device="meta")
    state["decoder_s2_to_s1.mask_token"] = torch.empty(1, 1, 512, device="meta")
    with torch.device("meta"):
        model = create_model("csmae_p15")
    load_state(model, state, strict=True, source="CSMAE Lightning state dict")
    del state["backbone.blocks_s2.9.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"blocks_s2\.9\.mlp\.fc2\.bias"):
        load_state(model, state, strict=True, source="truncated")
