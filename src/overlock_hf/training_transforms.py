"""Training-time image augmentation written with PIL and torch (torchvision is not needed).

The fine-tuning examples train with the usual ImageNet recipe, random resized crop and horizontal flip, then
normalize like the evaluation processor (ImageNet mean/std by default). Every random draw takes an explicit
`torch.Generator`, so a caller can make augmentation reproducible per sample and per epoch (the Accelerate
example seeds one generator from `(seed, epoch, index)`, which makes resuming from a checkpoint exact); with
`generator=None` the global torch RNG is used.

The crop follows torchvision's `RandomResizedCrop.get_params`: up to ten tries of an area fraction in `scale`
and a log-uniform aspect ratio in `ratio`, then a center crop of the closest admissible aspect ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .image_processing_overlock import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, to_rgb

__all__ = ["RandomResizedCrop", "TrainTransform", "random_horizontal_flip", "to_normalized_tensor"]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator))


def _randint(low: int, high_inclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator))


class RandomResizedCrop:
    """Crop a random area fraction / aspect ratio of a PIL image and resize it to `size x size`.

    Args:
        size: output side in pixels.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        resample: PIL resampling filter of the resize (bicubic, as timm's ImageNet training transform).
    """

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 resample: int = Image.BICUBIC):
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        self.size, self.scale, self.ratio, self.resample = int(size), tuple(scale), tuple(ratio), resample

    def get_params(self, width: int, height: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        """The crop box `(left, top, crop_width, crop_height)` for an image of `width x height`."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * _uniform(self.scale[0], self.scale[1], generator)
            aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
            crop_w = int(round(math.sqrt(target_area * aspect)))
            crop_h = int(round(math.sqrt(target_area / aspect)))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                return _randint(0, width - crop_w, generator), _randint(0, height - crop_h, generator), crop_w, crop_h
        aspect = width / height
        if aspect < self.ratio[0]:
            crop_w, crop_h = width, int(round(width / self.ratio[0]))
        elif aspect > self.ratio[1]:
            crop_w, crop_h = int(round(height * self.ratio[1])), height
        else:
            crop_w, crop_h = width, height
        return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
        left, top, crop_w, crop_h = self.get_params(image.width, image.height, generator)
        return image.resize((self.size, self.size), self.resample, box=(left, top, left + crop_w, top + crop_h))


def random_horizontal_flip(image: Image.Image, probability: float, generator: torch.Generator | None = None):
    """Mirror `image` left-right with probability `probability` (no draw when it is 0)."""
    if probability > 0 and _uniform(0.0, 1.0, generator) < probability:
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def to_normalized_tensor(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """An RGB PIL image as a float32 `(3, H, W)` tensor, scaled to [0, 1] then normalized by `mean` / `std`."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (tensor - mean_t) / std_t


class TrainTransform:
    """RGB conversion, random resized crop, horizontal flip, normalization: PIL image -> `(3, size, size)` tensor.

    Args:
        size: output side.
        scale, ratio: of the random resized crop.
        hflip_probability: chance of a left-right flip (0 for data whose meaning changes when mirrored, e.g. digits).
        mean, std: normalization, normally the evaluation processor's `image_mean` / `image_std`.
    """

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 hflip_probability: float = 0.5, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
                 std: Sequence[float] = IMAGENET_DEFAULT_STD):
        if not 0.0 <= hflip_probability <= 1.0:
            raise ValueError(f"hflip_probability must be in [0, 1], got {hflip_probability}")
        self.crop = RandomResizedCrop(size, scale, ratio)
        self.hflip_probability = hflip_probability
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = self.crop(to_rgb(image), generator)
        image = random_horizontal_flip(image, self.hflip_probability, generator)
        return to_normalized_tensor(image, self.mean, self.std)
