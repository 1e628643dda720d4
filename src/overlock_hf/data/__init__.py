"""Image-classification data for fine-tuning: where it comes from, its columns, decoding, checks and batching.

* :mod:`.sources`: the embedded digits set, a local image folder (checked: missing folder, empty class folders,
  a single class) or a Hub dataset, as a `DatasetDict` with `train` and `validation` splits;
* :mod:`.columns`: the image / label columns found or checked, labels made a `ClassLabel`;
* :mod:`.decoding`: undecoded image entries decoded to RGB, every file of a split decoded once before training so
  that a truncated or unreadable image is reported by name;
* :mod:`.loading`: the torch views (training with per-sample seeded augmentation, evaluation through the image
  processor), the epoch-seeded sampler and the collate function.

This folder also holds package data (`imagenet1k_id2label.json`, read by the converter).
"""

from .columns import prepare_columns
from .decoding import check_image_files, decode_image
from .loading import EpochShuffleSampler, EvalImageDataset, TrainImageDataset, collate
from .errors import FinetuningError
from .sources import (
    DIGITS,
    DIGITS_IMAGE_SIZE,
    check_image_folder,
    load_image_dataset,
    looks_like_path,
    select_subsets,
)

__all__ = [
    "DIGITS",
    "DIGITS_IMAGE_SIZE",
    "EpochShuffleSampler",
    "EvalImageDataset",
    "FinetuningError",
    "TrainImageDataset",
    "check_image_files",
    "check_image_folder",
    "collate",
    "decode_image",
    "load_image_dataset",
    "looks_like_path",
    "prepare_columns",
    "select_subsets",
]
