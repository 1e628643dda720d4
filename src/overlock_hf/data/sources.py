"""Where the images come from: the embedded digits, a local image folder or a Hub dataset.

`load_image_dataset` returns a `DatasetDict` with `train` and `validation` splits. A local folder is checked
before `datasets` reads it, so that its problems are named: a path that does not exist ("no such folder"), no
files, an empty class folder (`datasets` would silently drop that class), a single class folder (`datasets`
would then return no label column at all).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..progress import quiet_progress_bars
from .errors import FinetuningError

__all__ = ["DIGITS", "DIGITS_IMAGE_SIZE", "check_image_folder", "load_image_dataset", "looks_like_path",
           "select_subsets"]

DIGITS = "digits"  # the name of the embedded dataset
DIGITS_IMAGE_SIZE = 64
SPLIT_FOLDERS = ("train", "validation", "valid", "val", "test")


def looks_like_path(name: str) -> bool:
    """Whether `name` is meant as a local path rather than a Hub id (`org/name`) or a short name: it starts with
    `/`, `.`, `~` or a drive, holds a backslash or more than one `/`, or its first component exists here."""
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or Path(name).drive:
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


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


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_image_folder(folder: str | Path) -> None:
    """Check the layout of an image folder (`<folder>/<class>/<image>`, or `train/`, `validation/`... sub-folders
    each laid out so); raises `FinetuningError` naming a missing folder, a folder without files, empty class
    folders or a single class."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FinetuningError(f"no such folder: {folder} (--dataset takes 'digits', an image folder "
                              "<folder>/<class name>/<image> or a Hub dataset id org/name)")
    if not any(p.is_file() for p in folder.rglob("*")):
        raise FinetuningError(f"image folder {folder} holds no files (expected <folder>/<class name>/<image>)")
    roots = [p for p in _visible_dirs(folder) if p.name in SPLIT_FOLDERS] or [folder]
    for root in roots:
        classes = _visible_dirs(root)
        empty = [c.name for c in classes if not any(p.is_file() for p in c.rglob("*"))]
        if empty:
            raise FinetuningError(f"image folder {root}: class folder(s) {empty} hold no images; add images or "
                                  "remove the folder(s)")
        if len(classes) < 2:
            found = f"only one class folder ({classes[0].name!r})" if classes else "no class folders"
            raise FinetuningError(f"image folder {root} has {found}: classification needs at least two classes, "
                                  "one sub-folder per class (<folder>/<class name>/<image>)")


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
    from datasets import load_dataset

    with quiet_progress_bars():
        if Path(dataset).is_dir() or looks_like_path(dataset):
            check_image_folder(dataset)
            splits = load_dataset("imagefolder", data_dir=str(dataset))
        else:
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
    try:
        parts = train.train_test_split(test_size=validation_fraction, seed=seed, stratify_by_column=stratify)
    except ValueError as error:  # e.g. fewer held-out images than classes for a stratified split
        raise FinetuningError(f"cannot hold out a validation split of {validation_fraction} of {len(train)} "
                              f"images: {error}; add images, or a validation/ folder, or change "
                              "--validation_fraction") from error
    return DatasetDict(train=parts["train"], validation=parts["test"])


def select_subsets(splits, max_train_samples: int | None, max_eval_samples: int | None):
    """`splits` with `train` / `validation` cut to their first `max_train_samples` / `max_eval_samples` rows."""
    for split_name, limit in (("train", max_train_samples), ("validation", max_eval_samples)):
        if limit is not None:
            splits[split_name] = splits[split_name].select(range(min(limit, len(splits[split_name]))))
    return splits
