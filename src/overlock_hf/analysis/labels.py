"""The label conventions of the evaluation benchmarks: class names of a data set -> class indices of a model.

=================== ================================ ========================= ==============================
benchmark           class names (folders / dataset)  mapped by                 logits
=================== ================================ ========================= ==============================
``imagenet``        wnids ``n01440764`` ...           the wnid's ImageNet index all 1000
``imagenet-sketch`` wnids                            the wnid's ImageNet index all 1000
``imagenet-v2``     class indices ``0`` ... ``999``   the integer value         all 1000
``imagenet-a``      200 wnids                        the wnid's ImageNet index restricted to the 200 classes
``imagenet-r``      200 wnids                        the wnid's ImageNet index restricted to the 200 classes
``folder``          the model's label names          ``config.label2id``       all of the model's classes
=================== ================================ ========================= ==============================

The wnid order and the subsets are package data (``data/imagenet_label_sets.json``, built by
``scripts/build_imagenet_label_sets.py`` from the public lists). Folder names are never mapped by their sorted
position: a string sort puts ``100`` before ``2``.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

BENCHMARKS = ("imagenet", "imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch", "folder")
IMAGENET_BENCHMARKS = BENCHMARKS[:-1]
SUBSET_BENCHMARKS = ("imagenet-a", "imagenet-r")
LABEL_SETS_FILE = Path(__file__).resolve().parents[1] / "data" / "imagenet_label_sets.json"
_WNID = re.compile(r"^n\d{8}$")
_INDEX = re.compile(r"^\d+$")


class EvaluationError(ValueError):
    """A data set, model or option that cannot give a valid evaluation (raised before anything is written)."""


@functools.cache
def _label_sets() -> dict:
    return json.loads(LABEL_SETS_FILE.read_text())


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1K WordNet ids in class-index order (index 0 = ``n01440764``, tench)."""
    return tuple(_label_sets()["imagenet_wnids"])


@functools.cache
def _wnid_index() -> dict[str, int]:
    return {wnid: index for index, wnid in enumerate(imagenet_wnids())}


def subset_indices(benchmark: str) -> tuple[int, ...] | None:
    """The sorted ImageNet indices of a 200-class benchmark's classes (``imagenet-a`` / ``imagenet-r``), else None."""
    indices = _label_sets()["subsets"].get(benchmark)
    return tuple(indices) if indices is not None else None


def check_benchmark(benchmark: str) -> None:
    """Raise `EvaluationError` unless `benchmark` is one of `BENCHMARKS`."""
    if benchmark not in BENCHMARKS:
        raise EvaluationError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")


def check_model_classes(benchmark: str, config) -> None:
    """ImageNet benchmarks need a 1000-class model in the ImageNet class order; `folder` needs `label2id`."""
    num_labels = int(config.num_labels)
    if benchmark in IMAGENET_BENCHMARKS and num_labels != 1000:
        raise EvaluationError(
            f"benchmark {benchmark!r} needs a model with the 1000 ImageNet-1K classes; this model has {num_labels} "
            "(use --benchmark folder to evaluate it on a data set of its own labels)"
        )


def _describe(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _hint(benchmark: str, names: list[str]) -> str:
    if benchmark == "imagenet-v2" and any(_WNID.match(name) for name in names):
        return " (they look like wnids: use --benchmark imagenet, imagenet-sketch, imagenet-a or imagenet-r)"
    if benchmark in IMAGENET_BENCHMARKS and benchmark != "imagenet-v2" and all(_INDEX.match(n) for n in names):
        return " (they look like class indices, the ImageNet-V2 layout: use --benchmark imagenet-v2)"
    return ""


def _index_of(benchmark: str, name: str, config) -> int | None:
    if benchmark == "folder":
        label2id = {str(label): int(index) for label, index in (config.label2id or {}).items()}
        return label2id.get(name)
    if benchmark == "imagenet-v2":
        return int(name) if _INDEX.match(name) and int(name) < 1000 else None
    index = _wnid_index().get(name)
    subset = subset_indices(benchmark)
    return None if index is None or (subset is not None and index not in subset) else index


def class_indices(benchmark: str, names: list[str], config) -> dict[str, int]:
    """Map each class name of a data set (folder names, or a dataset's ClassLabel names) to a model class index.

    Raises `EvaluationError` naming the names that match no class of the benchmark (for ``folder``: no entry of
    ``config.label2id``; for A/R: no wnid of the 200-class subset), so nothing is mislabeled silently.
    """
    check_benchmark(benchmark)
    check_model_classes(benchmark, config)
    mapping = {name: _index_of(benchmark, name, config) for name in names}
    unmatched = [name for name, index in mapping.items() if index is None]
    if unmatched:
        expected = {
            "folder": f"the model's labels (config.label2id, e.g. {_describe(sorted(config.label2id or {}), 4)})",
            "imagenet-v2": "class indices 0..999 (ImageNet-V2 folders)",
            "imagenet-a": "the 200 wnids of ImageNet-A",
            "imagenet-r": "the 200 wnids of ImageNet-R",
        }.get(benchmark, "the 1000 ImageNet-1K wnids")
        which = "none" if len(unmatched) == len(names) else f"{len(unmatched)} of {len(names)}"
        raise EvaluationError(
            f"{which} of the class names match {expected}: {_describe(unmatched)}{_hint(benchmark, unmatched)}"
        )
    return mapping


def integer_label_indices(benchmark: str, num_values: int, config) -> list[int]:
    """Model class index of each integer label ``0 .. num_values - 1`` of a dataset without usable class names.

    Integer labels are positions in the benchmark's own class list: the 1000 ImageNet classes (imagenet, -v2,
    -sketch), the sorted 200 subset classes (imagenet-a / -r), or the model's classes (folder).
    """
    check_benchmark(benchmark)
    check_model_classes(benchmark, config)
    subset = subset_indices(benchmark)
    classes = list(subset) if subset is not None else list(range(int(config.num_labels)))
    if num_values > len(classes):
        raise EvaluationError(
            f"integer labels reach {num_values - 1} but benchmark {benchmark!r} has {len(classes)} classes"
        )
    return classes[:num_values]
