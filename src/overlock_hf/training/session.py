"""A fine-tuning run's set-up, resolved once into one object that both example scripts use.

`prepare_finetuning(options)` checks what can be checked before anything slow happens (the `--model` name, the
`--push_to_hub` login), then loads and checks the data, builds the model, and derives the image size, the
augmentation and the evaluation processor from the one resolved `--model` (its processor loaded once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data import (
    DIGITS,
    DIGITS_IMAGE_SIZE,
    EvalImageDataset,
    TrainImageDataset,
    check_image_files,
    load_image_dataset,
    prepare_columns,
    select_subsets,
)
from ..image_processing_overlock import make_image_processor
from ..progress import quiet_progress_bars
from ..training_transforms import TrainTransform
from .models import ModelSource, build_model, resolve_model_source
from .output import check_push_target

__all__ = ["FinetuningSetup", "prepare_finetuning", "resolve_augmentation"]


@dataclass
class FinetuningSetup:
    """Everything a training loop needs, decided once. `train_set` / `eval_set` yield `{"pixel_values":
    (3, image_size, image_size), "labels": int}`; `processor` is the evaluation image processor."""

    source: ModelSource
    model: object
    label_names: list[str]
    image_size: int
    hflip_prob: float
    crop_scale_min: float
    processor: object
    train_set: TrainImageDataset
    eval_set: EvalImageDataset

    def summary(self) -> str:
        """One line: images, classes, input size and parameter count."""
        parameters = sum(p.numel() for p in self.model.parameters()) / 1e6
        return (f"{len(self.train_set)} train / {len(self.eval_set)} validation images, {len(self.label_names)} "
                f"classes, {self.image_size}px, {parameters:.2f} M parameters")


def resolve_augmentation(dataset: str, image_size: int | None, hflip_probability: float | None,
                         crop_scale_min: float | None, model_image_size: int | None) -> tuple[int, float, float]:
    """Defaults of `(image_size, hflip_probability, crop_scale_min)` where the user gave none.

    The digits: 64 px, no flip (a mirrored digit is not the same digit), crops of at least half the area. Other
    data: the checkpoint's processor size (else 224), flip 0.5, crop scale from 0.08 (the ImageNet recipe).
    """
    digits = dataset == DIGITS
    if image_size is None:
        image_size = DIGITS_IMAGE_SIZE if digits else (model_image_size or 224)
    if hflip_probability is None:
        hflip_probability = 0.0 if digits else 0.5
    if crop_scale_min is None:
        crop_scale_min = 0.5 if digits else 0.08
    return image_size, hflip_probability, crop_scale_min


def _eval_processor(source: ModelSource, config, image_size: int):
    """The checkpoint's own processor when it already works at `image_size`, else the OverLoCK eval transform for
    `config.crop_pct` at `image_size`."""
    own = source.processor()
    if own is not None and getattr(own, "size", None) == {"shortest_edge": image_size}:
        return own
    return make_image_processor(getattr(config, "crop_pct", 0.875), image_size)


def prepare_finetuning(options, main_process_first: Callable[[], contextlib.AbstractContextManager] | None = None,
                       ) -> FinetuningSetup:
    """Resolve the run described by `options` (the example scripts' parsed arguments: `model`, `dataset`,
    `dataset_config`, `validation_fraction`, `seed`, `image_column`, `label_column`, `max_train_samples`,
    `max_eval_samples`, `image_size`, `hflip_prob`, `crop_scale_min`, `drop_path_rate`, `aux_loss_weight`,
    `ignore_mismatched_sizes`, `push_to_hub`).

    `main_process_first` (e.g. `accelerator.main_process_first`) guards the dataset download / cache writing.
    Raises `FinetuningError` for anything the user can fix.
    """
    source = resolve_model_source(options.model)
    if options.push_to_hub:
        check_push_target(options.push_to_hub)
    with (main_process_first or contextlib.nullcontext)():
        splits = load_image_dataset(options.dataset, options.dataset_config, options.validation_fraction, options.seed)
        with quiet_progress_bars():
            splits, image_column, label_column, names = prepare_columns(splits, options.image_column,
                                                                        options.label_column)
    splits = select_subsets(splits, options.max_train_samples, options.max_eval_samples)
    if Path(options.dataset).is_dir():
        for split in splits.values():
            check_image_files(split, image_column)
    model = build_model(source, names, drop_path_rate=options.drop_path_rate, aux_loss_weight=options.aux_loss_weight,
                        ignore_mismatched_sizes=options.ignore_mismatched_sizes)
    image_size, hflip, crop_min = resolve_augmentation(
        options.dataset, options.image_size, options.hflip_prob, options.crop_scale_min, source.image_size()
    )
    processor = _eval_processor(source, model.config, image_size)
    transform = TrainTransform(image_size, scale=(crop_min, 1.0), hflip_probability=hflip,
                               mean=processor.image_mean, std=processor.image_std)
    return FinetuningSetup(
        source=source, model=model, label_names=names, image_size=image_size, hflip_prob=hflip,
        crop_scale_min=crop_min, processor=processor,
        train_set=TrainImageDataset(splits["train"], image_column, label_column, transform, options.seed),
        eval_set=EvalImageDataset(splits["validation"], image_column, label_column, processor),
    )
