"""Forward throughput of csmoe_p16 vs a dense ViT-L/16 (Prithvi-300M class) and vs CSMAE.

All models encode S2 images (10 bands): csmoe_p16 and ViT-L/16 at 224 px, csmae_p15 at its
native 120 px. Ratios are measured in one run, on the same device, with random weights.

* CPU (always): float32, ``torch.inference_mode``, a small batch and a few iterations.
* CUDA (when available): bf16 autocast, larger batch, plus model FLOP utilisation
  (torch FlopCounterMode FLOPs per image × images/s ÷ the GPU's dense bf16 peak).

    python benchmarks/forward_throughput.py [--threads 2] [--batch 4] [--iters 3]
"""

from __future__ import annotations

import argparse
import contextlib
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


def images_per_second(
    model: torch.nn.Module,
    forward: Callable,
    size: int,
    batch: int,
    iters: int,
    device: str,
    autocast: contextlib.AbstractContextManager,
) -> float:
    x = torch.randn(batch, 10, size, size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode(), autocast:
        forward(model, x)  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            forward(model, x)
        sync()
    return batch * iters / (time.perf_counter() - start)


def run(device: str, batch: int, iters: int) -> None:
    names = ("csmoe_p16", "vit_large_patch16_224", "csmae_p15")
    bf16 = device == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    peak = None
    if bf16:
        gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
        print(f"\n== CUDA: {gpu}, bf16 autocast, batch {batch}, {iters} iterations ==")
    else:
        print(
            f"\n== CPU: float32, {torch.get_num_threads()} threads, batch {batch}, {iters} iterations =="
        )
    rows = {}
    for name in names:
        torch.manual_seed(0)
        with torch.device("cpu"):
            model, size, forward = build(name)
        model = model.eval().to(device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        flops = torch_flops(model, forward, size, device)
        ips = images_per_second(model, forward, size, batch, iters, device, autocast)
        rows[name] = (size, params, flops / 1e9, ips)
        del model
    ref = rows["csmoe_p16"][3]
    print(
        f"{'model':<22} {'img':>4} {'params M':>9} {'GFLOPs':>8} {'img/s':>9} {'p16 speed-up':>13}"
        + (f" {'MFU %':>6}" if peak else "")
    )
    for name, (size, params, gflops, ips) in rows.items():
        line = f"{name:<22} {size:>4} {params:>9.1f} {gflops:>8.2f} {ips:>9.2f} {ref / ips:>12.2f}x"
        if peak:
            line += f" {100 * gflops * ips / (peak * 1e3):>6.1f}"
        print(line)
    p16 = model_figures("csmoe_p16")
    print(
        f"csmoe_p16 paper-convention figures: {p16.params_m:.1f} M params, {p16.gmacs:.2f} GMACs, "
        f"C2C {p16.c2c:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--batch", type=int, default=4, help="CPU batch size")
    parser.add_argument("--iters", type=int, default=3, help="timed CPU iterations")
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--gpu-iters", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run("cpu", args.batch, args.iters)
    if torch.cuda.is_available():
        run("cuda", args.gpu_batch, args.gpu_iters)
    else:
        print("\n(no CUDA device: bf16 / MFU measurement skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
