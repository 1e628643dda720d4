"""The image and label columns of a dataset: found (or the requested ones checked) and normalized."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import FinetuningError

__all__ = ["IMAGE_COLUMNS", "LABEL_COLUMNS", "prepare_columns"]

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels")


def _pick_column(columns: Sequence[str], requested: str | None, candidates: Sequence[str], kind: str,
                 option: str) -> str:
    if requested is not None:
        if requested not in columns:
            raise FinetuningError(f"the dataset has no {kind} column {requested!r}; its columns are {list(columns)}")
        return requested
    for name in candidates:
        if name in columns:
            return name
    raise FinetuningError(
        f"the dataset has no {kind} column: looked for {', '.join(map(repr, candidates))}, its columns are "
        f"{list(columns)}; name the right one with {option} NAME"
    )


def prepare_columns(splits, image_column: str | None = None, label_column: str | None = None):
    """Check / find the image and label columns of `splits` and normalize them.

    Labels become a `ClassLabel` (string labels are encoded, names sorted), the image column stays undecoded
    (`decode_image` reads it). Returns `(splits, image_column, label_column, label_names)`.
    Raises `FinetuningError` for a missing column, an image column that is not an `Image` feature, or labels
    outside the class range (e.g. the -1 of an unlabeled test split).
    """
    from datasets import ClassLabel
    from datasets import Image as ImageFeature

    columns = splits["train"].column_names
    image_column = _pick_column(columns, image_column, IMAGE_COLUMNS, "image", "--image_column")
    label_column = _pick_column(columns, label_column, LABEL_COLUMNS, "label", "--label_column")
    if not isinstance(splits["train"].features[image_column], ImageFeature):
        raise FinetuningError(
            f"column {image_column!r} holds {splits['train'].features[image_column]}, not images; name the image "
            "column with --image_column NAME"
        )
    if not isinstance(splits["train"].features[label_column], ClassLabel):
        splits = splits.class_encode_column(label_column)
    names = list(splits["train"].features[label_column].names)
    for split_name, split in splits.items():
        labels = split[label_column]
        bad = sorted({label for label in labels if not 0 <= label < len(names)})
        if bad:
            raise FinetuningError(
                f"the {split_name} split has labels {bad[:5]} outside [0, {len(names)}) in column {label_column!r} "
                "(an unlabeled split?); pass a labeled split or a different --label_column"
            )
    splits = splits.cast_column(image_column, ImageFeature(decode=False))
    return splits, image_column, label_column, names
