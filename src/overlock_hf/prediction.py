"""Top-k predictions of an image-classification model on image files: what ``overlock-hf predict`` prints.

Any transformers image-classification model with an image processor works (a folder or a Hub id: OverLoCK,
ConvNeXt, ...). Images are read with :func:`overlock_hf.image_processing_overlock.to_rgb` (every PIL mode, 16-bit
and float images scaled), preprocessed by the model's own processor and run in batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["Prediction", "predict"]


@dataclass
class Prediction:
    """The `top_k` classes of one image, best first: `labels[i]` (the config's `id2label` name), `indices[i]`,
    `scores[i]` (softmax probability)."""

    path: Path
    labels: list[str]
    indices: list[int]
    scores: list[float]


def _load_images(paths: list[Path]) -> list[Image.Image]:
    from .image_processing_overlock import to_rgb

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                images.append(to_rgb(image))
        except (OSError, UnidentifiedImageError) as error:
            raise ValueError(f"cannot read image {path}: {error}") from error
    return images


@torch.no_grad()
def predict(model, images, top_k: int = 5, batch_size: int = 8, device: str | torch.device = "cpu",
            trust_remote_code: bool = False) -> list[Prediction]:
    """Top-`top_k` predictions of `model` on `images`.

    Args:
        model: a model folder or Hub id (loaded with `AutoModelForImageClassification` and its
            `AutoImageProcessor`).
        images: image files and folders (searched recursively for image files), in order.
        top_k: classes per image (at most the model's number of classes).
        batch_size: images per forward pass.
        device: where the model runs (`cpu`, `cuda`, `cuda:1`, ...).
    Returns one :class:`Prediction` per image file. Raises `FileNotFoundError` for a missing path or an empty
    folder, `ValueError` for an unreadable image or a bad argument, before any model is loaded where possible.
    """
    from .analysis.reports import find_images

    if top_k < 1 or batch_size < 1:
        raise ValueError(f"top_k and batch_size must be positive, got {top_k} and {batch_size}")
    paths = find_images(images)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but torch sees no CUDA device")
    import overlock_hf  # noqa: F401  (registers OverLoCK with the Auto classes)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(str(model), trust_remote_code=trust_remote_code)
    network = AutoModelForImageClassification.from_pretrained(str(model), trust_remote_code=trust_remote_code)
    network = network.to(device).eval()
    top_k = min(top_k, int(network.config.num_labels))
    predictions = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        pixels = processor(_load_images(batch), return_tensors="pt")["pixel_values"].to(device)
        probabilities = network(pixel_values=pixels).logits.float().softmax(dim=-1)
        scores, indices = probabilities.topk(top_k, dim=-1)
        for path, row_scores, row_indices in zip(batch, scores.tolist(), indices.tolist()):
            labels = [str(network.config.id2label.get(i, i)) for i in row_indices]
            predictions.append(Prediction(path, labels, row_indices, row_scores))
    return predictions
