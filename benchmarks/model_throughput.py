"""Whole-model CPU inference throughput, in one run: OverLoCK-XT (PyTorch ContMix, re-parameterized or not,
and with the fused ContMix kernel) against transformers' ConvNeXt-T.

    python benchmarks/model_throughput.py [--batch 8] [--size 224] [--repeats 3] [--threads N] [--output FILE]

Random weights (speed does not depend on them). Each model runs `--repeats` timed forward passes after one
warm-up, in eval mode under `torch.inference_mode()`; the table reports the median time per batch, images per
second and the ratio to ConvNeXt-T. The fused kernel is built (or reused) in `.kernel-build/`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import ConvNextConfig, ConvNextForImageClassification

from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification, kernelize
from overlock_hf.kernel_builder import build_kernel

REPO_ROOT = Path(__file__).resolve().parents[1]


def time_forward(model: torch.nn.Module, pixels: torch.Tensor, repeats: int) -> float:
    """Median seconds per forward pass (after one warm-up pass)."""
    with torch.inference_mode():
        model(pixels)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(pixels)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_models(kernel_dir: Path) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    overlock = OverLoCKForImageClassification(OverLoCKConfig.from_variant("overlock-xt", num_labels=1000)).eval()
    reparam = OverLoCKForImageClassification(OverLoCKConfig.from_variant("overlock-xt", num_labels=1000)).eval()
    reparam.load_state_dict(overlock.state_dict())
    reparam.reparameterize()
    fused = OverLoCKForImageClassification(OverLoCKConfig.from_variant("overlock-xt", num_labels=1000)).eval()
    fused.load_state_dict(overlock.state_dict())
    fused.reparameterize()
    kernelize(fused, kernel_dir, mode="inference")
    convnext = ConvNextForImageClassification(
        ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], num_labels=1000)
    ).eval()
    return {
        "ConvNeXt-T (transformers)": convnext,
        "OverLoCK-XT, PyTorch ContMix": overlock,
        "OverLoCK-XT reparam, PyTorch ContMix": reparam,
        "OverLoCK-XT reparam, fused ContMix kernel": fused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    kernel_dir = REPO_ROOT / ".kernel-build"
    build_kernel(kernel_dir, backends=["cpu"])
    models = build_models(kernel_dir)
    pixels = torch.randn(args.batch, 3, args.size, args.size)
    seconds = {name: time_forward(model, pixels, args.repeats) for name, model in models.items()}
    baseline = seconds["ConvNeXt-T (transformers)"]
    params = {name: sum(p.numel() for p in model.parameters()) / 1e6 for name, model in models.items()}

    lines = [
        "# Whole-model CPU inference throughput",
        "",
        f"Machine: {platform.machine()}, {args.threads} torch threads, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.1f} at start. Batch {args.batch} at {args.size}x{args.size}, float32, "
        f"median of {args.repeats}. Produced by `python benchmarks/model_throughput.py`.",
        "",
        "| model | params (M) | ms / batch | images / s | time vs ConvNeXt-T |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, secs in seconds.items():
        lines.append(f"| {name} | {params[name]:.2f} | {secs * 1e3:.0f} | {args.batch / secs:.1f} | "
                     f"{secs / baseline:.2f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
