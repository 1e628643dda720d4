"""Helpers shared by the transformers-integration tests: a small configuration, a converted tiny folder, images."""

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


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """`max|ours - reference| / max|reference|`."""
    return float((ours.float() - reference.float()).abs().max() / reference.float().abs().max())
