"""Forward throughput of csmoe_p16 vs a dense ViT-L/16 (Prithvi-300M class) and vs CSMAE.

All models encode S2 images (10 bands): csmoe_p16 and ViT-L/16 at 224 px, csmae_p15 at its
native 120 px. Ratios are measured in one run, on the same device, with random weights.

* CPU (always): float32, ``torch.inference_mode``, a small batch, a few rounds.
* CUDA (when available): bf16 autocast, larger batch, plus model FLOP utilisation
  (torch FlopCounterMode FLOPs per image × images/s ÷ the GPU's dense bf16 peak).

    python benchmarks/forward_throughput.py [--threads 2] [--batch 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--batch", type=int, default=4, help="CPU batch size")
    parser.add_argument("--rounds", type=int, default=5, help="timed CPU rounds")
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--gpu-rounds", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run("cpu", args.batch, args.rounds)
    if torch.cuda.is_available():
        run("cuda", args.gpu_batch, args.gpu_rounds)
    else:
        print("\n(no CUDA device: bf16 / MFU measurement skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
