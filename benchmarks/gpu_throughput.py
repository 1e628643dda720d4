"""GPU throughput of OverLoCK-XT and -T (ours, CUDA ContMix kernel) against transformers' ConvNeXt-T.

    python benchmarks/gpu_throughput.py [--batch 128] [--steps 6] [--output benchmarks/RESULTS_gpu.md]

Per model and precision (float32, bf16 autocast): eval-mode inference (re-parameterized, BatchNorms folded,
kernelized) and a training step (train mode, labels, aux loss for OverLoCK, forward + backward + AdamW), images
per second over `--steps` timed steps after two warm-ups, CUDA-synchronized. Random weights; the CUDA kernel is
built in `.kernel-build/` (`overlock-hf build-kernel .kernel-build --backend cuda`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import ConvNextConfig, ConvNextForImageClassification

from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification, fuse_for_inference, kernelize

KERNEL_DIR = Path(__file__).resolve().parents[1] / ".kernel-build"


def build(name: str, training: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "ConvNeXt-T":
        config = ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], num_labels=1000)
        return ConvNextForImageClassification(config).cuda().train(training)
    model = OverLoCKForImageClassification(OverLoCKConfig.from_variant(name, num_labels=1000)).cuda()
    if not training:
        fuse_for_inference(model)
    kernelize(model, KERNEL_DIR, mode="training" if training else "inference", device="cuda")
    return model.train(training)


def images_per_second(model, batch: int, training: bool, bf16: bool, steps: int) -> float:
    pixels = torch.randn(batch, 3, 224, 224, device="cuda")
    labels = torch.randint(0, 1000, (batch,), device="cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if training else None

    def step():
        with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            if training:
                optimizer.zero_grad(set_to_none=True)
                model(pixel_values=pixels, labels=labels).loss.backward()
                optimizer.step()
            else:
                with torch.inference_mode():
                    model(pixel_values=pixels)

    step(), step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    rows, results = [], {}
    for training in (False, True):
        for name in ("ConvNeXt-T", "overlock-xt", "overlock-t"):
            model = build(name, training)
            for bf16 in (False, True):
                results[name, training, bf16] = images_per_second(model, args.batch, training, bf16, args.steps)
            del model
            torch.cuda.empty_cache()
    for (name, training, bf16), value in results.items():
        baseline = results["ConvNeXt-T", training, bf16]
        rows.append(f"| {name} | {'train step' if training else 'inference'} | {'bf16' if bf16 else 'fp32'} | "
                    f"{value:.0f} | {value / baseline:.2f}x |")
    report = "\n".join([
        "# GPU throughput (images / s)", "",
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch} at 224x224, "
        f"{args.steps} timed steps. Produced by `benchmarks/gpu_check.sh`.", "",
        "| model | pass | precision | images / s | vs ConvNeXt-T |", "|---|---|---|---:|---:|", *rows]) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report)


if __name__ == "__main__":
    main()
