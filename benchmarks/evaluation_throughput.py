"""Evaluation throughput against the bare model forward pass at the same batch size: is data loading the
bottleneck of `overlock-hf evaluate`?

    python benchmarks/evaluation_throughput.py [--num-workers 2] [--batch-size 16] [--num-images 128]
        [--threads 2] [--output benchmarks/RESULTS_evaluation.md]

Random weights (speed does not depend on them), an image folder of ImageNet-sized JPEGs (500x375 and 375x500,
quality 90, smooth random content) in 8 wnid classes. For each model:

- *bare forward*: median seconds per forward pass of a (B, 3, 224, 224) batch already in memory (after one
  warm-up pass), as images per second, measured right before and right after each evaluation (the mean);
- *evaluation*: `overlock_hf.analysis.evaluation.run` over the folder (decoding, preprocessing in `--num-workers`
  DataLoader workers, normalization, forward, top-k), wall time from the first batch requested to the last
  counted (model loading and the folder scan excluded), with the model's image processor and with the built-in
  center-crop transform (`--image-size 224`).

The ratio is evaluation images/s over bare images/s; the target is >= 85% with 2 workers on 2 CPU cores. On a
machine shared with other jobs wall-clock rates drift, so the table also gives CPU seconds per image (the forward
pass alone; the evaluation's main process plus its workers): their ratio is the share of the evaluation's work
that is the forward pass, what the wall-clock ratio becomes on an otherwise idle machine when the CPU is the
limit.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessorPil

from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification
from overlock_hf.analysis.evaluation import prepare, run
from overlock_hf.analysis.labels import imagenet_wnids
from overlock_hf.image_processing_overlock import save_image_processor


def make_images(root: Path, count: int) -> Path:
    """`count` ImageNet-sized JPEGs (bilinearly upsampled 16x12 noise: compressible like photos) in 8 classes."""
    rng = np.random.default_rng(0)
    for index in range(count):
        size = (500, 375) if index % 3 else (375, 500)
        small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        image = small.resize(size, Image.BILINEAR)
        folder = root / imagenet_wnids()[index % 8 * 100]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"img_{index:05d}.JPEG", quality=90)
    return root


def build_models(root: Path) -> dict[str, Path]:
    """OverLoCK-XT (with its converted-folder processor) and ConvNeXt-T (ConvNext processor), saved in `root`."""
    torch.manual_seed(0)
    overlock = OverLoCKForImageClassification(OverLoCKConfig.from_variant("overlock-xt", num_labels=1000))
    overlock.save_pretrained(root / "overlock-xt")
    save_image_processor(root / "overlock-xt", crop_pct=0.925)
    convnext = ConvNextForImageClassification(
        ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], num_labels=1000))
    convnext.save_pretrained(root / "convnext-t")
    ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.875).save_pretrained(root / "convnext-t")
    return {"OverLoCK-XT (PyTorch ContMix)": root / "overlock-xt", "ConvNeXt-T (transformers)": root / "convnext-t"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bare_forward(model: torch.nn.Module, batch_size: int, repeats: int = 5) -> tuple[float, float]:
    """(images per second, CPU seconds per image) of the forward pass alone on a batch in memory (median time of
    `repeats` passes after one warm-up; CPU time of this process over all of them)."""
    pixels = torch.randn(batch_size, 3, 224, 224)
    with torch.inference_mode():
        model(pixel_values=pixels)
        times, cpu = [], time.process_time()
        for _ in range(repeats):
            start = time.perf_counter()
            model(pixel_values=pixels)
            times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
    return batch_size / statistics.median(times), cpu / (batch_size * repeats)


def evaluation(model, folder: Path, image_size, args) -> tuple[float, float, str]:
    """(images per second, CPU seconds per image of this process and its DataLoader workers, preprocessing) of
    `run` over `folder` (preparation excluded)."""
    plan = prepare(model, folder, "imagenet", image_size=image_size)
    start, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    result = run(plan, batch_size=args.batch_size, num_workers=args.num_workers, device="cpu", progress=False)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu + _children_cpu() - children  # workers are joined when the loader ends
    images = result["num_images"]
    return images / elapsed, cpu / images, result["preprocessing"].split(" (")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-images", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    parser.add_argument("--output", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = make_images(Path(scratch) / "images", args.num_images)
        for name, path in build_models(Path(scratch) / "models").items():
            model = (OverLoCKForImageClassification if "overlock" in path.name else
                     ConvNextForImageClassification).from_pretrained(path).eval()
            for image_size in (None, 224):  # bare forward measured before and after: the machine may be shared
                before = bare_forward(model, args.batch_size)
                speed, cpu, how = evaluation(model, folder, image_size, args)
                after = bare_forward(model, args.batch_size)
                bare_speed, bare_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
                rows.append(f"| {name} | {how} | {bare_speed:.2f} | {speed:.2f} | {100 * speed / bare_speed:.0f}% | "
                            f"{1000 * bare_cpu:.0f} | {1000 * cpu:.0f} | {100 * bare_cpu / cpu:.0f}% |")
    lines = [
        "# Evaluation throughput vs bare forward",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average "
        f"{load:.1f} at start), torch {torch.__version__}, {args.threads} torch threads, "
        f"{args.num_workers} DataLoader workers, batch {args.batch_size}, {args.num_images} JPEGs of 500x375, "
        "float32. Produced by `python benchmarks/evaluation_throughput.py`.",
        "",
        "| model | preprocessing | bare forward (img/s) | evaluation (img/s) | evaluation / bare | "
        "bare CPU ms/img | evaluation CPU ms/img | bare / evaluation CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
