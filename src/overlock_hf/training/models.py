"""What `--model` names, decided once, and the classification model built from it.

`resolve_model_source` classifies the name without touching the network: `compact`, a released variant (trained
from scratch), a local folder or a Hub id. A misspelled variant ("did you mean ...") and a local path that does
not exist ("no such folder") are reported at once. `ModelSource.processor()` loads a checkpoint's own image
processor, once.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..configuration_overlock import ABLATIONS, VARIANTS, OverLoCKConfig
from ..data import FinetuningError, looks_like_path

__all__ = ["COMPACT", "COMPACT_CONFIG", "ModelSource", "build_model", "resolve_model_source"]

COMPACT = "compact"
# A compact OverLoCK (0.5 M parameters, every architectural part present) that fine-tunes on the digits in
# minutes on two CPU cores. Its Focus-Net maps (4x4 and 2x2 at 64x64 inputs) are smaller than its ContMix kernels,
# so the model's small-input path (bilinear upsize to the kernel, pool back) runs.
COMPACT_CONFIG = dict(
    depths=[1, 1, 1, 1], focus_depths=[1, 1], hidden_sizes=[16, 32, 64, 96], kernel_sizes=[7, 7, 5, 5],
    small_kernel_size=3, focus_num_heads=[2, 2], projection_dim=128, drop_path_rate=0.05,
)


@dataclass
class ModelSource:
    """`--model` resolved: `kind` is `"compact"`, `"variant"` (`name` is then the canonical variant name),
    `"ablation"` (a preset of `ABLATIONS`, trained from scratch) or `"checkpoint"` (`name` a local folder or a Hub id)."""

    kind: str
    name: str
    _processor: object = field(default=None, repr=False)
    _processor_loaded: bool = field(default=False, repr=False)

    def processor(self):
        """The checkpoint's own image processor (loaded on first use, then kept), or None (no checkpoint, or
        none shipped with it)."""
        if self.kind == "checkpoint" and not self._processor_loaded:
            from transformers import AutoImageProcessor

            try:
                self._processor = AutoImageProcessor.from_pretrained(self.name)
            except (OSError, ValueError):  # the checkpoint ships no preprocessor_config.json
                self._processor = None
            self._processor_loaded = True
        return self._processor

    def image_size(self) -> int | None:
        """The input size of the checkpoint's own processor (`shortest_edge` or `height`), if it ships one."""
        processor = self.processor()
        if processor is None:
            return None
        return processor.size.get("shortest_edge") or processor.size.get("height")


def _variant_name(name: str) -> str | None:
    key = name.lower().replace("_", "-")
    for candidate in (key, f"overlock-{key}"):
        if candidate in VARIANTS:
            return candidate
    return None


def resolve_model_source(model: str) -> ModelSource:
    """Classify `--model` (no network). Raises `FinetuningError` for a local path that does not exist and for a
    bare name that is neither `compact` nor a variant (with the closest names)."""
    if Path(model).is_dir():
        return ModelSource("checkpoint", model)
    if model == COMPACT:
        return ModelSource(COMPACT, model)
    variant = _variant_name(model)
    if variant is not None:
        return ModelSource("variant", variant)
    if model in ABLATIONS:
        return ModelSource("ablation", model)
    if looks_like_path(model):
        raise FinetuningError(f"--model {model}: no such folder")
    if "/" not in model:
        choices = [COMPACT, *VARIANTS, *ABLATIONS]
        close = difflib.get_close_matches(model.lower(), choices, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise FinetuningError(f"--model {model!r} is not a known model: {hint}Choices: {', '.join(choices)}, "
                              "a local model folder or a Hub id (org/name)")
    return ModelSource("checkpoint", model)


def build_model(source: ModelSource | str, label_names: Sequence[str], *, drop_path_rate: float | None = None,
                aux_loss_weight: float | None = None, ignore_mismatched_sizes: bool = False):
    """An `OverLoCKForImageClassification` (or any `AutoModelForImageClassification`) for `label_names`.

    Args:
        source: the resolved `--model` (or its string, resolved here): compact and variants are randomly
            initialized (trained from scratch), a checkpoint is fine-tuned.
        label_names: the dataset's class names, in label order; written into `id2label` / `label2id`.
        drop_path_rate, aux_loss_weight: override the configuration's values when given.
        ignore_mismatched_sizes: allow a checkpoint whose head has another number of classes; its classifiers
            are then re-initialized. Without it such a mismatch raises `FinetuningError`.
    """
    from transformers import AutoConfig, AutoModelForImageClassification

    source = resolve_model_source(source) if isinstance(source, str) else source
    id2label = {i: name for i, name in enumerate(label_names)}
    label2id = {name: i for i, name in id2label.items()}
    overrides = {k: v for k, v in (("drop_path_rate", drop_path_rate), ("aux_loss_weight", aux_loss_weight))
                 if v is not None}
    if source.kind != "checkpoint":
        fields = dict(COMPACT_CONFIG, **overrides) if source.kind == COMPACT else overrides
        fields.update(num_labels=len(label_names), id2label=id2label, label2id=label2id)
        build = {COMPACT: OverLoCKConfig, "variant": lambda **f: OverLoCKConfig.from_variant(source.name, **f),
                 "ablation": lambda **f: OverLoCKConfig.from_ablation(source.name, **f)}[source.kind]
        config = build(**fields)
        return AutoModelForImageClassification.from_config(config)
    checkpoint_labels = AutoConfig.from_pretrained(source.name).num_labels
    if checkpoint_labels != len(label_names) and not ignore_mismatched_sizes:
        raise FinetuningError(
            f"model {source.name!r} has a {checkpoint_labels}-class head but the dataset has {len(label_names)} "
            f"classes; pass --ignore_mismatched_sizes to replace the head(s) with freshly initialized "
            f"{len(label_names)}-class ones, or use a dataset with the checkpoint's classes"
        )
    return AutoModelForImageClassification.from_pretrained(
        source.name, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=ignore_mismatched_sizes,
        **overrides,
    )
