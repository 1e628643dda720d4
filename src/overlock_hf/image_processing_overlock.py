"""Image processing for OverLoCK: the official evaluation transform as a transformers image processor.

The released OverLoCK models were evaluated with timm's eval transform: resize the shorter side to
`int(224 / crop_pct)` (bicubic, PIL; long side `int(new_short * long / short)`), center crop 224 (torchvision:
offsets `int(round((size - 224) / 2))`, half-to-even), scale to [0, 1] and normalize with the ImageNet mean/std.

Two processors are offered (see docs/image_processing.md):

- the in-tree `ConvNextImageProcessor` / `ConvNextImageProcessorPil` configured for a variant's `crop_pct`
  (the default, `make_image_processor(crop_pct)`): a `preprocessor_config.json` naming an in-tree class loads
  with `AutoImageProcessor` without this package and without `trust_remote_code`. Its PIL backend equals the
  official transform bit for bit except that it floors the center-crop offset, a one-pixel shift whenever
  `(resized side - 224) % 4 == 3`;
- `OverLoCKImageProcessor` (`make_image_processor(crop_pct, exact=True)`): the same settings, with the
  official half-to-even crop offset and 16-bit / float images scaled to 8 bits (see `to_rgb`).

This file is copied next to converted checkpoints saved with `exact=True` (remote code): it imports only
transformers, NumPy and Pillow, with absolute imports.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from transformers.image_utils import PILImageResampling, SizeDict

try:  # transformers >= 5 splits the PIL backend into its own class
    from transformers import BitImageProcessorPil, ConvNextImageProcessorPil

    _HAS_PIL_BACKEND_CLASS = True
except ImportError:  # transformers 4.x: the (slow) processors are the PIL/NumPy ones
    from transformers import BitImageProcessor as BitImageProcessorPil
    from transformers import ConvNextImageProcessor as ConvNextImageProcessorPil

    _HAS_PIL_BACKEND_CLASS = False

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "OverLoCKImageProcessor",
    "image_processor_kwargs",
    "make_image_processor",
    "save_image_processor",
    "to_rgb",
]

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _sixteen_bit_to_eight(values: np.ndarray) -> np.ndarray:
    """Map integers in [0, 65535] to [0, 255] by `round(v * 255 / 65535)` (exact integer arithmetic)."""
    values = np.clip(values.astype(np.int64), 0, 65535)
    return ((values + 128) // 257).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to an 8-bit RGB PIL image.

    - RGB is returned unchanged; L, 1, P (opaque), CMYK, YCbCr, ... go through `Image.convert("RGB")`.
    - Images with transparency (RGBA, LA, PA, P with a transparency entry) are composited onto a white
      background, as transformers' `convert_to_rgb` does.
    - 16-bit images (`I;16`, `I;16B`, ...) are scaled `v -> round(v * 255 / 65535)`; `Image.convert` would clip
      every value above 255 to white.
    - Mode `I` (32-bit integer; older Pillow opens 16-bit PNGs as `I`): taken as 16-bit and scaled like above
      when its maximum exceeds 255, else as 8-bit; values are clipped to the range first.
    - Mode `F` (float): taken as [0, 1] when all values lie there, else as [0, 255]; clipped and rounded.

    Raises:
        TypeError: `image` is not a `PIL.Image.Image`.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__module__}.{type(image).__qualname__}")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        gray = _sixteen_bit_to_eight(np.asarray(image))
    elif mode == "I":
        values = np.asarray(image)
        if values.max(initial=0) > 255:
            gray = _sixteen_bit_to_eight(values)
        else:
            gray = np.clip(values, 0, 255).astype(np.uint8)
    elif mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        gray = np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
    elif mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    else:
        return image.convert("RGB")
    return Image.fromarray(gray, mode="L").convert("RGB")


def image_processor_kwargs(crop_pct: float, image_size: int = 224) -> dict:
    """The settings of the official evaluation transform for a crop fraction, as `ConvNextImageProcessor` /
    `OverLoCKImageProcessor` kwargs (shorter side to `int(image_size / crop_pct)`, center crop `image_size`).

    The in-tree ConvNext processors apply `crop_pct` below 384 only (from 384 up they warp the image to a
    square); :func:`make_image_processor` uses `BitImageProcessor` there instead (:func:`_crop_kwargs`).
    """
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return {
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "crop_pct": crop_pct,
        "resample": int(PILImageResampling.BICUBIC),
        "do_center_crop": False,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGENET_DEFAULT_MEAN),
        "image_std": list(IMAGENET_DEFAULT_STD),
        "do_convert_rgb": True,
    }


def _crop_kwargs(crop_pct: float, image_size: int) -> dict:
    """The same transform as `BitImageProcessor` kwargs: an explicit resize of the shorter side, then a crop."""
    kwargs = image_processor_kwargs(crop_pct, image_size)
    del kwargs["crop_pct"]
    kwargs.update(size={"shortest_edge": int(image_size / crop_pct)}, do_center_crop=True,
                  crop_size={"height": image_size, "width": image_size})
    return kwargs


class OverLoCKImageProcessor(ConvNextImageProcessorPil):
    """The official OverLoCK evaluation transform, exact: `ConvNextImageProcessorPil` with timm's crop rounding.

    Differences from the in-tree class: the center-crop offset is `int(round((side - crop) / 2))` (Python
    rounding, half-to-even, as torchvision's `CenterCrop`) instead of `(side - crop) // 2`, and PIL inputs are
    converted with `to_rgb` (16-bit and float images scaled instead of clipped). Needs transformers >= 5.
    """

    size = {"shortest_edge": 224}
    crop_pct = 0.925
    resample = PILImageResampling.BICUBIC
    image_mean = list(IMAGENET_DEFAULT_MEAN)
    image_std = list(IMAGENET_DEFAULT_STD)
    do_convert_rgb = True

    def __init__(self, **kwargs):
        if not _HAS_PIL_BACKEND_CLASS:
            raise ImportError(
                "OverLoCKImageProcessor needs transformers >= 5 (ConvNextImageProcessorPil); with transformers 4.x "
                "use make_image_processor(crop_pct) (the in-tree ConvNextImageProcessor)"
            )
        super().__init__(**kwargs)

    def process_image(self, image, *args, **kwargs) -> np.ndarray:
        """Convert PIL inputs with `to_rgb`, then hand over to the PIL backend (arrays and tensors unchanged)."""
        if isinstance(image, Image.Image) and kwargs.get("do_convert_rgb", self.do_convert_rgb):
            image = to_rgb(image)
        return super().process_image(image, *args, **kwargs)

    def center_crop(self, image: np.ndarray, size, **kwargs) -> np.ndarray:
        """Center crop a channels-first array with torchvision's offsets (half-to-even); zero-pad if too small."""
        if size.height is None or size.width is None:
            raise ValueError(f"The size dictionary must have keys 'height' and 'width'. Got {size.keys()}")
        height, width = image.shape[-2:]
        if size.height > height or size.width > width:
            return super().center_crop(image, size, **kwargs)
        top = int(round((height - size.height) / 2.0))
        left = int(round((width - size.width) / 2.0))
        return image[..., top : top + size.height, left : left + size.width]

    def resize(self, image: np.ndarray, size, resample=None, crop_pct: float = 0.925, **kwargs) -> np.ndarray:
        """Resize the shorter side to `int(shortest_edge / crop_pct)`, then `center_crop`, at every size (the
        in-tree class warps from 384 up instead)."""
        shortest_edge = size.shortest_edge
        if not shortest_edge:
            return super().resize(image, size, resample, crop_pct, **kwargs)
        height, width = image.shape[-2:]
        short, long = (width, height) if width <= height else (height, width)
        new_short = int(shortest_edge / crop_pct)
        new_long = int(new_short * long / short)
        new_height, new_width = (new_long, new_short) if width <= height else (new_short, new_long)
        image = super(ConvNextImageProcessorPil, self).resize(
            image, size=SizeDict(height=new_height, width=new_width), resample=resample, **kwargs
        )
        return self.center_crop(image, SizeDict(height=shortest_edge, width=shortest_edge))


def make_image_processor(
    crop_pct: float, image_size: int = 224, backend: str = "pil", exact: bool = False
) -> ConvNextImageProcessorPil | OverLoCKImageProcessor:
    """The image processor reproducing the official evaluation transform for `crop_pct`.

    Args:
        crop_pct: the variant's evaluation crop fraction (`OverLoCKConfig.crop_pct`; 0.925 XT, 0.95 T/S, 0.975 B).
        image_size: the crop size (224 for the released models; from 384 up, where the in-tree ConvNext
            processors warp, the in-tree `BitImageProcessor` with the same resize-then-crop transform).
        backend: `"pil"` (bit-exact with the official transform up to the crop offset) or `"torchvision"`
            (the in-tree torch backend: faster, within about one grey level; needs torchvision).
        exact: return `OverLoCKImageProcessor` (official crop offset; PIL backend only).
    """
    kwargs = image_processor_kwargs(crop_pct, image_size)
    if backend not in ("pil", "torchvision"):
        raise ValueError(f"backend must be 'pil' or 'torchvision', got {backend!r}")
    if exact:
        if backend != "pil":
            raise ValueError("the exact processor exists for the PIL backend only (backend='pil')")
        return OverLoCKImageProcessor(**kwargs)
    if backend == "torchvision" and not _HAS_PIL_BACKEND_CLASS:
        raise ValueError("transformers 4.x: use backend='pil' (its fast processors are not configured here)")
    if image_size >= 384:  # ConvNext would warp: the in-tree resize-then-crop processor
        if backend == "pil":
            return BitImageProcessorPil(**_crop_kwargs(crop_pct, image_size))
        from transformers import BitImageProcessor  # the torchvision backend; imported here as it needs torchvision

        return BitImageProcessor(**_crop_kwargs(crop_pct, image_size))
    if backend == "pil":
        return ConvNextImageProcessorPil(**kwargs)
    from transformers import ConvNextImageProcessor  # the torchvision backend; imported here as it needs torchvision

    return ConvNextImageProcessor(**kwargs)


def save_image_processor(
    output_dir: str | os.PathLike, crop_pct: float, image_size: int = 224, exact: bool = False
) -> Path:
    """Write `preprocessor_config.json` for a variant into `output_dir` and return its path.

    By default the file names the in-tree `ConvNextImageProcessor` (loads anywhere, no remote code). With
    `exact=True` it names `OverLoCKImageProcessor`, with an `auto_map` entry, and this module is copied next to
    it: loading it without this package then needs `trust_remote_code=True`.
    """
    output_dir = Path(output_dir)
    processor = make_image_processor(crop_pct, image_size, backend="pil", exact=exact)
    if exact:
        OverLoCKImageProcessor.register_for_auto_class("AutoImageProcessor")
    processor.save_pretrained(output_dir)
    return output_dir / "preprocessor_config.json"
