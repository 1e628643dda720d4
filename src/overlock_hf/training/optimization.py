"""The optimization recipe: AdamW weight-decay groups and the (main + auxiliary) label-smoothed loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["classification_loss", "parameter_groups"]


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

    `outputs.logits` / `outputs.aux_logits` are (B, num_labels), `labels` (B,). The model computes the same loss
    itself when called with `labels`, but without label smoothing, hence this function. `aux_logits` exist in
    training mode only (eval: main loss only). With `num_items_in_batch` (the Trainer's count over the
    accumulated micro-batches) the summed loss is divided by it instead of averaged.
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
