"""Top-1 / top-5 of any transformers image-classification model on an ImageNet benchmark or a custom set.

    from overlock_hf.analysis import evaluate

    result = evaluate("org/overlock-xt", "/data/imagenet-r", benchmark="imagenet-r", output="r.json")
    result["top1"], result["top5"]  # percent

Everything that can be checked is checked before the first batch (the model's classes, every class name of the
data, the output path); a corrupt image stops the run naming its file, or with ``skip_corrupt`` is counted and
reported. The JSON is written atomically, after the run, by the main process only. Under ``accelerate launch``
each process evaluates a shard and the counts are summed (see `sharding`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import EvalDataset, EvalSamples, load_samples, make_loader
from .labels import (
    EvaluationError,
    check_benchmark,
    check_model_classes,
    class_indices,
    integer_label_indices,
    subset_indices,
)
from .output import check_output_path, write_json_atomic
from .preprocessing import Preprocessing, choose_preprocessing, load_processor
from .sharding import ProcessInfo, gather_lists, process_info, shard, sum_counts

TOP_K = 5


@dataclass
class EvaluationPlan:
    """A checked evaluation, ready to run: the model, its data with labels as model class indices, the transform."""

    model: torch.nn.Module
    model_name: str
    benchmark: str
    samples: EvalSamples
    labels: list[int]
    label_mapping: str
    mask: tuple[int, ...] | None
    preprocessing: Preprocessing
    indices: list[int]


def load_model(model, trust_remote_code: bool = False) -> torch.nn.Module:
    """`model` itself when it is a module, else `AutoModelForImageClassification.from_pretrained(model)`, in eval mode."""
    if isinstance(model, torch.nn.Module):
        return model.eval()
    import overlock_hf  # noqa: F401  (registers OverLoCK with the Auto classes)
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(str(model), trust_remote_code=trust_remote_code).eval()


def sample_labels(samples: EvalSamples, benchmark: str, config) -> tuple[list[int], str]:
    """Model class index of every sample, and how it was found (by class name, or integer label).

    A dataset whose class names are none of the benchmark's ids (e.g. the human-readable names of the Hub's
    ImageNet-1K) but which has exactly the benchmark's number of classes is read by integer label instead.
    """
    check_model_classes(benchmark, config)
    if not samples.integer_labels:
        try:
            mapping = class_indices(benchmark, samples.class_names, config)
            return [mapping[name] for name in samples.names], "class names"
        except EvaluationError:
            subset = subset_indices(benchmark)
            expected = len(subset) if subset is not None else int(config.num_labels)
            if samples.values is None or len(samples.class_names) != expected:
                raise
    classes = integer_label_indices(benchmark, max(samples.values) + 1, config)
    return [classes[value] for value in samples.values], "integer labels"


def spread_indices(total: int, limit: int | None) -> list[int]:
    """All of ``range(total)``, or `limit` of them evenly spread (so a short run still covers every class)."""
    if limit is None or limit >= total:
        return list(range(total))
    if limit < 1:
        raise EvaluationError(f"--limit must be positive, got {limit}")
    return [index * total // limit for index in range(limit)]


def prepare(model, data, benchmark: str, image_size: int | None = None, crop_pct: float | None = None,
            limit: int | None = None, split: str | None = None, mask_subset: bool = True,
            trust_remote_code: bool = False, samples: EvalSamples | None = None) -> EvaluationPlan:
    """Load and check everything an evaluation needs; raises `EvaluationError` before any image is decoded."""
    check_benchmark(benchmark)
    model_name = str(model) if not isinstance(model, torch.nn.Module) else model.config.name_or_path or "model"
    model = load_model(model, trust_remote_code)
    check_model_classes(benchmark, model.config)
    samples = samples or load_samples(data, split)
    labels, label_mapping = sample_labels(samples, benchmark, model.config)
    processor = load_processor(model_name, trust_remote_code)
    preprocessing = choose_preprocessing(processor, model.config, image_size, crop_pct)
    mask = subset_indices(benchmark) if mask_subset else None
    return EvaluationPlan(model, model_name, benchmark, samples, labels, label_mapping, mask, preprocessing,
                          spread_indices(len(labels), limit))


def _autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def count_correct(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> tuple[int, int]:
    """Top-1 and top-5 hits of `logits` (B, C) for `labels` (B,) (model class indices).

    With `mask` (M,) the logits are first restricted to those classes; predictions are mapped back to model
    indices. Top-5 becomes top-min(5, classes) for sets with fewer classes.
    """
    if mask is not None:
        logits = logits[:, mask]
    top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
    if mask is not None:
        top = mask[top]
    hits = top == labels[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


def run(plan: EvaluationPlan, batch_size: int = 64, num_workers: int = 4, device: str | None = None,
        skip_corrupt: bool = False, bf16: bool = False, progress: bool = True,
        info: ProcessInfo | None = None) -> dict:
    """Evaluate a prepared plan (this process's shard, counts summed over processes); the result dictionary."""
    if batch_size < 1 or num_workers < 0:
        raise EvaluationError(f"--batch-size must be >= 1 and --num-workers >= 0 (got {batch_size}, {num_workers})")
    info = info or process_info(device)
    model = plan.model.to(info.device)
    dataset = EvalDataset(plan.samples, plan.labels, plan.preprocessing.transform)
    loader = make_loader(dataset, shard(plan.indices, info), batch_size, num_workers, info.device.type == "cuda")
    mask = torch.tensor(plan.mask, device=info.device) if plan.mask is not None else None
    top1 = top5 = seen = 0
    corrupt: list[tuple[int, str]] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(plan.indices), desc=f"{plan.benchmark}", unit="img", disable=not (progress and info.is_main))
    with torch.inference_mode(), _autocast(info.device, bf16):
        for pixels, labels, failed in loader:
            corrupt.extend(failed)
            if failed and not skip_corrupt:
                break
            if pixels is not None:
                pixels = plan.preprocessing.normalize(pixels.to(info.device, non_blocking=True))
                logits = model(pixel_values=pixels).logits.float()
                hits = count_correct(logits, labels.to(info.device), mask)
                top1, top5, seen = top1 + hits[0], top5 + hits[1], seen + len(labels)
            bar.update(len(labels) * info.world_size + len(failed))
            bar.set_postfix(top1=f"{100.0 * top1 / max(seen, 1):.2f}")
    bar.close()
    top1, top5, seen = sum_counts([top1, top5, seen], info)
    corrupt = [(dataset.describe(index), message) for index, message in gather_lists(corrupt, info)]
    if corrupt and not skip_corrupt:
        where, message = corrupt[0]
        raise EvaluationError(f"cannot decode image {where}: {message} (use --skip-corrupt to count and skip)")
    if seen == 0:
        raise EvaluationError(f"no image of {plan.samples.description} could be decoded ({len(corrupt)} corrupt)")
    preprocessing = plan.preprocessing
    return {
        "model": plan.model_name,
        "benchmark": plan.benchmark,
        "data": plan.samples.description,
        "top1": 100.0 * top1 / seen,
        "top5": 100.0 * top5 / seen,
        "num_images": seen,
        "num_corrupt": len(corrupt),
        "corrupt_files": [f"{where}: {message}" for where, message in corrupt],
        "image_size": preprocessing.image_size,
        "crop_pct": preprocessing.crop_pct,
        "preprocessing": preprocessing.description,
        "num_classes": int(plan.model.config.num_labels),
        "logit_mask": f"{len(plan.mask)} classes of {plan.benchmark}" if plan.mask is not None else None,
        "labels_from": plan.label_mapping,
        "limit": len(plan.indices) if len(plan.indices) < len(plan.labels) else None,
        "device": str(info.device),
        "num_processes": info.world_size,
        "precision": "bf16 autocast" if bf16 else "float32",
        "batch_size": batch_size,
    }


def evaluate(model, data, benchmark: str = "imagenet", *, image_size: int | None = None,
             crop_pct: float | None = None, batch_size: int = 64, num_workers: int = 4, limit: int | None = None,
             device: str | None = None, output: str | Path | None = None, split: str | None = None,
             skip_corrupt: bool = False, bf16: bool = False, mask_subset: bool = True,
             trust_remote_code: bool = False, progress: bool = True) -> dict:
    """Evaluate `model` (folder, Hub id or loaded model) on `data` (image folder or dataset) for `benchmark`.

    Returns the result dictionary (``top1``, ``top5`` in percent, ``num_images``, ``benchmark``, ``image_size``,
    ``model``, ...) and writes it to `output` as JSON (main process only). `mask_subset=False` disables the
    200-class logit restriction of ImageNet-A/-R (not the standard protocol; for comparison).

    Raises:
        EvaluationError: a check failed (labels, classes, corrupt image, empty set); nothing is written.
    """
    output = check_output_path(output)
    info = process_info(device)
    plan = prepare(model, data, benchmark, image_size, crop_pct, limit, split, mask_subset, trust_remote_code)
    result = run(plan, batch_size, num_workers, device, skip_corrupt, bf16, progress, info)
    if output is not None and info.is_main:
        write_json_atomic(output, result)
    return result
