"""Helpers of the evaluation tests: tiny OverLoCK models (1000 ImageNet classes, or 10 custom labels) converted
from the fixture checkpoint, and image sets whose labels are placed from the model's own predictions, so that
top-1 / top-5 are known exactly."""

from __future__ import annotations

import functools
import atexit
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor

from _shared import converted_tiny_folder
from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification
from overlock_hf.configuration_overlock import imagenet1k_id2label
from overlock_hf.analysis.labels import imagenet_wnids, subset_indices

CUSTOM_LABELS = ["apple", "bee", "car", "dog", "egg", "fern", "goat", "hat", "ink", "jar"]
NUM_IMAGES = 10  # kinds i % 3: 0 -> top-1 right (4 images), 1 -> 3rd guess (3), 2 -> outside the top 5 (3)
EXPECTED_TOP1, EXPECTED_TOP5 = 100.0 * 4 / 10, 100.0 * 7 / 10


def _scratch(name: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"overlock-eval-{name}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def tiny_model_folder(num_labels: int = 1000) -> Path:
    """The converted tiny checkpoint with a seeded random head of 1000 ImageNet classes (or the 10 custom
    labels), saved with the converted folder's `preprocessor_config.json`."""
    tiny = converted_tiny_folder()
    config = OverLoCKConfig.from_pretrained(tiny)
    config.num_labels = num_labels
    if num_labels == 1000:
        config.id2label = imagenet1k_id2label()
    else:
        config.id2label = dict(enumerate(CUSTOM_LABELS))
    config.label2id = {v: k for k, v in config.id2label.items()}
    model = OverLoCKForImageClassification(config).eval()
    state = {k: v for k, v in load_file(tiny / "model.safetensors").items() if ".fc." not in k}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(".fc." in key for key in missing)
    generator = torch.Generator().manual_seed(num_labels)
    with torch.no_grad():
        model.classifier.fc.weight.copy_(torch.randn(model.classifier.fc.weight.shape, generator=generator))
        model.classifier.fc.bias.zero_()
    folder = _scratch(f"model{num_labels}") / "model"
    model.save_pretrained(folder)
    shutil.copy(tiny / "preprocessor_config.json", folder / "preprocessor_config.json")
    return folder


def encoded_images(count: int = NUM_IMAGES, seed: int = 0, fmt: str = "PNG") -> list[bytes]:
    """`count` random RGB images of two aspect ratios, encoded as `fmt`."""
    rng = np.random.default_rng(seed)
    encoded = []
    for index in range(count):
        shape = (72, 96, 3) if index % 2 else (100, 80, 3)
        stream = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(stream, format=fmt)
        encoded.append(stream.getvalue())
    return encoded


def model_logits(folder: Path, images: list[bytes], pixel_fn=None) -> torch.Tensor:
    """Logits (N, C) of the model in `folder`: its own AutoImageProcessor (or `pixel_fn(PIL) -> (3, S, S)`)."""
    model = OverLoCKForImageClassification.from_pretrained(folder).eval()
    decoded = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
    if pixel_fn is None:
        pixels = AutoImageProcessor.from_pretrained(folder)(images=decoded, return_tensors="pt")["pixel_values"]
    else:
        pixels = torch.stack([pixel_fn(image) for image in decoded])
    with torch.no_grad():
        return model(pixel_values=pixels).logits


def place_labels(logits: torch.Tensor, allowed: list[int] | None = None) -> list[int]:
    """Label of image i from its ranking over `allowed` classes: kind i % 3 = 0 -> 1st, 1 -> 3rd, 2 -> last."""
    labels = []
    for index, row in enumerate(logits):
        order = [int(c) for c in row.argsort(descending=True) if allowed is None or int(c) in allowed]
        labels.append(order[[0, 2, -1][index % 3]])
    return labels


def expected_accuracy(logits: torch.Tensor, labels: list[int], allowed: list[int] | None = None):
    """(top-1, top-5) in percent of `logits` restricted to `allowed` for `labels`: the reference count."""
    top1 = top5 = 0
    for row, label in zip(logits, labels):
        order = [int(c) for c in row.argsort(descending=True) if allowed is None or int(c) in allowed]
        top1, top5 = top1 + (order[0] == label), top5 + (label in order[:5])
    return 100.0 * top1 / len(labels), 100.0 * top5 / len(labels)


def write_folder(root: Path, images: list[bytes], labels: list[int], folder_name, suffix: str = ".png") -> Path:
    """Write image i to ``root/folder_name(labels[i])/img_i<suffix>``."""
    for index, (data, label) in enumerate(zip(images, labels)):
        target = root / folder_name(label) / f"img_{index:03d}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def wnid_name(index: int) -> str:
    """The wnid folder of ImageNet class `index`."""
    return imagenet_wnids()[index]


def subset(benchmark: str) -> list[int]:
    """The 200 ImageNet indices of ImageNet-A / -R."""
    return list(subset_indices(benchmark))


def scratch_dir(name: str) -> Path:
    """A fresh temporary folder removed at exit."""
    return _scratch(name)
