"""Forward throughput of csmoe_p16 vs a dense ViT-L/16 (Prithvi-300M class) and vs CSMAE,
and of csmoe_p16 at each compute precision (float32, bf16 autocast, torch.compile).

All models encode S2 images (10 bands): csmoe_p16 and ViT-L/16 at 224 px, csmae_p15 at its
native 120 px. Ratios are measured in one run, on the same device, with random weights.

* CPU (always): float32, ``torch.inference_mode``, a small batch, a few rounds.
* CUDA (when available): bf16 autocast, larger batch, plus model FLOP utilisation
  (torch FlopCounterMode FLOPs per image × images/s ÷ the GPU's dense bf16 peak).
* Precision table (CPU always, CUDA when available): images/s of float32, bf16 autocast
  and both through ``torch.compile``, timed round-robin in one run, each with the lowest
  [CLS] and token cosine to float32 on the six real S1+S2 sample pairs
  (:func:`xcsmoe.embedding.accuracy.sample_agreement`, 112-px windows).
  ``--precision-weights runs/pretrain-sample/encoder.safetensors --precision-model
  csmoe_tiny`` measures trained weights instead of random ones.

    python benchmarks/forward_throughput.py [--threads 2] [--batch 4] [--rounds 5]
        [--precision-only] [--precision-batch 8] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from xcsmoe.model.figures import model_figures
from xcsmoe.model.registry import create_model

# dense bf16 tensor-core peak, TFLOP/s (vendor data sheets, SXM parts)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def build(
    name: str,
) -> tuple[torch.nn.Module, int, Callable[[torch.nn.Module, torch.Tensor], object]]:
    """(model, image size, forward) for a benchmark entry."""
    if name == "vit_large_patch16_224":
        import timm

        model = timm.create_model(name, pretrained=False, in_chans=10, num_classes=0)
        return model, 224, lambda m, x: m.forward_features(x)
    model = create_model(name)
    return model, model.config.img_size, lambda m, x: m.forward_features(s2=x)


def torch_flops(model: torch.nn.Module, forward: Callable, size: int, device: str) -> int:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        forward(model, torch.zeros(1, 10, size, size, device=device))
    return counter.get_total_flops()


def batch_seconds(
    model: torch.nn.Module,
    forward: Callable,
    x: torch.Tensor,
    autocast: contextlib.AbstractContextManager,
) -> float:
    """Wall time of one forward of batch ``x``."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.inference_mode(), autocast:
        sync()
        start = time.perf_counter()
        forward(model, x)
        sync()
    return time.perf_counter() - start


def run(device: str, batch: int, rounds: int) -> None:
    """Time the models round-robin (one batch each per round, order rotated) and report the
    median images/s, so load from other processes affects every model alike."""
    names = ("csmoe_p16", "vit_large_patch16_224", "csmae_p15")
    bf16 = device == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    peak = None
    if bf16:
        gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
        print(f"\n== CUDA: {gpu}, bf16 autocast, batch {batch}, {rounds} rounds ==")
    else:
        threads = torch.get_num_threads()
        print(f"\n== CPU: float32, {threads} threads, batch {batch}, {rounds} rounds ==")
    entries = {}
    for name in names:
        torch.manual_seed(0)
        with torch.device("cpu"):
            model, size, forward = build(name)
        model = model.eval().to(device)
        x = torch.randn(batch, 10, size, size, device=device)
        entries[name] = (model, forward, x, torch_flops(model, forward, size, device))
        batch_seconds(model, forward, x, autocast)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            model, forward, x, _ = entries[name]
            times[name].append(batch_seconds(model, forward, x, autocast))
    ips = {name: batch / statistics.median(t) for name, t in times.items()}
    header = (
        f"{'model':<22} {'img':>4} {'params M':>9} {'GFLOPs':>8} {'img/s':>9} {'p16 speed-up':>13}"
    )
    print(header + (f" {'MFU %':>6}" if peak else ""))
    for name, (model, _, x, flops) in entries.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        gflops = flops / 1e9
        line = (
            f"{name:<22} {x.shape[-1]:>4} {params:>9.1f} {gflops:>8.2f} {ips[name]:>9.2f} "
            f"{ips['csmoe_p16'] / ips[name]:>12.2f}x"
        )
        if peak:
            line += f" {100 * gflops * ips[name] / (peak * 1e3):>6.1f}"
        print(line)
    p16 = model_figures("csmoe_p16")
    print(
        "params M: all parameters of the module (both sensor paths for CSMoE/CSMAE); GFLOPs: "
        "torch FlopCounterMode per S2 image on this device "
        "(fused CPU attention kernels are not registered with it, so attention is excluded here)"
    )
    print(
        f"csmoe_p16 paper-convention figures (S2 path): {p16.params_m:.1f} M params, "
        f"{p16.gmacs:.2f} GMACs, C2C {p16.c2c:.1f}"
    )


@dataclass(frozen=True)
class Mode:
    """One way to run the encoder: compute precision and whether it is compiled."""

    dtype: str
    compile: bool

    @property
    def label(self) -> str:
        return f"{self.dtype}{' compiled' if self.compile else ''}"


def run_precision(
    device: str, *, model: str, weights: str, batch: int, rounds: int, compile: bool
) -> None:
    """Images/s of ``model`` per :class:`Mode` (S2, img_size px, round-robin medians) and
    each mode's lowest cosine to float32 on the real sample pairs (accuracy on the CPU)."""
    from xcsmoe.embedding.accuracy import sample_agreement
    from xcsmoe.embedding.precision import compute_precision, resolve_dtype
    from xcsmoe.embedding.runtime import cached_model, model_spec

    target = torch.device(device)
    modes = [Mode("float32", False), Mode("bfloat16", False)]
    if compile:
        modes += [Mode("float32", True), Mode("bfloat16", True)]
    spec = model_spec(model, weights)
    networks = {m: cached_model(spec, target, dtype=m.dtype, compile=m.compile) for m in modes}
    size = networks[modes[0]].config.img_size
    x = torch.randn(batch, 10, size, size, device=target)
    sync = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)

    def seconds(mode: Mode) -> float:
        with torch.inference_mode(), compute_precision(mode.dtype, target):
            sync()
            start = time.perf_counter()
            networks[mode].forward_features(s2=x)
            sync()
        return time.perf_counter() - start

    first = {m: seconds(m) for m in modes}  # compile and warm-up
    times: dict[Mode, list[float]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
            times[mode].append(seconds(mode))
    ips = {m: batch / statistics.median(t) for m, t in times.items()}
    auto = resolve_dtype("auto", target)
    print(
        f"\n== {device.upper()} precision: {model} ({weights}), S2 {size} px, batch {batch}, "
        f"{torch.get_num_threads()} threads, {rounds} rounds; dtype='auto' here = {auto} =="
    )
    print(
        f"{'mode':<20} {'img/s':>8} {'vs fp32':>8} {'first s':>8} "
        f"{'min [CLS] cos':>14} {'min token cos':>14} {'S1->S2 tau':>11}"
    )
    base = ips[modes[0]]
    for mode in modes:
        if mode == modes[0]:
            cls_cos = tok_cos = tau = "1 (ref)"
        else:
            agreement = sample_agreement(
                model=model, weights=weights, window=112, dtype=mode.dtype,
                compile=mode.compile, device=device,
            )  # fmt: skip
            cls_cos = f"{agreement.min_cls_cosine:.6f}"
            tok_cos = f"{agreement.min_token_cosine:.6f}"
            tau = f"{agreement.kendall_tau:.4f}"
        print(
            f"{mode.label:<20} {ips[mode]:>8.2f} {ips[mode] / base:>7.2f}x {first[mode]:>8.1f} "
            f"{cls_cos:>14} {tok_cos:>14} {tau:>11}"
        )
    print(
        "cosines: every [CLS] / token vector of the 6 real BigEarthNet S1+S2 pairs (112-px "
        f"windows, {device}) against float32 on {device}; tau: mean Kendall tau of S1->S2 [CLS] retrieval scores"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--batch", type=int, default=4, help="CPU batch size")
    parser.add_argument("--rounds", type=int, default=5, help="timed CPU rounds")
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--gpu-rounds", type=int, default=20)
    parser.add_argument("--precision-only", action="store_true", help="only the precision table")
    parser.add_argument("--precision-model", default="csmoe_p16")
    parser.add_argument("--precision-weights", default="random", help='checkpoint or "random"')
    parser.add_argument("--precision-batch", type=int, default=8, help="CPU batch of the table")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.precision_only:
        run("cpu", args.batch, args.rounds)
    precision = dict(
        model=args.precision_model, weights=args.precision_weights, compile=args.compile
    )
    run_precision("cpu", batch=args.precision_batch, rounds=args.rounds, **precision)
    if torch.cuda.is_available():
        if not args.precision_only:
            run("cuda", args.gpu_batch, args.gpu_rounds)
        run_precision("cuda", batch=args.gpu_batch, rounds=args.gpu_rounds, **precision)
    else:
        print("\n(no CUDA device: bf16 / MFU measurement skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
