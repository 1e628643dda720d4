"""Evaluation data: image folders and `datasets` data sets, decoded and preprocessed in DataLoader workers.

An *image folder* holds one sub-folder per class (``ROOT/CLASS/**/*.jpg``; the class name is the sub-folder's
name). A *dataset* is a Hub id, a folder written by ``Dataset.save_to_disk`` or a folder ``datasets.load_dataset``
reads (Parquet, ...), with an ``image`` and a ``label`` column. Images are decoded here, not by ``datasets``, so a
corrupt file is reported by name (or counted, with ``skip_corrupt``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..image_processing_overlock import to_rgb
from .labels import EvaluationError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
DATASET_MARKERS = ("state.json", "dataset_dict.json")
DATA_FILE_PATTERNS = ("*.parquet", "*.arrow", "*/*.parquet", "*/*.arrow")
PREFERRED_SPLITS = ("validation", "val", "test", "train")


@dataclass
class EvalSamples:
    """The images of one evaluation set: `sources[i]` (a path, or a row of a dataset) with class `names[i]`.

    `class_names` lists the distinct names (a dataset's ``ClassLabel`` names, in label order). For a dataset,
    `dataset` is the `datasets.Dataset` (image column not decoded), `values[i]` the integer label of row i, and
    `integer_labels` is True when the labels are plain integers without class names (see
    `labels.integer_label_indices`).
    """

    description: str
    sources: list
    names: list[str]
    class_names: list[str]
    dataset: object = None
    values: list[int] | None = None
    integer_labels: bool = False


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def scan_image_folder(root: str | Path) -> EvalSamples:
    """Every image under ``root/CLASS/`` (recursively, sorted), named by its class folder.

    Raises:
        FileNotFoundError: `root` is not a folder.
        EvaluationError: no class sub-folders, or no images in them (an empty data set).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data is not a folder: {root}" if root.exists() else f"data not found: {root}")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise EvaluationError(f"{root} has no class sub-folders (expected ROOT/CLASS/image.jpg)")
    sources, names = [], []
    for folder in classes:
        images = sorted(p for p in folder.rglob("*") if _is_image(p))
        sources.extend(str(p) for p in images)
        names.extend([folder.name] * len(images))
    if not sources:
        raise EvaluationError(f"empty data set: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}")
    return EvalSamples(str(root), sources, names, sorted(set(names)))


def _import_datasets():
    try:
        import datasets
    except ImportError as error:
        raise ImportError("evaluating a `datasets` data set needs `pip install overlock-hf[training]`") from error
    return datasets


def _pick_split(available: list[str], data: str) -> str:
    if len(available) == 1:
        return available[0]
    for split in PREFERRED_SPLITS:
        if split in available:
            return split
    raise EvaluationError(f"{data} has splits {available}: choose one with --split")


def load_dataset_split(data: str, split: str | None = None):
    """The `datasets.Dataset` of `data` (Hub id or local folder) and `split` (default: the only one, else
    validation / val / test / train), with its ``image`` column left undecoded."""
    datasets = _import_datasets()
    path = Path(data)
    if path.is_dir() and any((path / marker).is_file() for marker in DATASET_MARKERS):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            split = split or _pick_split(list(loaded), data)
            if split not in loaded:
                raise EvaluationError(f"{data} has no split {split!r}; it has {list(loaded)}")
            loaded = loaded[split]
    else:
        split = split or _pick_split(datasets.get_dataset_split_names(data), data)
        loaded = datasets.load_dataset(data, split=split)
    missing = [column for column in ("image", "label") if column not in loaded.column_names]
    if missing:
        raise EvaluationError(f"{data}: no column {' / '.join(missing)} (columns: {loaded.column_names})")
    if isinstance(loaded.features["image"], datasets.Image):
        loaded = loaded.cast_column("image", datasets.Image(decode=False))
    return loaded


def dataset_samples(data: str, split: str | None = None) -> EvalSamples:
    """`EvalSamples` of a dataset: class names from a ``ClassLabel`` ``label`` column, else integer labels."""
    dataset = load_dataset_split(data, split)
    if len(dataset) == 0:
        raise EvaluationError(f"empty data set: {data} (split {split or 'default'}) has no rows")
    feature = dataset.features["label"]
    values = [int(value) for value in dataset["label"]]
    if min(values) < 0:
        raise EvaluationError(f"{data}: {sum(v < 0 for v in values)} rows have a negative label (unlabeled rows)")
    rows = list(range(len(dataset)))
    if getattr(feature, "names", None):
        names = [feature.names[value] for value in values]
        return EvalSamples(data, rows, names, list(feature.names), dataset, values)
    names = [str(value) for value in values]
    return EvalSamples(data, rows, names, sorted(set(names), key=int), dataset, values, True)


def is_dataset(data: str | Path) -> bool:
    """Whether `data` names a `datasets` data set rather than an image folder: a Hub id (no such local path), a
    ``save_to_disk`` folder, or a folder holding data files (``*.parquet`` / ``*.arrow``, also one level down)."""
    path = Path(data)
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    if any((path / marker).is_file() for marker in DATASET_MARKERS):
        return True
    return any(next(path.glob(pattern), None) for pattern in DATA_FILE_PATTERNS)


def load_samples(data: str | Path, split: str | None = None) -> EvalSamples:
    """`EvalSamples` of an image folder or a dataset (see `is_dataset`)."""
    text = str(data)
    if not Path(text).exists() and (Path(text).is_absolute() or text.startswith((".", "~"))):
        raise FileNotFoundError(f"data not found: {text}")
    return dataset_samples(text, split) if is_dataset(text) else scan_image_folder(text)


def open_image(source) -> Image.Image:
    """Decode an image file path, or a dataset's undecoded image (``{"bytes", "path"}``), fully, as 8-bit RGB."""
    if isinstance(source, dict):
        stream = io.BytesIO(source["bytes"]) if source.get("bytes") else source["path"]
    elif isinstance(source, Image.Image):
        return to_rgb(source)
    else:
        stream = source
    with Image.open(stream) as image:
        image.load()
        return to_rgb(image)


class CenterCropTransform:
    """Resize the shorter side to ``floor(image_size / crop_pct)`` (bicubic), center crop ``image_size``.

    The timm / official evaluation transform (long side ``int(new_short * long / short)``, crop offsets rounded
    half-to-even). Returns a uint8 tensor (3, image_size, image_size); normalization happens on the device.
    """

    def __init__(self, image_size: int, crop_pct: float):
        if not 0.0 < crop_pct <= 1.0:
            raise EvaluationError(f"--crop-pct must be in (0, 1], got {crop_pct}")
        if image_size < 1:
            raise EvaluationError(f"--image-size must be positive, got {image_size}")
        self.image_size, self.crop_pct = int(image_size), float(crop_pct)
        self.scale_size = math.floor(self.image_size / self.crop_pct)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        if width <= height:
            size = (self.scale_size, int(self.scale_size * height / width))
        else:
            size = (int(self.scale_size * width / height), self.scale_size)
        image = image.resize(size, Image.BICUBIC)
        left = int(round((size[0] - self.image_size) / 2.0))
        top = int(round((size[1] - self.image_size) / 2.0))
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


class ProcessorTransform:
    """A transformers image processor applied to one image: float tensor (3, H, W), already normalized."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


class EvalDataset(torch.utils.data.Dataset):
    """Item ``i``: ``(pixels or None, label, i, error message or None)``; decoding errors are returned, not raised."""

    def __init__(self, samples: EvalSamples, labels: list[int], transform: Callable[[Image.Image], torch.Tensor]):
        self.samples, self.labels, self.transform = samples, labels, transform

    def describe(self, index: int) -> str:
        """The file (or dataset row) of item `index`, for messages."""
        if self.samples.dataset is None:
            return str(self.samples.sources[index])
        image = self.samples.dataset[index]["image"]
        path = image.get("path") if isinstance(image, dict) else None
        return f"row {index} of {self.samples.description}" + (f" ({path})" if path else "")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        try:
            source = self.samples.sources[index]
            if self.samples.dataset is not None:
                source = self.samples.dataset[index]["image"]
            return self.transform(open_image(source)), self.labels[index], index, None
        except Exception as error:  # any decoding failure (truncated, not an image, unsupported mode) is reported
            return None, self.labels[index], index, f"{type(error).__name__}: {error}"


def collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor, list[tuple[int, str]]]:
    """Stack the decoded items: ``(pixels (B, 3, H, W) or None, labels (B,), [(index, error), ...])``."""
    good = [item for item in items if item[3] is None]
    failed = [(item[2], item[3]) for item in items if item[3] is not None]
    pixels = torch.stack([item[0] for item in good]) if good else None
    return pixels, torch.tensor([item[1] for item in good], dtype=torch.long), failed


def make_loader(dataset: EvalDataset, indices: list[int], batch_size: int, num_workers: int, pin_memory: bool):
    """A DataLoader over `indices` of `dataset`, in order, with `collate`."""
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=collate, pin_memory=pin_memory,
    )
