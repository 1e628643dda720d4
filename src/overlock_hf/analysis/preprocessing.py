"""Which evaluation transform a model gets: its own image processor, or the timm-style center-crop transform.

- The model folder (or Hub repo) has a ``preprocessor_config.json`` and neither ``image_size`` nor ``crop_pct``
  is given: its `AutoImageProcessor` is used as it is (the model's own protocol).
- Otherwise (no processor, or an override): `CenterCropTransform` — resize the shorter side to
  ``floor(image_size / crop_pct)`` (bicubic), center crop ``image_size`` — with the processor's mean/std when there
  is one, else the ImageNet ones. ``image_size`` defaults to the processor's size, else 224; ``crop_pct`` to 1.0
  from 384 up (timm's 384 models), else the processor's or config's ``crop_pct``, else 0.875 (timm's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..image_processing_overlock import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .data import CenterCropTransform, ProcessorTransform

DEFAULT_IMAGE_SIZE = 224
DEFAULT_CROP_PCT = 0.875
HIGH_RES_CROP_PCT = 1.0
HIGH_RES_FROM = 384


@dataclass
class Preprocessing:
    """`transform` (PIL image -> tensor (3, S, S)) and, for uint8 outputs, the `mean`/`std` applied on the device."""

    transform: Callable
    image_size: int
    crop_pct: float | None
    description: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) batch from the loader -> normalized float32 on its device (identity for processors)."""
        if self.mean is None:
            return pixels.float()
        mean = torch.tensor(self.mean, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, -1, 1, 1)
        return (pixels.float() / 255.0 - mean) / std


def load_processor(name_or_path: str | None, trust_remote_code: bool = False):
    """The model's `AutoImageProcessor`, or None when it has none (no ``preprocessor_config.json``)."""
    if not name_or_path:
        return None
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None


def _get(container, key: str):
    if container is None:
        return None
    return container.get(key) if isinstance(container, dict) else getattr(container, key, None)


def processor_image_size(processor) -> int | None:
    """The side of the images a processor produces (crop size, else height, else shortest edge)."""
    if processor is None:
        return None
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = size or getattr(processor, "size", None)
    value = _get(size, "height") or _get(size, "shortest_edge")
    return int(value) if value else None


def choose_preprocessing(processor, config, image_size: int | None = None, crop_pct: float | None = None):
    """The `Preprocessing` for a model (see the module docstring for the rules)."""
    if processor is not None and image_size is None and crop_pct is None:
        size = processor_image_size(processor) or DEFAULT_IMAGE_SIZE
        own_crop = getattr(processor, "crop_pct", None)
        return Preprocessing(ProcessorTransform(processor), size, own_crop,
                             f"the model's image processor ({type(processor).__name__})")
    size = int(image_size or processor_image_size(processor) or DEFAULT_IMAGE_SIZE)
    if crop_pct is None:
        crop_pct = (HIGH_RES_CROP_PCT if size >= HIGH_RES_FROM else
                    getattr(processor, "crop_pct", None) or getattr(config, "crop_pct", None) or DEFAULT_CROP_PCT)
    mean = tuple(getattr(processor, "image_mean", None) or IMAGENET_DEFAULT_MEAN)
    std = tuple(getattr(processor, "image_std", None) or IMAGENET_DEFAULT_STD)
    reason = "override of the model's processor" if processor is not None else "the model has no image processor"
    transform = CenterCropTransform(size, float(crop_pct))
    description = (f"resize shorter side to {transform.scale_size} (bicubic), center crop {size}, "
                   f"mean {list(mean)} std {list(std)} ({reason})")
    return Preprocessing(transform, size, float(crop_pct), description, mean, std)
