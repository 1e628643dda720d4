"""Decoding undecoded `datasets.Image` entries (`{"bytes", "path"}`) to RGB, with errors that name the file."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from ..image_processing_overlock import to_rgb
from .errors import FinetuningError

__all__ = ["check_image_files", "decode_image"]

# what PIL raises for a file it cannot identify, a truncated stream or a corrupt header
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def _open(item: dict) -> Image.Image:
    if item.get("bytes") is not None:
        return Image.open(io.BytesIO(item["bytes"]))
    if item.get("path"):
        return Image.open(item["path"])
    raise FinetuningError(f"image entry without bytes or path: {item!r}")


def decode_image(item: dict, where: str = "") -> Image.Image:
    """Decode an undecoded `datasets.Image` entry to an RGB PIL image; a file that cannot be read raises
    `FinetuningError` naming it (`where` names an entry without a path, e.g. "row 3 of the train split")."""
    try:
        with _open(item) as image:
            image.load()
            return to_rgb(image)
    except _DECODE_ERRORS as error:
        name = item.get("path") or where or "an image"
        raise FinetuningError(f"cannot read image {name}: {type(error).__name__}: {error}") from error


def check_image_files(split, image_column: str) -> None:
    """Decode every image of `split` once (the full pixel data, not only the header: a truncated JPEG fails here,
    before training, instead of in the middle of an epoch). One `FinetuningError` lists the unreadable files."""
    bad = []
    for row, item in enumerate(split[image_column]):
        try:
            decode_image(item, f"row {row}")
        except FinetuningError as error:
            bad.append(str(error).removeprefix("cannot read image "))
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise FinetuningError(f"{len(bad)} unreadable image(s): {'; '.join(bad[:5])}{more}. Remove or replace them.")
