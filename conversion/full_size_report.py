#!/usr/bin/env python
"""Time `overlock-hf convert` on full-size checkpoints of all eight layouts and print the worst logit difference.

    python conversion/full_size_report.py [VARIANT_LAYOUT ...]     (default: all eight, e.g. overlock_t-plain)

The checkpoints are those of `tests/test_conversion_full_size.py` (random weights with realistic scales, the same
storage per layout). For each: the wall time of `python -m overlock_hf.cli convert` in a fresh process (imports
included, as a user runs it), and `max|converted - load_official_model| / max|logits|` over a 224 x 224 and a
192 x 256 input. Prints a Markdown table.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from _full_size import random_official_state_dict, save_checkpoint, stored  # noqa: E402
from test_conversion_full_size import CASES, SIZES  # noqa: E402
from transformers import AutoModelForImageClassification  # noqa: E402

from overlock_hf.conversion import load_official_model  # noqa: E402


def measure(case, root: Path) -> tuple[float, float]:
    variant, layout, dtype, wrapper, prefix, suffix = case
    checkpoint = root / f"{variant}-{layout}{suffix}"
    save_checkpoint(stored(random_official_state_dict(variant, layout), dtype, wrapper, prefix), checkpoint)
    folder = root / f"{variant}-{layout}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "overlock_hf.cli", "convert", str(checkpoint), str(folder)],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    official = load_official_model(checkpoint)
    converted = AutoModelForImageClassification.from_pretrained(folder).eval()
    worst = 0.0
    generator = torch.Generator().manual_seed(1)
    for height, width in SIZES:
        pixels = torch.randn(1, 3, height, width, generator=generator)
        with torch.no_grad():
            expected, got = official(pixels).logits, converted(pixel_values=pixels).logits
        worst = max(worst, float((expected - got).abs().max() / expected.abs().max()))
    return seconds, worst


def main(selected: list[str]) -> None:
    cases = [tuple(case.values if hasattr(case, "values") else case) for case in CASES]
    cases = [case for case in cases if not selected or f"{case[0]}-{case[1]}" in selected]
    print("| layout | stored as | convert wall time (s) | worst max\\|diff\\| / max\\|logits\\| |")
    print("|---|---|---|---|")
    for case in cases:
        with tempfile.TemporaryDirectory() as root:
            seconds, worst = measure(case, Path(root))
        variant, layout, dtype, wrapper, prefix, suffix = case
        storage = f"{str(dtype).split('.')[-1]}, {wrapper or 'bare'}, {'module.' if prefix else 'no prefix'}, {suffix}"
        print(f"| {variant} {layout} | {storage} | {seconds:.1f} | {worst:.1e} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
