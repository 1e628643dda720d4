"""The one evaluation of a classifier over a data loader, shared by both fine-tuning scripts (and meant for an
evaluation command): top-1 accuracy and the mean cross-entropy of the main head, without label smoothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["accuracy_metric_path", "evaluate_classifier"]


def accuracy_metric_path() -> str:
    """Path of the accuracy metric script shipped with the package (`evaluate.load(path)` works offline)."""
    return str(Path(__file__).resolve().parents[1] / "metrics" / "accuracy.py")


@torch.no_grad()
def evaluate_classifier(model, loader, gather: Callable | None = None) -> dict:
    """`{"eval_accuracy", "eval_loss", "eval_samples"}` of `model` over every batch of `loader`.

    Batches are dicts with `pixel_values` (B, 3, H, W) and `labels` (B,). `gather` collects a tuple of tensors
    from every process and drops the padding of the last batch (`accelerator.gather_for_metrics`); without it
    the counts are this process's. The model is put in eval mode and its previous mode restored.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for batch in loader:
        pixels, labels = batch["pixel_values"].to(device), batch["labels"].to(device)
        logits = model(pixel_values=pixels).logits.float()
        if gather is not None:
            logits, labels = gather((logits, labels))
        correct += (logits.argmax(-1) == labels).sum()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        count += labels.numel()
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate_classifier: the loader yielded no samples")
    return {"eval_accuracy": float(correct / count), "eval_loss": float(loss_sum / count), "eval_samples": count}
