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

The ratio is evaluation images/s over bare images/s; the target is >= 85% with 2 workers on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
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


def bare_images_per_second(model: torch.nn.Module, batch_size: int, repeats: int = 5) -> float:
    """Images per second of the forward pass alone on a batch in memory (median of `repeats`, one warm-up)."""
    pixels = torch.randn(batch_size, 3, 224, 224)
    with torch.inference_mode():
        model(pixel_values=pixels)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(pixel_values=pixels)
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def evaluation_images_per_second(model, folder: Path, image_size, args) -> tuple[float, str]:
    """Images per second of `run` over `folder` (preparation excluded), and the preprocessing used."""
    plan = prepare(model, folder, "imagenet", image_size=image_size)
    start = time.perf_counter()
    result = run(plan, batch_size=args.batch_size, num_workers=args.num_workers, device="cpu", progress=False)
    elapsed = time.perf_counter() - start
    return result["num_images"] / elapsed, result["preprocessing"].split(" (")[0]


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
                before = bare_images_per_second(model, args.batch_size)
                evaluated, how = evaluation_images_per_second(model, folder, image_size, args)
                bare = (before + bare_images_per_second(model, args.batch_size)) / 2
                rows.append(f"| {name} | {how} | {bare:.1f} | {evaluated:.1f} | {100 * evaluated / bare:.0f}% |")
    lines = [
        "# Evaluation throughput vs bare forward",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average "
        f"{load:.1f} at start), torch {torch.__version__}, {args.threads} torch threads, "
        f"{args.num_workers} DataLoader workers, batch {args.batch_size}, {args.num_images} JPEGs of 500x375, "
        "float32. Produced by `python benchmarks/evaluation_throughput.py`.",
        "",
        "| model | preprocessing | bare forward (img/s) | evaluation (img/s) | evaluation / bare |",
        "|---|---|---:|---:|---:|",
        *rows,
    ]
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
