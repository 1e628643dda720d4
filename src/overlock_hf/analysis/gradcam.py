"""Grad-CAM of OverLoCK's two top-level sub-networks: the Overview-Net (for the auxiliary head) and the Focus-Net
(for the main head), as in the paper's supplementary Figure A. Uses captum's `LayerGradCam` (extra `analysis`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._optional import require
from .features import is_overlock

__all__ = ["GradCAM", "grad_cam", "normalise_maps"]


@dataclass
class GradCAM:
    """Grad-CAM maps of a batch.

    Args:
        overview: `(B, H, W)` in [0, 1], Grad-CAM of the Overview-Net output for the auxiliary head's score.
        focus: `(B, H, W)` in [0, 1], Grad-CAM of the Focus-Net output for the main head's score.
        target: `(B,)` the classes explained.
        probability: `(B,)` the main head's softmax probability of `target`.
    """

    overview: torch.Tensor
    focus: torch.Tensor
    target: torch.Tensor
    probability: torch.Tensor


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of `(B, H, W)` to [0, 1] (a constant map becomes all zeros)."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    span = (high - low).clamp_min(torch.finfo(maps.dtype).tiny)
    return ((flat - low) / span).view_as(maps)


def _head_input_cam(forward, head: nn.Module, pixel_values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ReLU'd Grad-CAM of the feature map entering `head` for `forward(x)[:, target]`, upsampled bilinearly to
    the input size and normalised: `(B, H, W)`."""
    captum_attr = require("captum.attr")
    cam = captum_attr.LayerGradCam(forward, head).attribute(
        pixel_values, target=target, relu_attributions=True, attribute_to_layer_input=True
    )
    cam = F.interpolate(cam.detach(), size=pixel_values.shape[2:], mode="bilinear", align_corners=False)
    return normalise_maps(cam[:, 0])


def _explained(model: nn.Module, name: str):
    """`(forward, head)` for Grad-CAM of feature map `name`: the map is the input of `head`, the scores are
    `forward(pixel_values)`. The Focus-Net output feeds the main classifier, the Overview-Net output the
    auxiliary one (run explicitly, as the model computes it in training mode only). The maps are taken where
    the heads receive them because captum needs a module whose whole output (or input) is used by the score,
    and `focus_net` also returns its stride-16 map."""
    if name == "focus":
        return (lambda x: model(pixel_values=x).logits), model.classifier

    def auxiliary_logits(x):
        return model.aux_classifier(model.base_model(pixel_values=x).overview_hidden_state)

    return auxiliary_logits, model.aux_classifier


def _as_target(target, batch: int, logits: torch.Tensor) -> torch.Tensor:
    if target is None:
        return logits.argmax(dim=1)
    target = torch.as_tensor(target, dtype=torch.long, device=logits.device)
    if target.dim() == 0:
        target = target.expand(batch)
    if target.shape != (batch,):
        raise ValueError(f"target must be an int or a ({batch},) tensor of classes, got shape {tuple(target.shape)}")
    if int(target.min()) < 0 or int(target.max()) >= logits.shape[1]:
        raise ValueError(f"target classes must be in [0, {logits.shape[1]}), got {target.tolist()}")
    return target


def grad_cam(model: nn.Module, pixel_values: torch.Tensor, target=None) -> GradCAM:
    """Grad-CAM of the Overview-Net and the Focus-Net of an `OverLoCKForImageClassification`.

    `focus` explains the main classifier's score of `target` through the Focus-Net output; `overview` the
    auxiliary classifier's score of the same class through the Overview-Net output (the auxiliary head is run
    explicitly, so this works in eval mode too). The model runs in eval mode (BatchNorm statistics, no drop
    path); its modes are restored afterwards and captum removes its hooks.

    Args:
        model: an `OverLoCKForImageClassification` (plain or re-parameterized, with or without the fused kernel).
        pixel_values: `(B, 3, H, W)` processed images.
        target: classes to explain: None (the main head's prediction), an int or a `(B,)` tensor.
    """
    if not (is_overlock(model) and hasattr(model, "aux_classifier")):
        raise ValueError(f"grad_cam needs an OverLoCKForImageClassification, got {type(model).__name__}")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        pixel_values = pixel_values.detach()
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits
        target = _as_target(target, pixel_values.shape[0], logits)
        probability = logits.float().softmax(dim=1).gather(1, target[:, None])[:, 0]

        focus = _head_input_cam(*_explained(model, "focus"), pixel_values, target)
        overview = _head_input_cam(*_explained(model, "overview"), pixel_values, target)
    finally:
        for module, training in modes.items():
            module.train(training)
    return GradCAM(overview=overview, focus=focus, target=target, probability=probability)
