"""Torch views of the splits, the epoch-seeded sampler and batching.

Every random draw depends on `(seed, epoch, index)` only, never on the global RNG or on which batches were
skipped, so a run resumed mid-epoch sees the same order and the same crops as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ..training_transforms import TrainTransform
from .decoding import decode_image

__all__ = ["EpochShuffleSampler", "EvalImageDataset", "TrainImageDataset", "collate"]


def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from `(seed, epoch, index)` only: augmentation independent of the iteration history."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + index) % (2**63))


class TrainImageDataset(torch.utils.data.Dataset):
    """Training view of a split: `{"pixel_values": (3, S, S), "labels": int}` with random augmentation.

    The augmentation of sample `i` in epoch `e` is drawn from a generator seeded with `(seed, e, i)`. Call
    `set_epoch` before each epoch (Accelerate's and the Trainer's data loaders call it on their dataset).
    """

    def __init__(self, split, image_column: str, label_column: str, transform: TrainTransform, seed: int):
        self.split, self.image_column, self.label_column = split, image_column, label_column
        self.transform, self.seed, self.epoch = transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        row = self.split[int(index)]
        image = decode_image(row[self.image_column], f"row {index} of the train split")
        pixels = self.transform(image, _sample_generator(self.seed, self.epoch, int(index)))
        return {"pixel_values": pixels, "labels": int(row[self.label_column])}


class EvalImageDataset(torch.utils.data.Dataset):
    """Evaluation view of a split through the model's eval image processor: `{"pixel_values", "labels"}`."""

    def __init__(self, split, image_column: str, label_column: str, processor):
        self.split, self.image_column, self.label_column, self.processor = split, image_column, label_column, processor

    def __len__(self) -> int:
        return len(self.split)

    def image(self, index: int) -> Image.Image:
        """The decoded RGB image of row `index`."""
        return decode_image(self.split[int(index)][self.image_column], f"row {index} of the validation split")

    def label(self, index: int) -> int:
        return int(self.split[int(index)][self.label_column])

    def __getitem__(self, index: int) -> dict:
        pixels = self.processor(self.image(index), return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "labels": self.label(index)}


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation of `range(length)` that depends on `(seed, epoch)` only (`set_epoch`), never on global RNG
    state: every process draws the same order, and a resumed run the same order as an uninterrupted one."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


def collate(examples: Sequence[dict]) -> dict:
    """Stack `pixel_values` (B, 3, S, S) and `labels` (B,) of a list of examples."""
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([int(example["labels"]) for example in examples]),
    }
