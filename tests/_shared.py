"""Helpers shared by the tests: a small configuration, a converted tiny folder, images, the relative error, and
the one table of bad ContMix inputs that the reference and the fused kernel must both reject."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import fixture_path
from overlock_hf import OverLoCKConfig
from overlock_hf.conversion import convert_checkpoint

# The architecture of the tiny fixture checkpoint (10 classes): builds and runs in well under a second on a CPU.
TINY_CONFIG_KWARGS = dict(
    depths=[1, 1, 1, 1],
    focus_depths=[2, 2],
    hidden_sizes=[16, 32, 64, 96],
    kernel_sizes=[9, 7, 7, 5],
    focus_num_heads=[2, 3],
    projection_dim=128,
    num_labels=10,
)


def tiny_config(**overrides) -> OverLoCKConfig:
    """`OverLoCKConfig` of the tiny architecture; keyword arguments override fields."""
    return OverLoCKConfig(**{**TINY_CONFIG_KWARGS, **overrides})


@functools.cache
def converted_tiny_folder() -> Path:
    """The tiny fixture checkpoint converted once per test session (`overlock-hf convert`); treat it as read-only."""
    root = Path(tempfile.mkdtemp(prefix="overlock-hf-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return convert_checkpoint(fixture_path("tiny_official.pth"), root / "overlock-tiny")


def random_images(count: int, seed: int = 0, sizes=((100, 130), (120, 90))) -> list[Image.Image]:
    """`count` random RGB PIL images, cycling through the (height, width) `sizes`."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8)) for i in range(count)
    ]


def relative_error(ours: torch.Tensor, reference: torch.Tensor, floor: float = 0.0) -> float:
    """`max|ours - reference| / max(floor, max|reference|)` in float64 (`floor=1`: an absolute error for small
    references, as the ContMix tests use)."""
    ours, reference = ours.detach().double(), reference.detach().double()
    return float((ours - reference).abs().max() / max(floor, float(reference.abs().max())))


def rel_err(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """The ContMix tests' error: `max|ours - reference| / max(1, max|reference|)`."""
    return relative_error(ours, reference, floor=1.0)


def grouped(t: torch.Tensor) -> torch.Tensor:
    """(B, G, H, W, C) fixture layout -> (B, G, C, H, W) ContMix op layout."""
    return t.permute(0, 1, 4, 2, 3).contiguous()


# Bad ContMix inputs: (case id, change to the valid inputs of `contmix_bad_inputs`, error, message). Run against
# the reference (tests/test_contmix_reference.py) and the fused kernel (tests/test_contmix_kernel.py); where
# their wording differs the message lists both.
CONTMIX_BAD_INPUTS = [
    ("even-k", dict(k=4), ValueError, "kernel_size must be an odd integer >= 3, got 4"),
    ("k-1", dict(k=1), ValueError, "kernel_size must be an odd integer >= 3, got 1"),
    ("map-smaller-than-kernel", dict(h=4), ValueError, "at least 5x5 for kernel_size=5, got 4x7"),
    ("logits-taps", dict(logits_shape=(1, 2, 6, 7, 24)), ValueError, r"logits must be \(B, G, H, W, K\*K\)"),
    ("rpb-size", dict(rpb_shape=(2, 7, 9)), ValueError, r"rpb must be \(G, 2K-1, 2K-1\) = \(2, 9, 9\)"),
    ("rpb-groups", dict(rpb_shape=(3, 9, 9)), ValueError, r"rpb must be .*got \(3, 9, 9\)"),
    ("integer-value", dict(value_dtype=torch.int32), TypeError,
     "value must be (a floating-point tensor|float32, float64, float16 or bfloat16), got torch.int32"),
    ("two-devices", dict(value_device="meta"), ValueError, "inputs must be on one device"),
]


def contmix_bad_inputs(change: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """`(logits (1, 2, H, 7, K*K), rpb (2, 2K-1, 2K-1), value (1, 2, 3, H, 7), K)`, valid for K=5, H=6 unless
    `change` (a `CONTMIX_BAD_INPUTS` entry) says otherwise."""
    k, h = change.get("k", 5), change.get("h", 6)
    logits = torch.randn(change.get("logits_shape", (1, 2, h, 7, k * k)))
    rpb = torch.randn(change.get("rpb_shape", (2, 2 * k - 1, 2 * k - 1)))
    value = torch.randn(1, 2, 3, h, 7).to(change.get("value_dtype", torch.float32))
    return logits, rpb, value.to(change.get("value_device", "cpu")), k
