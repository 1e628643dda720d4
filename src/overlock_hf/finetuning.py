"""Building blocks of the fine-tuning examples (`examples/finetune_accelerate.py`, `examples/finetune_trainer.py`).

* data: the embedded digits set (scikit-learn's 8x8 digits upscaled to RGB, no download), an image folder
  (`datasets` "imagefolder", offline) or a Hub dataset; image / label columns found or checked with clear errors;
  images decoded by this module so that an unreadable file is reported by name;
* models: `compact` (a small OverLoCK that trains in minutes on a CPU), a released variant trained from scratch
  (`overlock-xt`, `-t`, `-s`, `-b`), or a checkpoint (Hub id or local folder);
* the loss (main + auxiliary Overview-Net cross-entropy, with label smoothing), weight-decay parameter groups, a
  JSON-lines tracker for Accelerate, the offline accuracy metric, and writing / previewing the final folder.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch import nn

from .configuration_overlock import ABLATIONS, VARIANTS, OverLoCKConfig
from .image_processing_overlock import make_image_processor, save_image_processor, to_rgb
from .training_transforms import TrainTransform

__all__ = [
    "COMPACT_CONFIG",
    "DIGITS",
    "EpochShuffleSampler",
    "EvalImageDataset",
    "FinetuningError",
    "JSONLinesTracker",
    "TrainImageDataset",
    "accuracy_metric_path",
    "batch_transform",
    "build_model",
    "check_image_files",
    "checkpoint_image_size",
    "classification_loss",
    "collate",
    "decode_image",
    "draw_prediction_grid",
    "eval_processor",
    "load_image_dataset",
    "make_train_transform",
    "parameter_groups",
    "prepare_columns",
    "preview_predictions",
    "resolve_augmentation",
    "save_model_folder",
    "state_dict_digest",
]

DIGITS = "digits"  # the name of the embedded dataset
DIGITS_IMAGE_SIZE = 64
IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels")

# A compact OverLoCK (0.5 M parameters, every architectural part present) that fine-tunes on the digits in
# minutes on two CPU cores. Its Focus-Net maps (4x4 and 2x2 at 64x64 inputs) are smaller than its ContMix kernels,
# so the model's small-input path (bilinear upsize to the kernel, pool back) runs.
COMPACT_CONFIG = dict(
    depths=[1, 1, 1, 1], focus_depths=[1, 1], hidden_sizes=[16, 32, 64, 96], kernel_sizes=[7, 7, 5, 5],
    small_kernel_size=3, focus_num_heads=[2, 2], projection_dim=128, drop_path_rate=0.05,
)


class FinetuningError(ValueError):
    """A problem with the data, the model or the options that the user can fix; the message says how."""


# ------------------------------------------------------------------------------------------------ data
def add_data_and_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The data and model options both example scripts share (defaults: the compact model on the digits)."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=DIGITS,
                      help="'digits' (embedded), an image folder (<dir>/<class>/<image>) or a Hub dataset id")
    data.add_argument("--dataset_config", default=None, help="configuration name of a Hub dataset")
    data.add_argument("--image_column", default=None, help="image column (default: 'image' or 'img')")
    data.add_argument("--label_column", default=None, help="label column (default: 'label' or 'labels')")
    data.add_argument("--validation_fraction", type=float, default=0.2,
                      help="share of train held out when the dataset has no validation/test split")
    data.add_argument("--max_train_samples", type=int, default=None, help="use only the first N training images")
    data.add_argument("--max_eval_samples", type=int, default=None, help="use only the first N validation images")
    data.add_argument("--image_size", type=int, default=None,
                      help="training crop / eval size (default: 64 for digits, else the checkpoint's, else 224)")
    data.add_argument("--hflip_prob", type=float, default=None, help="horizontal flip chance (default: 0 digits, 0.5)")
    data.add_argument("--crop_scale_min", type=float, default=None,
                      help="smallest random-resized-crop area fraction (default: 0.5 digits, 0.08)")
    data.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="compact",
                       help="'compact', a variant to train from scratch (overlock-xt/-t/-s/-b), a folder or Hub id")
    model.add_argument("--ignore_mismatched_sizes", action="store_true",
                       help="replace a checkpoint's classifier heads when its class count differs from the data's")
    model.add_argument("--drop_path_rate", type=float, default=None, help="override the config's stochastic depth")
    model.add_argument("--aux_loss_weight", type=float, default=None,
                       help="override the weight of the auxiliary Overview-Net loss (config default 0.4)")
    model.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations in backward")


def _digits_dataset(seed: int, validation_fraction: float):
    """scikit-learn's digits (1797 images, 10 classes), upscaled to 64x64 RGB, split stratified into
    train / validation."""
    import numpy as np
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    images = [
        Image.fromarray(p, mode="L").resize((DIGITS_IMAGE_SIZE,) * 2, Image.BICUBIC).convert("RGB") for p in pixels
    ]
    labels = [int(t) for t in digits.target]
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=validation_fraction, random_state=seed, stratify=labels
    )
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[str(d) for d in range(10)])})

    def split(indices):
        return Dataset.from_dict({"image": [images[i] for i in indices], "label": [labels[i] for i in indices]},
                                 features=features)

    return DatasetDict(train=split(train_idx), validation=split(val_idx))


def _image_folder_dataset(data_dir: Path):
    from datasets import load_dataset

    files = [p for p in data_dir.rglob("*") if p.is_file()]
    if not files:
        raise FinetuningError(f"image folder {data_dir} holds no files (expected <folder>/<class name>/<image>)")
    return load_dataset("imagefolder", data_dir=str(data_dir))


def load_image_dataset(dataset: str, dataset_config: str | None = None, validation_fraction: float = 0.2,
                       seed: int = 0):
    """A `DatasetDict` with `train` and `validation` splits.

    Args:
        dataset: `"digits"` (embedded), a local image folder (`<folder>/<class>/<image>`, or with `train/` and
            `validation/` (or `test/`) sub-folders), or a Hub dataset id.
        dataset_config: the Hub dataset's configuration name, if it has several.
        validation_fraction: share of `train` held out (stratified when labels are a `ClassLabel`) when the
            dataset has no `validation` or `test` split.
        seed: of that split.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise FinetuningError(f"--validation_fraction must be in (0, 1), got {validation_fraction}")
    if dataset == DIGITS:
        return _digits_dataset(seed, validation_fraction)
    if Path(dataset).is_dir():
        splits = _image_folder_dataset(Path(dataset))
    else:
        from datasets import load_dataset

        splits = load_dataset(dataset, dataset_config)
    if "train" not in splits:
        raise FinetuningError(f"dataset {dataset!r} has no 'train' split (splits: {sorted(splits)})")
    if "validation" not in splits:
        if "test" in splits:
            splits["validation"] = splits.pop("test")
        else:
            splits = _split_off_validation(splits["train"], validation_fraction, seed)
    return splits


def _split_off_validation(train, validation_fraction: float, seed: int):
    from datasets import ClassLabel, DatasetDict

    stratify = next((name for name, feature in train.features.items() if isinstance(feature, ClassLabel)), None)
    parts = train.train_test_split(test_size=validation_fraction, seed=seed, stratify_by_column=stratify)
    return DatasetDict(train=parts["train"], validation=parts["test"])


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


def check_image_files(split, image_column: str) -> None:
    """Open every image file of `split` (header check, no full decode); one error listing the unreadable ones."""
    bad = []
    for row, item in enumerate(split[image_column]):
        try:
            with _open(item) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            bad.append(f"{item.get('path') or f'row {row}'} ({type(error).__name__}: {error})")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise FinetuningError(f"{len(bad)} unreadable image(s): {'; '.join(bad[:5])}{more}. Remove or replace them.")


def _open(item: dict) -> Image.Image:
    if item.get("bytes") is not None:
        return Image.open(io.BytesIO(item["bytes"]))
    if item.get("path"):
        return Image.open(item["path"])
    raise FinetuningError(f"image entry without bytes or path: {item!r}")


def decode_image(item: dict, where: str = "") -> Image.Image:
    """Decode an undecoded `datasets.Image` entry (`{"bytes", "path"}`) to an RGB PIL image; a file that cannot be
    read raises `FinetuningError` naming it."""
    try:
        with _open(item) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        name = item.get("path") or where or "an image"
        raise FinetuningError(f"cannot read image {name}: {type(error).__name__}: {error}") from error


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


def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from `(seed, epoch, index)` only: augmentation independent of the iteration history."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + index) % (2**63))


class TrainImageDataset(torch.utils.data.Dataset):
    """Training view of a split: `{"pixel_values": (3, S, S), "labels": int}` with random augmentation.

    The augmentation of sample `i` in epoch `e` is drawn from a generator seeded with `(seed, e, i)`, so it does
    not depend on the global RNG or on which batches were skipped: a run resumed mid-epoch sees the same crops
    as an uninterrupted one. Call `set_epoch` before each epoch.
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


# ------------------------------------------------------------------------------------------------ model
def _model_kind(model: str) -> str:
    """`"checkpoint"` (local folder or Hub id), `"compact"`, `"variant"` or `"ablation"` (a preset of `ABLATIONS`)."""
    if Path(model).is_dir():
        return "checkpoint"
    if model == "compact":
        return "compact"
    if model in ABLATIONS:
        return "ablation"
    key = model.lower().replace("_", "-")
    if key in VARIANTS or f"overlock-{key}" in VARIANTS:
        return "variant"
    return "checkpoint"


def build_model(model: str, label_names: Sequence[str], *, drop_path_rate: float | None = None,
                aux_loss_weight: float | None = None, ignore_mismatched_sizes: bool = False):
    """An `OverLoCKForImageClassification` (or any `AutoModelForImageClassification`) for `label_names`.

    Args:
        model: `"compact"`, a variant name (`overlock-xt`, `t`, ...: random init, from scratch), an ablation preset
            (`kernels-9-9-7`, `hierarchical`, ...: from scratch), a local folder or a Hub id (fine-tuning).
        label_names: the dataset's class names, in label order; written into `id2label` / `label2id`.
        drop_path_rate, aux_loss_weight: override the configuration's values when given.
        ignore_mismatched_sizes: allow a checkpoint whose head has another number of classes; its classifiers
            are then re-initialized. Without it such a mismatch raises `FinetuningError`.
    """
    from transformers import AutoConfig, AutoModelForImageClassification

    id2label = {i: name for i, name in enumerate(label_names)}
    label2id = {name: i for i, name in id2label.items()}
    overrides = {k: v for k, v in (("drop_path_rate", drop_path_rate), ("aux_loss_weight", aux_loss_weight))
                 if v is not None}
    kind = _model_kind(model)
    if kind != "checkpoint":
        fields = dict(COMPACT_CONFIG, **overrides) if kind == "compact" else overrides
        fields.update(num_labels=len(label_names), id2label=id2label, label2id=label2id)
        build = {"compact": OverLoCKConfig, "variant": lambda **f: OverLoCKConfig.from_variant(model, **f),
                 "ablation": lambda **f: OverLoCKConfig.from_ablation(model, **f)}[kind]
        config = build(**fields)
        return AutoModelForImageClassification.from_config(config)
    checkpoint_labels = AutoConfig.from_pretrained(model).num_labels
    if checkpoint_labels != len(label_names) and not ignore_mismatched_sizes:
        raise FinetuningError(
            f"model {model!r} has a {checkpoint_labels}-class head but the dataset has {len(label_names)} classes; "
            f"pass --ignore_mismatched_sizes to replace the head(s) with freshly initialized {len(label_names)}-class "
            "ones, or use a dataset with the checkpoint's classes"
        )
    return AutoModelForImageClassification.from_pretrained(
        model, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=ignore_mismatched_sizes, **overrides
    )


def checkpoint_image_size(model: str) -> int | None:
    """The input size of a checkpoint's own image processor (`shortest_edge` or `height`), if it ships one."""
    if _model_kind(model) != "checkpoint":
        return None
    from transformers import AutoImageProcessor

    try:
        size = AutoImageProcessor.from_pretrained(model).size
    except (OSError, ValueError):
        return None
    return size.get("shortest_edge") or size.get("height")


def eval_processor(model: str, config, image_size: int):
    """The evaluation image processor: the checkpoint's own (resized to `image_size`) if it ships one, else the
    OverLoCK eval transform for `config.crop_pct` at `image_size`."""
    crop_pct = getattr(config, "crop_pct", 0.875)
    if _model_kind(model) == "checkpoint":
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(model)
        except (OSError, ValueError):
            return make_image_processor(crop_pct, image_size)
        if getattr(processor, "size", None) == {"shortest_edge": image_size}:
            return processor
    return make_image_processor(crop_pct, image_size)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on the weights of convolutions and linear layers only.

    Exempt: every bias, the BatchNorm / LayerNorm affine parameters, LayerScale (`weight`, `bias`), GRN
    (`gamma`, `beta`) and the ContMix relative-position bias tables (`rpb_small`, `rpb_large`); these are
    scales, offsets and biases, which decay would pull toward zero (LayerScale toward switching a shortcut off).
    """
    decay, no_decay = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            is_matrix = isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight"
            (decay if is_matrix else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def classification_loss(outputs, labels: torch.Tensor, label_smoothing: float = 0.0, aux_loss_weight: float = 0.0,
                        num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """`CE(logits) + aux_loss_weight * CE(aux_logits)`, both with label smoothing, in float32.

    The model computes the same loss itself when called with `labels`, but without label smoothing, hence this
    function. `aux_logits` exist in training mode only (eval: main loss only). With `num_items_in_batch` (the
    Trainer's count over the accumulated micro-batches) the summed loss is divided by it instead of averaged.
    """
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = F.cross_entropy(outputs.logits.float(), labels, label_smoothing=label_smoothing, reduction=reduction)
    aux_logits = getattr(outputs, "aux_logits", None)
    if aux_logits is not None and aux_loss_weight > 0:
        aux = F.cross_entropy(aux_logits.float(), labels, label_smoothing=label_smoothing, reduction=reduction)
        loss = loss + aux_loss_weight * aux
    if num_items_in_batch is not None:
        loss = loss / num_items_in_batch
    return loss


# ------------------------------------------------------------------------------------------------ logging, metric
def accuracy_metric_path() -> str:
    """Path of the accuracy metric script shipped with the package (`evaluate.load(path)` works offline)."""
    return str(Path(__file__).resolve().parent / "metrics" / "accuracy.py")


def _json_safe(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def _tracker_base():
    from accelerate.tracking import GeneralTracker

    return GeneralTracker


class JSONLinesTracker(_tracker_base()):
    """An Accelerate tracker writing `<logging_dir>/metrics.jsonl` (one `{"step": ..., **values}` object per
    `accelerator.log` call) and the run configuration to `<logging_dir>/config.json`. No extra dependency."""

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | Path):
        super().__init__()
        self.run_name = run_name
        self.logging_dir = Path(logging_dir)
        self.path = self.logging_dir / "metrics.jsonl"

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        config = {"run_name": self.run_name, **{k: _json_safe(v) for k, v in values.items()}}
        (self.logging_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        record = {"step": step, **{k: _json_safe(v) for k, v in values.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------------------------------------ output
def save_model_folder(model, folder: str | Path, image_size: int, card_note: str = "") -> Path:
    """Write a complete, loadable model folder: weights + config + code (`save_pretrained`), the eval
    `preprocessor_config.json` at `image_size`, and a model card (`README.md`) with `card_note` appended."""
    from .model_card import render_model_card

    folder = Path(folder)
    model.save_pretrained(folder)
    save_image_processor(folder, getattr(model.config, "crop_pct", 0.875), image_size=image_size)
    card = render_model_card(model.config)
    if card_note:
        card = card.rstrip() + "\n\n" + card_note.strip() + "\n"
    (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


def draw_prediction_grid(images: Sequence[Image.Image], predicted: Sequence[str], true: Sequence[str],
                         columns: int = 4, cell: int = 128) -> Image.Image:
    """A PNG-ready grid: each image with "pred X / true Y" under it (green when right, red when wrong)."""
    rows = max(1, -(-len(images) // columns))
    caption = 18
    grid = Image.new("RGB", (columns * cell, rows * (cell + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, pred, ref) in enumerate(zip(images, predicted, true)):
        x, y = (i % columns) * cell, (i // columns) * (cell + caption)
        grid.paste(image.convert("RGB").resize((cell - 8, cell - 8), Image.NEAREST), (x + 4, y + 4))
        colour = (0, 128, 0) if pred == ref else (200, 0, 0)
        draw.text((x + 4, y + cell), f"pred {pred} / true {ref}", fill=colour)
    return grid


def preview_predictions(model_dir: str | Path, images: Sequence[Image.Image], true: Sequence[str],
                        png_path: str | Path) -> list[tuple[str, float]]:
    """Reload `model_dir` with `AutoModelForImageClassification` and run the `image-classification` pipeline on
    `images`; writes the prediction grid to `png_path`. Returns `(top label, score)` per image."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    model = AutoModelForImageClassification.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    classify = pipeline("image-classification", model=model, image_processor=processor, device="cpu")
    top = [result[0] for result in classify(list(images), top_k=1)]
    predictions = [(item["label"], float(item["score"])) for item in top]
    draw_prediction_grid(images, [label for label, _ in predictions], true).save(png_path)
    return predictions


def state_dict_digest(model: nn.Module) -> str:
    """SHA-256 over every tensor of `model.state_dict()` (names, shapes, float32 bytes), for comparing replicas."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def make_train_transform(image_size: int, hflip_probability: float, crop_scale_min: float, processor) -> TrainTransform:
    """The training augmentation, normalized like `processor` (its `image_mean` / `image_std`)."""
    return TrainTransform(image_size, scale=(crop_scale_min, 1.0), hflip_probability=hflip_probability,
                          mean=processor.image_mean, std=processor.image_std)


def batch_transform(image_column: str, label_column: str, transform: Callable) -> Callable[[dict], dict]:
    """A `datasets.Dataset.with_transform` function: decode + `transform` each image (global RNG), keep labels."""
    def apply(batch: dict) -> dict:
        pixels = [transform(decode_image(item)) for item in batch[image_column]]
        return {"pixel_values": pixels, "labels": list(batch[label_column])}

    return apply


def collate(examples: Sequence[dict]) -> dict:
    """Stack `pixel_values` and `labels` of a list of examples."""
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([int(example["labels"]) for example in examples]),
    }
