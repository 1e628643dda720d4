#!/usr/bin/env python
"""Time `overlock-hf convert` on full-size checkpoints of all eight layouts and print the worst logit difference.

    python conversion/full_size_report.py [VARIANT_LAYOUT ...]     (default: all eight, e.g. overlock_t-plain)

The checkpoints are those of `tests/test_conversion_full_size.py` (random weights with realistic scales, the same
storage per layout). For each: the wall time of `python -m overlock_hf.cli convert` in a fresh process (imports
included, as a user runs it), and `max|converted - load_official_model| / max|logits|` over a 224 x 224 and a
192 x 256 input, in float32 (what users run: float rounding of two separately loaded copies) and in float64
(both models converted after loading: what the tests check, the conversion's own error). Prints a Markdown table.
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


def measure(case, root: Path) -> tuple[float, list[float] | str]:
    """Wall time of the conversion and the worst relative logit difference in float32 and in float64 (or the
    converter's error line)."""
    variant, layout, dtype, wrapper, prefix, suffix = case
    checkpoint = root / f"{variant}-{layout}{suffix}"
    save_checkpoint(stored(random_official_state_dict(variant, layout), dtype, wrapper, prefix), checkpoint)
    folder = root / f"{variant}-{layout}"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "overlock_hf.cli", "convert", str(checkpoint), str(folder)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        return seconds, done.stderr.strip().splitlines()[-1]
    official = load_official_model(checkpoint)
    converted = AutoModelForImageClassification.from_pretrained(folder).eval()
    worst = []
    for compute in (torch.float32, torch.float64):
        official, converted = official.to(compute), converted.to(compute)
        generator = torch.Generator().manual_seed(1)
        figure = 0.0
        for height, width in SIZES:
            pixels = torch.randn(1, 3, height, width, generator=generator, dtype=compute)
            with torch.no_grad():
                expected, got = official(pixels).logits, converted(pixel_values=pixels).logits
            figure = max(figure, float((expected - got).abs().max() / expected.abs().max()))
        worst.append(figure)
    return seconds, worst


def main(selected: list[str]) -> None:
    cases = [tuple(case.values if hasattr(case, "values") else case) for case in CASES]
    cases = [case for case in cases if not selected or f"{case[0]}-{case[1]}" in selected]
    print("| layout | stored as | convert wall time (s) | worst max\\|diff\\| / max\\|logits\\|, float32 | float64 |")
    print("|---|---|---|---|---|")
    for case in cases:
        with tempfile.TemporaryDirectory() as root:
            seconds, worst = measure(case, Path(root))
        variant, layout, dtype, wrapper, prefix, suffix = case
        storage = f"{str(dtype).split('.')[-1]}, {wrapper or 'bare'}, {'module.' if prefix else 'no prefix'}, {suffix}"
        figure = " | ".join(f"{w:.1e}" for w in worst) if isinstance(worst, list) else f"refused: {worst} | -"
        print(f"| {variant} {layout} | {storage} | {seconds:.1f} | {figure} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
