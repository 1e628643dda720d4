"""The image processors against the official evaluation transform, written here from PIL.

Official (timm eval, as used by the OverLoCK repo): `img.convert("RGB")`, `Resize(int(224 / crop_pct), BICUBIC)`
(PIL, shorter side; long side `int(new_short * long / short)`), `CenterCrop(224)` (offset
`int(round((side - 224) / 2.0))`, Python rounding: half-to-even), `ToTensor`, `Normalize(ImageNet mean/std)`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoImageProcessor, ConvNextImageProcessorPil
from transformers.image_utils import SizeDict

from overlock_hf.image_processing_overlock import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    OverLoCKImageProcessor,
    image_processor_kwargs,
    make_image_processor,
    save_image_processor,
    to_rgb,
)

CROP_PCTS = {"overlock-xt": 0.925, "overlock-t": 0.95, "overlock-s": 0.95, "overlock-b": 0.975}
# (width, height): landscape / portrait photos, square, panorama, thin strips, tiny images below the crop size.
SIZES = [
    (500, 375), (375, 500), (640, 427), (224, 224), (300, 300), (512, 341), (1000, 200), (50, 40), (13, 97), (1, 1),
]


def synthetic_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth colour gradients, a low-frequency wave, pixel noise and filled shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = 128 + 100 * np.sin((xx + yy) / max(width, height) * 6)
    base = np.stack([255 * xx / max(width - 1, 1), 255 * yy / max(height - 1, 1), wave], axis=-1)
    image = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(1, width // 2 + 2)), y0 + int(rng.integers(1, height // 2 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return image


def resized_size(width: int, height: int, crop_pct: float, size: int = 224) -> tuple[int, int]:
    """(width, height) after torchvision's `Resize(int(size / crop_pct))` of a (width, height) image."""
    new_short = int(size / crop_pct)
    if width <= height:
        return new_short, int(new_short * height / width)
    return int(new_short * width / height), new_short


def reference_transform(
    image: Image.Image, crop_pct: float, size: int = 224, rounding: str = "half_even"
) -> torch.Tensor:
    """The official eval transform; `rounding="floor"` crops at `(side - size) // 2` instead (transformers)."""
    image = image.convert("RGB")
    new_width, new_height = resized_size(*image.size, crop_pct, size)
    if (new_width, new_height) != image.size:
        image = image.resize((new_width, new_height), Image.BICUBIC)
    if rounding == "half_even":
        top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    else:
        top, left = (new_height - size) // 2, (new_width - size) // 2
    image = image.crop((left, top, left + size, top + size))
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)  # ToTensor
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    return (tensor - mean) / std  # Normalize


def offsets_agree(width: int, height: int, crop_pct: float) -> bool:
    """Whether floor and half-to-even give the same crop offsets, i.e. no resized side has `(side - 224) % 4 == 3`."""
    return all((side - 224) % 4 != 3 for side in resized_size(width, height, crop_pct))


def pixel_values(processor, images) -> torch.Tensor:
    return processor(images, return_tensors="pt")["pixel_values"]


@pytest.fixture(scope="module")
def images() -> dict[tuple[int, int], Image.Image]:
    return {(w, h): synthetic_image(w, h, seed=7 * w + h) for w, h in SIZES}


def test_size_list_covers_both_rounding_cases():
    for crop_pct in set(CROP_PCTS.values()):
        agreement = {offsets_agree(w, h, crop_pct) for w, h in SIZES}
        if crop_pct == 0.95:  # 235 - 224 = 11: the short side is always shifted for T and S
            assert agreement == {False}
        else:
            assert agreement == {True, False}


@pytest.mark.parametrize("crop_pct", sorted(set(CROP_PCTS.values())))
def test_in_tree_pil_processor_matches_official_up_to_the_documented_crop_offset(images, crop_pct):
    processor = make_image_processor(crop_pct)
    assert type(processor) is ConvNextImageProcessorPil
    batch = pixel_values(processor, list(images.values()))
    assert batch.shape == (len(images), 3, 224, 224) and batch.dtype == torch.float32
    for output, ((width, height), image) in zip(batch, images.items()):
        official = reference_transform(image, crop_pct)
        if offsets_agree(width, height, crop_pct):
            assert torch.equal(output, official), (width, height)
        else:
            # Exactly the one-pixel shift: bit-exact with the floor-offset crop of the same resized image.
            assert torch.equal(output, reference_transform(image, crop_pct, rounding="floor")), (width, height)
            if min(width, height) > 1:  # a 1 x 1 image resizes to a constant: shifting it changes nothing
                assert not torch.equal(output, official)


@pytest.mark.parametrize("crop_pct", sorted(set(CROP_PCTS.values())))
def test_exact_processor_is_bit_exact_for_every_size(images, crop_pct):
    processor = make_image_processor(crop_pct, exact=True)
    batch = pixel_values(processor, list(images.values()))
    for output, ((width, height), image) in zip(batch, images.items()):
        assert torch.equal(output, reference_transform(image, crop_pct)), (width, height)


def test_crop_offset_rounding_is_half_to_even():
    # 235 x 235 (T/S): offset 11 / 2 = 5.5 -> 6; 229 x 343 (B): 119 / 2 = 59.5 -> 60, 5 / 2 = 2.5 -> 2.
    processor = make_image_processor(0.95, exact=True)
    ramp = np.tile(np.arange(235, dtype=np.uint8)[None, :, None], (235, 1, 3))
    output = processor.center_crop(np.moveaxis(ramp, -1, 0), size=SizeDict(height=224, width=224))
    assert output.shape == (3, 224, 224) and output[0, 0, 0] == 6
    tall = np.zeros((3, 343, 229), dtype=np.uint8)
    tall[:, 60, 2] = 1
    assert processor.center_crop(tall, size=SizeDict(height=224, width=224))[0, 0, 0] == 1


# --- image modes ---------------------------------------------------------------------------------------------


def _mode_images(base: Image.Image) -> dict[str, Image.Image]:
    gray16 = (np.asarray(base.convert("L"), dtype=np.uint32) * 257).astype(np.uint16)
    transparent_palette = base.convert("P")
    transparent_palette.info["transparency"] = 0
    return {
        "L": base.convert("L"),
        "LA": base.convert("LA"),
        "RGBA": base.convert("RGBA"),
        "P": base.convert("P"),
        "P+transparency": transparent_palette,
        "I;16": Image.fromarray(gray16),
        "I": Image.fromarray(gray16.astype(np.int32)),
        "F": Image.fromarray(np.asarray(base.convert("L"), dtype=np.float32) / 255),
        "CMYK": base.convert("CMYK"),
        "1": base.convert("1"),
    }


@pytest.mark.parametrize("exact", [False, True])
def test_every_mode_gives_rgb_pixel_values(exact):
    base = synthetic_image(320, 240, seed=3)
    modes = _mode_images(base)
    assert modes["I;16"].mode == "I;16" and modes["I"].mode == "I" and modes["F"].mode == "F"
    batch = pixel_values(make_image_processor(0.925, exact=exact), list(modes.values()))
    assert batch.shape == (len(modes), 3, 224, 224)
    assert torch.isfinite(batch).all()


def test_exact_processor_mode_conversions_match_the_reference_of_the_8_bit_image():
    crop_pct, base = 0.925, synthetic_image(320, 240, seed=3)  # 322 x 242: offsets agree, in-tree is exact too
    modes = _mode_images(base)
    gray = reference_transform(base.convert("L"), crop_pct)
    exact, in_tree = make_image_processor(crop_pct, exact=True), make_image_processor(crop_pct)
    for mode in ("L", "LA", "I;16", "I", "F"):  # 16-bit, 32-bit and float carry the same grey levels
        assert torch.equal(pixel_values(exact, modes[mode])[0], gray), mode
    assert torch.equal(pixel_values(exact, modes["RGBA"])[0], reference_transform(base, crop_pct))
    for mode in ("L", "LA", "RGBA", "P"):
        assert torch.equal(pixel_values(in_tree, modes[mode])[0], pixel_values(exact, modes[mode])[0]), mode
    # The in-tree class converts 16-bit with PIL's convert("RGB") (as the official loader): values clip at 255.
    assert torch.equal(pixel_values(in_tree, modes["I;16"])[0], reference_transform(modes["I;16"], crop_pct))


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    white = (1 - torch.tensor(IMAGENET_DEFAULT_MEAN)) / torch.tensor(IMAGENET_DEFAULT_STD)
    for exact in (False, True):
        output = pixel_values(make_image_processor(0.95, exact=exact), clear)[0]
        assert torch.allclose(output, white.view(3, 1, 1).expand_as(output))


def test_to_rgb_scaling_rules():
    sixteen = Image.fromarray(np.array([[0, 128, 129, 257, 32896, 65535]], dtype=np.uint16))
    assert sixteen.mode == "I;16"
    assert np.asarray(to_rgb(sixteen))[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255]
    big_endian = Image.fromarray(np.array([[0, 65535]], dtype=">u2"))
    assert np.asarray(to_rgb(big_endian))[0, :, 0].tolist() == [0, 255]
    eight_bit_in_i = Image.fromarray(np.array([[-5, 0, 17, 255]], dtype=np.int32))
    assert np.asarray(to_rgb(eight_bit_in_i))[0, :, 0].tolist() == [0, 0, 17, 255]
    unit_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(unit_float))[0, :, 0].tolist() == [0, 128, 255]
    byte_float = Image.fromarray(np.array([[0.0, 17.4, 300.0]], dtype=np.float32))
    assert np.asarray(to_rgb(byte_float))[0, :, 0].tolist() == [0, 17, 255]
    rgb = synthetic_image(8, 8)
    assert to_rgb(rgb) is rgb
    with pytest.raises(TypeError, match="ndarray"):
        to_rgb(np.zeros((4, 4, 3), dtype=np.uint8))


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize(
    ("bad", "error", "names"),
    [
        (None, TypeError, "NoneType"),
        (3, TypeError, "int"),
        ({"image": 1}, TypeError, "dict"),
        (b"\x89PNG", TypeError, "bytes"),
        ("not an image", ValueError, "not an image"),
        (np.zeros(5), ValueError, r"\[0\. 0\."),
    ],
)
def test_non_image_input_raises_naming_what_was_received(exact, bad, error, names):
    with pytest.raises(error, match=names):
        make_image_processor(0.95, exact=exact)(bad)


def test_argument_validation():
    with pytest.raises(ValueError, match="crop_pct"):
        make_image_processor(1.5)
    with pytest.raises(ValueError, match="image_size"):
        make_image_processor(0.95, image_size=0)
    with pytest.raises(ValueError, match="backend"):
        make_image_processor(0.95, backend="cv2")
    with pytest.raises(ValueError, match="PIL backend only"):
        make_image_processor(0.95, backend="torchvision", exact=True)


def test_torchvision_backend_is_within_about_one_grey_level(images):
    pytest.importorskip("torchvision")
    crop_pct = 0.975
    processor = make_image_processor(crop_pct, backend="torchvision")
    for (width, height), image in images.items():
        if offsets_agree(width, height, crop_pct) and min(width, height) > 1:
            difference = (pixel_values(processor, image)[0] - reference_transform(image, crop_pct)).abs()
            assert difference.mean() < 1.5 / 255 / min(IMAGENET_DEFAULT_STD), (width, height)


# --- saving and loading ------------------------------------------------------------------------------------


def test_saved_in_tree_config_round_trips_through_auto_image_processor(tmp_path, images):
    path = save_image_processor(tmp_path, crop_pct=0.95)
    assert path == tmp_path / "preprocessor_config.json"
    saved = json.loads(path.read_text())
    assert saved["image_processor_type"] == "ConvNextImageProcessor"  # in-tree: no package, no remote code needed
    assert "auto_map" not in saved and not list(tmp_path.glob("*.py"))
    expected = dict(image_processor_kwargs(0.95), image_mean=list(IMAGENET_DEFAULT_MEAN))
    for key, value in expected.items():
        assert saved[key] == value, key
    loaded = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert type(loaded) is ConvNextImageProcessorPil
    batch = list(images.values())
    assert torch.equal(pixel_values(loaded, batch), pixel_values(make_image_processor(0.95), batch))
    # With this package, the exact processor reads the same file.
    exact = OverLoCKImageProcessor.from_pretrained(tmp_path)
    assert exact.crop_pct == 0.95
    assert torch.equal(pixel_values(exact, batch[0])[0], reference_transform(batch[0], 0.95))


def test_saved_exact_config_loads_as_remote_code(tmp_path, images):
    path = save_image_processor(tmp_path, crop_pct=0.95, exact=True)
    saved = json.loads(path.read_text())
    assert saved["image_processor_type"] == "OverLoCKImageProcessor"
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_overlock.OverLoCKImageProcessor"}
    assert (tmp_path / "image_processing_overlock.py").is_file()
    loaded = AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "OverLoCKImageProcessor"
    assert type(loaded).__module__ != OverLoCKImageProcessor.__module__  # the copied file, not this package
    for image in images.values():
        assert torch.equal(pixel_values(loaded, image)[0], reference_transform(image, 0.95))


@pytest.mark.parametrize("crop_pct", [1.0, 0.95])
def test_384_processors_resize_then_crop_like_timm(images, crop_pct):
    """From 384 up the in-tree ConvNext processors warp; ours resize the shorter side and center crop (Table G)."""
    in_tree, exact = make_image_processor(crop_pct, image_size=384), make_image_processor(crop_pct, 384, exact=True)
    for (width, height), image in images.items():
        if min(width, height) < 8:
            continue
        expected_floor = reference_transform(image, crop_pct, size=384, rounding="floor")
        assert torch.equal(pixel_values(in_tree, image)[0], expected_floor), (width, height)
        expected = reference_transform(image, crop_pct, size=384)
        assert torch.equal(pixel_values(exact, image)[0], expected), (width, height)


def test_384_config_round_trips_through_auto_image_processor(tmp_path, images):
    save_image_processor(tmp_path, crop_pct=1.0, image_size=384)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    image = images[(500, 375)]
    assert pixel_values(loaded, image).shape == (1, 3, 384, 384)
    assert torch.equal(pixel_values(loaded, image)[0], reference_transform(image, 1.0, size=384, rounding="floor"))
