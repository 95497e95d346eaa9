"""CSMoE masked-autoencoder pretraining: encoder + modality-specific decoders + objectives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from xcsmoe.errors import InputError, expected
from xcsmoe.model.config import CSMoEConfig
from xcsmoe.model.decoder import Decoder
from xcsmoe.model.encoder import SENSORS, CSMoE
from xcsmoe.model.losses import expert_entropy, masked_mse, nt_xent, patchify, slot_repulsion
from xcsmoe.model.soft_moe import RoutingWeights

LOSS_TERMS = ("uni", "cross", "mim", "repulsion", "entropy")


@dataclass
class PretrainOutput:
    """``loss``: weighted total; ``losses``: every term (and per-sensor parts) detached-free.

    ``pred[k]`` (B, N, P·P·C) for ``k`` in ``s1``, ``s2`` (uni-modal) and ``s2_to_s1``,
    ``s1_to_s2`` (cross-modal); ``mask[s]`` (B, N), 1 = removed from the encoder input;
    ``routing``: every Soft MoE call, S1 path (specific, shared) then S2 path.
    """

    loss: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    pred: dict[str, Tensor] = field(default_factory=dict)
    mask: dict[str, Tensor] = field(default_factory=dict)
    routing: list[RoutingWeights] = field(default_factory=list)


def random_masking(
    x: Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
    *,
    spatial_order: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """MAE masking: (B, N, D) → kept (B, K, D), mask (B, N) (1 = removed), ids_restore (B, N).

    ``spatial_order`` keeps the kept tokens in row-major order (sorted kept indices), as
    they arrive at inference, so ``grouped`` Soft MoE slots average spatial neighbours in
    both; ``False`` keeps them in random order (the original MAE). See docs/pretraining.md.
    """
    b, n, d = x.shape
    keep = max(1, int(n * (1 - ratio)))
    noise = torch.rand(b, n, generator=generator, device="cpu").to(x.device)
    ids_shuffle = noise.argsort(dim=1)
    if spatial_order:
        ids_shuffle = torch.cat(
            [ids_shuffle[:, :keep].sort(dim=1).values, ids_shuffle[:, keep:]], dim=1
        )
    ids_restore = ids_shuffle.argsort(dim=1)
    kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(b, n, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


class CSMoEForPretraining(nn.Module):
    """The encoder (``backbone``, CSMAE naming) plus ``decoder_s1`` / ``decoder_s2`` (each
    reconstructs its sensor from either sensor's features) and the [CLS] ``projector``.

    Total loss = ``weight_uni·uni + weight_cross·cross + weight_mim·mim +
    weight_repulsion·repulsion + weight_entropy·entropy`` (weights in the config; defaults
    1, 1, 1, 0.01, 0.01), where ``uni``/``cross`` sum the S1 and S2 terms.
    """

    def __init__(
        self, config: CSMoEConfig | CSMoE | None = None, *, spatial_order: bool = True
    ) -> None:
        super().__init__()
        self.spatial_order = spatial_order
        backbone = config if isinstance(config, CSMoE) else CSMoE(config)
        self.backbone = backbone
        c = backbone.config
        decoders = {
            sensor: Decoder(
                c.embed_dim,
                c.decoder_dim,
                c.decoder_depth,
                c.decoder_heads,
                patch_size=c.patch_size,
                out_chans=c.in_chans(sensor),
                grid_size=c.grid_size,
                norm_eps=c.norm_eps,
            )
            for sensor in SENSORS
        }
        self.decoder_s1 = decoders["s1"]
        self.decoder_s2 = decoders["s2"]
        self.projector = nn.Sequential(
            nn.Linear(c.embed_dim, c.embed_dim), nn.GELU(), nn.Linear(c.embed_dim, c.proj_dim)
        )

    @property
    def config(self) -> CSMoEConfig:
        return self.backbone.config

    def decoder(self, sensor: str) -> Decoder:
        return self.decoder_s1 if sensor == "s1" else self.decoder_s2

    def encode_masked(
        self, x: Tensor, sensor: str, ratio: float, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor, list[RoutingWeights]]:
        """(B, C, H, W) → features (B, 1 + K, D), mask (B, N), ids_restore (B, N), routing."""
        enc = self.backbone
        tokens, cls = enc.embed(x, sensor)  # (B, N, D), (B, 1, D)
        kept, mask, ids_restore = random_masking(
            tokens, ratio, generator, spatial_order=self.spatial_order
        )
        routes: list[RoutingWeights] = []
        feats = enc.forward_specific(torch.cat([cls, kept], dim=1), sensor, routes)
        return enc.forward_shared(feats, routes), mask, ids_restore, routes

    def forward(
        self,
        s1: Tensor,
        s2: Tensor,
        *,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        has_s1: Tensor | None = None,
        has_s2: Tensor | None = None,
    ) -> PretrainOutput:
        """Paired S1 (B, 2, H, W) and S2 (B, 10, H, W) → :class:`PretrainOutput`.

        ``has_s1`` / ``has_s2`` (B,) bool mark single-sensor samples (default: all paired):
        a sample without sensor ``s`` (its image filled, e.g. with zeros) adds nothing to the
        reconstruction of ``s`` nor to the cross-modal and NT-Xent terms it cannot feed.

        1. embed + independent random masks per sensor (ratio ``config.mask_ratio``);
        2. encode kept tokens: modality-specific then shared layers → (B, 1 + K, D);
        3. decode each sensor from its own features (uni-modal) and from the other sensor's
           (cross-modal) → (B, N, P·P·C);
        4. losses: uni-modal MSE on the sensor's own mask; cross-modal MSE on the mask of the
           *source* sensor (whose features were computed with it); NT-Xent on projected
           [CLS]; slot repulsion and expert entropy over every Soft MoE call.
        """
        enc = self.backbone
        for sensor, x in (("s1", s1), ("s2", s2)):
            enc.check_input(x, sensor)
        if s1.shape[0] != s2.shape[0] or s1.shape[-2:] != s2.shape[-2:]:
            raise InputError(
                expected(
                    "s1/s2",
                    "paired images of equal batch and size",
                    (tuple(s1.shape), tuple(s2.shape)),
                )
            )
        c = self.config
        ratio = c.mask_ratio if mask_ratio is None else mask_ratio
        p = c.patch_size
        grid = (s1.shape[-2] // p, s1.shape[-1] // p)
        images = {"s1": s1, "s2": s2}
        feats, masks, restore, routes_of = {}, {}, {}, {}
        for sensor in SENSORS:
            f, m, r, rt = self.encode_masked(images[sensor], sensor, ratio, generator)
            feats[sensor], masks[sensor], restore[sensor], routes_of[sensor] = f, m, r, rt
        routes = [route for sensor in SENSORS for route in routes_of[sensor]]

        present = _presence(s1.shape[0], s1.device, has_s1, has_s2)
        paired = present["s1"] & present["s2"]
        losses: dict[str, Tensor] = {}
        pred: dict[str, Tensor] = {}
        for target, other in (("s1", "s2"), ("s2", "s1")):
            pixels = patchify(images[target], p)
            decoder = self.decoder(target)
            pred[target] = decoder(feats[target], restore[target], grid)
            pred[f"{other}_to_{target}"] = decoder(feats[other], restore[other], grid)
            own = masks[target] * present[target][:, None].to(masks[target].dtype)
            cross = masks[other] * paired[:, None].to(masks[other].dtype)
            losses[f"uni_{target}"] = masked_mse(pred[target], pixels, own)
            losses[f"cross_{target}"] = masked_mse(pred[f"{other}_to_{target}"], pixels, cross)
        losses["uni"] = losses["uni_s1"] + losses["uni_s2"]
        losses["cross"] = losses["cross_s1"] + losses["cross_s2"]
        z1, z2 = (self.projector(feats[s][:, 0]) for s in SENSORS)
        if bool(paired.all()):
            losses["mim"] = nt_xent(z1, z2, c.temperature)
        elif bool(paired.any()):
            losses["mim"] = nt_xent(z1[paired], z2[paired], c.temperature)
        else:  # keeps the projector in the graph (DDP) with a zero gradient
            losses["mim"] = (z1.sum() + z2.sum()) * 0.0
        zero = s1.new_zeros(())
        used = _routes_of_present_samples(routes_of, present)
        losses["repulsion"] = slot_repulsion(used) if used else zero
        losses["entropy"] = expert_entropy(used) if used else zero
        weights = {
            "uni": c.weight_uni,
            "cross": c.weight_cross,
            "mim": c.weight_mim,
            "repulsion": c.weight_repulsion,
            "entropy": c.weight_entropy,
        }
        total = sum(weights[k] * losses[k] for k in LOSS_TERMS)
        losses["total"] = total
        return PretrainOutput(loss=total, losses=losses, pred=pred, mask=masks, routing=routes)


def _routes_of_present_samples(
    routes_of: dict[str, list[RoutingWeights]], present: dict[str, Tensor]
) -> list[RoutingWeights]:
    """Each sensor path's Soft MoE routing, restricted to the samples that have the sensor
    (an absent sensor's image is a placeholder; its routing must not shape the experts)."""
    used: list[RoutingWeights] = []
    for sensor, routes in routes_of.items():
        keep = present[sensor]
        if bool(keep.all()):
            used.extend(routes)
        elif bool(keep.any()):
            used.extend(
                RoutingWeights(
                    dispatch=route.dispatch[keep],
                    combine=route.combine[keep],
                    slots=route.slots[keep] if route.slots.dim() == 3 else route.slots,
                    num_experts=route.num_experts,
                )
                for route in routes
            )
    return used


def _presence(
    batch: int, device: torch.device, has_s1: Tensor | None, has_s2: Tensor | None
) -> dict[str, Tensor]:
    """(B,) bool per sensor; raises :class:`InputError` for a sample with neither sensor."""
    present = {}
    for sensor, flags in (("s1", has_s1), ("s2", has_s2)):
        if flags is None:
            present[sensor] = torch.ones(batch, dtype=torch.bool, device=device)
            continue
        if not isinstance(flags, Tensor) or flags.shape != (batch,):
            got = tuple(flags.shape) if isinstance(flags, Tensor) else type(flags).__name__
            raise InputError(expected(f"has_{sensor}", f"a ({batch},) bool tensor", got))
        present[sensor] = flags.to(device=device, dtype=torch.bool)
    if not bool((present["s1"] | present["s2"]).all()):
        raise InputError(
            expected("has_s1/has_s2", "at least one sensor per sample", "a sample with none")
        )
    return present
