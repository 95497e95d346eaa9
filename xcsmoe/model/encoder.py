"""The CSMoE encoder: per-sensor patch embeddings and modality-specific Soft MoE layers,
then cross-sensor layers whose experts both sensors share.

Parameter names follow the CSMAE code base so its checkpoints map 1:1: ``patch_embed``
(S1), ``patch_embed_s2``, ``cls_token`` (S1), ``cls_token_s2``, ``pos_embed`` (fixed,
shared), ``blocks_s1`` / ``blocks_s2``, ``norm_s1`` / ``norm_s2``, ``blocks``, ``norm``, and
``fc_norm`` for models whose feature is pooled (``config.global_pool == "avg"``, CSMAE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from xcsmoe.errors import InputError, expected
from xcsmoe.model.blocks import Block, Mlp, MlpFactory, soft_moe_factory
from xcsmoe.model.config import CSMoEConfig
from xcsmoe.model.pos_embed import sincos_2d
from xcsmoe.model.soft_moe import RoutingWeights

SENSORS = ("s1", "s2")


@dataclass
class EncoderOutput:
    """What :meth:`CSMoE.forward_features` returns, per sensor key ``"s1"`` / ``"s2"``.

    * ``cls[s]``: (B, D) raw (final-norm, un-pooled) [CLS] token.
    * ``tokens[s]``: (B, N, D) patch tokens, ``N = H/P · W/P`` row-major, [CLS] excluded.
    * ``routing[s]``: with ``return_routing=True``, one (B, 1 + N, E) tensor per Soft MoE
      layer on that sensor's path (modality-specific layers first, then shared ones):
      per token ([CLS] first), the share of its combine weight that each expert's slots
      receive (sums to 1 over E). Empty lists for a dense model.
    """

    cls: dict[str, Tensor] = field(default_factory=dict)
    tokens: dict[str, Tensor] = field(default_factory=dict)
    routing: dict[str, list[Tensor]] = field(default_factory=dict)


class PatchEmbed(nn.Module):
    """(B, C, H, W) → (B, H/P · W/P, D): a stride-P convolution's weights named ``proj``.

    The convolution is computed as one matmul over flattened P×P patches (the same sums,
    row-major token order). oneDNN's bf16 stride-P convolution returns wrong values on
    AVX512-BF16/AMX CPUs for some channel counts (torch 2.14: C = 8, 10, 12, 16 at
    P = 16, cosine to float32 near 0), so ``conv2d`` is never called under autocast.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, (h // p) * (w // p), c * p * p)  # (B, N, C·P·P)
        weight = self.proj.weight.reshape(self.proj.out_channels, c * p * p)
        return F.linear(patches, weight, self.proj.bias)


def _blocks(config: CSMoEConfig, depth: int) -> nn.ModuleList:
    mlp: MlpFactory = Mlp
    if config.is_moe:
        slots = config.slots_per_expert or -(-(config.num_patches + 1) // config.num_experts)
        mlp = soft_moe_factory(
            config.num_experts, slot_mode=config.slot_mode, slots_per_expert=slots
        )
    norm = partial(nn.LayerNorm, eps=config.norm_eps)
    return nn.ModuleList(
        Block(
            config.embed_dim,
            config.num_heads,
            config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            norm_layer=norm,
            mlp_layer=mlp,
        )
        for _ in range(depth)
    )


class CSMoE(nn.Module):
    """CSMoE encoder (or the dense CSMAE baseline when ``config.num_experts == 0``).

    Position embeddings are the fixed 2-D sin-cos ones; for an input grid other than the
    native ``img_size / patch_size`` square they are recomputed for the actual grid (exact,
    no interpolation; see :mod:`xcsmoe.model.pos_embed`).
    """

    def __init__(self, config: CSMoEConfig | None = None) -> None:
        super().__init__()
        config = config or CSMoEConfig()
        self.config = config
        d = config.embed_dim
        norm = partial(nn.LayerNorm, eps=config.norm_eps)
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans_s1, d)
        self.patch_embed_s2 = PatchEmbed(config.patch_size, config.in_chans_s2, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_token_s2 = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, config.num_patches + 1, d), requires_grad=False
        )
        self.blocks_s1 = _blocks(config, config.depth_specific)
        self.blocks_s2 = _blocks(config, config.depth_specific)
        self.norm_s1 = norm(d)
        self.norm_s2 = norm(d)
        self.blocks = _blocks(config, config.depth_shared)
        self.norm = norm(d)
        # CSMAE (timm, global_pool="avg"): feature = fc_norm(mean of the patch tokens)
        self.fc_norm = norm(d) if config.global_pool == "avg" else None
        self.expert_weights: dict[str, list[Tensor]] | None = None
        self.initialize_weights()

    # ------------------------------------------------------------------ init
    def initialize_weights(self) -> None:
        """MAE initialisation: sin-cos ``pos_embed``, xavier linears/patch convs, N(0, .02) [CLS]."""
        g = self.config.grid_size
        self.pos_embed.data.copy_(sincos_2d(self.config.embed_dim, g, g))
        for embed in (self.patch_embed, self.patch_embed_s2):
            w = embed.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.cls_token_s2, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ helpers
    def _parts(self, sensor: str) -> tuple[nn.Module, nn.Parameter, nn.ModuleList, nn.Module]:
        if sensor == "s1":
            return self.patch_embed, self.cls_token, self.blocks_s1, self.norm_s1
        return self.patch_embed_s2, self.cls_token_s2, self.blocks_s2, self.norm_s2

    def check_input(self, x: object, sensor: str) -> Tensor:
        """Raise :class:`InputError` unless ``x`` is a finite float (B, C_sensor, H, W) tensor
        with H, W positive multiples of the patch size."""
        c, p = self.config.in_chans(sensor), self.config.patch_size
        shape = f"(B, {c}, H, W) float tensor"
        if not isinstance(x, Tensor):
            raise InputError(expected(sensor, f"a {shape}", type(x).__name__))
        if x.dim() != 4:
            raise InputError(
                expected(
                    sensor,
                    shape,
                    tuple(x.shape),
                    "Add a batch dimension: x[None]." if x.dim() == 3 else None,
                )
            )
        if x.shape[1] != c:
            raise InputError(
                expected(
                    f"{sensor} channels",
                    f"{c} bands",
                    x.shape[1],
                    f"Pass {sensor.upper()} as (B, {c}, H, W).",
                )
            )
        h, w = x.shape[-2:]
        if h == 0 or w == 0 or h % p or w % p:
            raise InputError(
                expected(
                    f"{sensor} height/width",
                    f"positive multiples of the patch size {p}",
                    (h, w),
                    f"Crop or pad to e.g. {max(p, h - h % p)}x{max(p, w - w % p)}.",
                )
            )
        if not x.is_floating_point():
            raise InputError(
                expected(
                    f"{sensor} dtype",
                    "a floating dtype",
                    x.dtype,
                    "Normalise and cast to float32 first.",
                )
            )
        if x.device.type != "meta" and not bool(torch.isfinite(x).all()):
            raise InputError(
                expected(
                    sensor,
                    "finite values",
                    "NaN or inf",
                    "Fill nodata (e.g. with 0 after normalisation) first.",
                )
            )
        return x

    def position_embedding(self, grid_h: int, grid_w: int, like: Tensor) -> Tensor:
        """(1, 1 + grid_h·grid_w, D): stored ``pos_embed`` on the native grid, else recomputed."""
        g = self.config.grid_size
        if (grid_h, grid_w) == (g, g):
            return self.pos_embed.to(like.dtype)
        return sincos_2d(
            self.config.embed_dim, grid_h, grid_w, device=like.device, dtype=like.dtype
        )

    # ------------------------------------------------------------------ stages
    def embed(self, x: Tensor, sensor: str) -> tuple[Tensor, Tensor]:
        """Stage 1: (B, C, H, W) → patch tokens + pos (B, N, D) and [CLS] + pos (B, 1, D)."""
        p = self.config.patch_size
        patch_embed, cls_token, _, _ = self._parts(sensor)
        tokens = patch_embed(x)
        pos = self.position_embedding(x.shape[-2] // p, x.shape[-1] // p, tokens)
        cls = (cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return tokens + pos[:, 1:], cls

    def forward_specific(
        self, x: Tensor, sensor: str, routing: list[RoutingWeights] | None = None
    ) -> Tensor:
        """Stage 2: modality-specific layers + ``norm_{sensor}``: (B, 1 + N, D) → (B, 1 + N, D)."""
        _, _, blocks, norm = self._parts(sensor)
        return norm(self._run(blocks, x, routing))

    def forward_shared(self, x: Tensor, routing: list[RoutingWeights] | None = None) -> Tensor:
        """Stage 3: cross-sensor layers + ``norm``: (B, 1 + N, D) → (B, 1 + N, D)."""
        return self.norm(self._run(self.blocks, x, routing))

    @staticmethod
    def _run(blocks: nn.ModuleList, x: Tensor, routing: list[RoutingWeights] | None) -> Tensor:
        for block in blocks:
            if routing is None:
                x = block(x)
            else:
                x, route = block(x, return_routing=True)
                if route is not None:
                    routing.append(route)
        return x

    def forward_sensor(
        self, x: Tensor, sensor: str, routing: list[RoutingWeights] | None = None
    ) -> Tensor:
        """One sensor through all stages: (B, C, H, W) → (B, 1 + N, D), [CLS] first."""
        tokens, cls = self.embed(x, sensor)
        x = torch.cat([cls, tokens], dim=1)
        return self.forward_shared(self.forward_specific(x, sensor, routing), routing)

    # ------------------------------------------------------------------ public
    def forward_features(
        self, s1: Tensor | None = None, s2: Tensor | None = None, *, return_routing: bool = False
    ) -> EncoderOutput:
        """Encode S1 (B, 2, H, W) and/or S2 (B, 10, H, W) normalised images.

        Returns an :class:`EncoderOutput` with ``cls[s]`` (B, D), ``tokens[s]`` (B, N, D) and,
        if ``return_routing``, ``routing[s]``: a list of (B, 1 + N, E) expert shares per Soft
        MoE layer (also kept in ``self.expert_weights``).
        """
        if s1 is None and s2 is None:
            raise InputError(
                expected(
                    "s1/s2", "at least one sensor tensor", None, "Pass s1=..., s2=... or both."
                )
            )
        out = EncoderOutput()
        for sensor, x in (("s1", s1), ("s2", s2)):
            if x is None:
                continue
            self.check_input(x, sensor)
            routes: list[RoutingWeights] | None = [] if return_routing else None
            feats = self.forward_sensor(x, sensor, routes)
            out.cls[sensor], out.tokens[sensor] = feats[:, 0], feats[:, 1:]
            if routes is not None:
                out.routing[sensor] = [r.expert_share for r in routes]
        if return_routing:
            self.expert_weights = out.routing
        return out

    def pooled(self, out: EncoderOutput, sensor: str) -> Tensor:
        """The model's classification feature of one sensor (B, D): the raw [CLS] token, or
        for ``global_pool="avg"`` (CSMAE) ``fc_norm`` of the mean of the patch tokens."""
        if self.fc_norm is None:
            return out.cls[sensor]
        return self.fc_norm(out.tokens[sensor].mean(dim=1))

    def forward_head(self, out: EncoderOutput) -> Tensor:
        """The classification feature (:meth:`pooled`), concatenated over the sensors given
        (B, D·k)."""
        return torch.cat([self.pooled(out, s) for s in SENSORS if s in out.cls], dim=-1)

    def forward_intermediates(
        self, x: Tensor, sensor: str, layers: tuple[int, ...]
    ) -> tuple[Tensor, list[Tensor]]:
        """Final tokens (B, 1 + N, D) of one sensor plus the outputs (B, 1 + N, D) of the
        blocks ``layers`` index, counted along the sensor's path (modality-specific blocks
        first, then shared ones; negative indices count from the end). Outputs are taken
        before the final norms, as multi-level probes (UPerNet) use them."""
        self.check_input(x, sensor)
        _, _, specific, norm = self._parts(sensor)
        depth = len(specific) + len(self.blocks)
        wanted = sorted({i % depth for i in layers if -depth <= i < depth})
        if len(wanted) != len(set(layers)):
            raise InputError(
                expected("layers", f"distinct block indices in [-{depth}, {depth})", layers)
            )
        tokens, cls = self.embed(x, sensor)
        h = torch.cat([cls, tokens], dim=1)
        kept: dict[int, Tensor] = {}
        for i, block in enumerate(specific):
            h = block(h)
            if i in wanted:
                kept[i] = h
        h = norm(h)
        for i, block in enumerate(self.blocks, start=len(specific)):
            h = block(h)
            if i in wanted:
                kept[i] = h
        return self.norm(h), [kept[i % depth] for i in layers]

    def forward(
        self, s1: Tensor | None = None, s2: Tensor | None = None, *, return_routing: bool = False
    ) -> EncoderOutput:
        """Same as :meth:`forward_features`."""
        return self.forward_features(s1, s2, return_routing=return_routing)

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name}, patch={c.patch_size}, img={c.img_size}, dim={c.embed_dim}, experts={c.num_experts}"


def num_params_path(model: CSMoE, sensor: str = "s2") -> int:
    """Parameters one image of ``sensor`` passes through (``pos_embed`` included, frozen)."""
    embed, cls, blocks, norm = model._parts(sensor)
    modules = (embed, blocks, norm, model.blocks, model.norm)
    total = sum(p.numel() for m in modules for p in m.parameters())
    return total + cls.numel() + model.pos_embed.numel()
