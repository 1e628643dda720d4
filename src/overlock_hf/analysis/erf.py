"""Effective receptive field (Luo et al. 2016) as RepLKNet's `erf` tools measure it, and its area ratios.

For each image, the gradient of `relu(F[:, :, h // 2, w // 2]).sum()` (F a feature map, at its centre) with
respect to the input pixels is ReLU'd and summed over colour channels; the ERF is the average over images.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Callable

import numpy as np
import torch
from torch import nn

from .features import feature_layer, is_overlock

__all__ = ["DEFAULT_THRESHOLDS", "effective_receptive_field", "erf_area_ratios", "feature_map_function"]

DEFAULT_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


def _captured(model: nn.Module, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    module, index = feature_layer(model, name)

    def run(pixel_values: torch.Tensor) -> torch.Tensor:
        kept = []
        handle = module.register_forward_hook(lambda _m, _i, out: kept.append(out if index is None else out[index]))
        try:
            model.base_model(pixel_values=pixel_values)
        finally:
            handle.remove()
        return kept[-1]

    return run


def _last_stage(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The last stage's `(B, C, h, w)` map of a plain module or a transformers vision model (ConvNeXt, Swin...)."""
    if not hasattr(model, "config"):
        output = model(pixel_values)
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            return output
        raise ValueError(f"{type(model).__name__} must return a (B, C, h, w) feature map for the ERF")
    outputs = model(pixel_values=pixel_values, output_hidden_states=True)
    reshaped = getattr(outputs, "reshaped_hidden_states", None)  # Swin-like: token maps as (B, C, h, w)
    if reshaped:
        return reshaped[-1]
    last = getattr(outputs, "last_hidden_state", None)
    if last is not None and last.dim() == 4:
        return last
    hidden = getattr(outputs, "hidden_states", None)
    if hidden and hidden[-1].dim() == 4:
        return hidden[-1]
    raise ValueError(f"{type(model).__name__} exposes no (B, C, h, w) last-stage feature map for the ERF")


def feature_map_function(model: nn.Module, feature: str = "focus") -> Callable[[torch.Tensor], torch.Tensor]:
    """`pixel_values (B, 3, H, W) -> (B, C, h, w)`: the named OverLoCK map `feature` (see
    :data:`overlock_hf.analysis.features.FEATURE_LAYERS`), or, for any other model, its last stage's map."""
    if is_overlock(model):
        return _captured(model, feature)
    return lambda pixel_values: _last_stage(model, pixel_values)


def _batches(pixel_values) -> Iterable[torch.Tensor]:
    if isinstance(pixel_values, torch.Tensor):
        yield pixel_values
        return
    for batch in pixel_values:
        batch = batch["pixel_values"] if isinstance(batch, dict) else batch
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
            raise ValueError("pixel_values must be a (B, 3, H, W) tensor or an iterable of such batches (or of "
                             "dicts with a 'pixel_values' entry)")
        yield batch


def effective_receptive_field(model: nn.Module, pixel_values, feature: str = "focus") -> torch.Tensor:
    """The ERF `(H, W)` (float32, not normalised) of `model`'s feature map at its centre, averaged over images.

    Args:
        model: an OverLoCK model (any head), a transformers vision model loaded with `AutoModel` (its last
            stage's map is used, `feature` is ignored) or a module returning `(B, C, h, w)`. Run in eval mode;
            its modes are restored afterwards.
        pixel_values: a `(B, 3, H, W)` tensor, or an iterable of such batches (all of one size).
        feature: the OverLoCK map: `"focus"` (Focus-Net output), `"overview"` (Overview-Net output), ...
    """
    features = feature_map_function(model, feature)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    total, count = None, 0
    try:
        for batch in _batches(pixel_values):
            x = batch.detach().float().requires_grad_(True)
            with torch.enable_grad():
                fmap = features(x)
                centre = torch.relu(fmap[:, :, fmap.shape[2] // 2, fmap.shape[3] // 2]).sum()
                (gradient,) = torch.autograd.grad(centre, x)
            contribution = torch.relu(gradient).sum(dim=(0, 1))
            if total is not None and contribution.shape != total.shape:
                raise ValueError(f"all images must have one size for the ERF: got {tuple(x.shape[2:])} after "
                                 f"{tuple(total.shape)}")
            total = contribution if total is None else total + contribution
            count += x.shape[0]
    finally:
        for module, training in modes.items():
            module.train(training)
    if count == 0:
        raise ValueError("no images were given for the ERF")
    return (total / count).detach()


def erf_area_ratios(erf, thresholds=DEFAULT_THRESHOLDS) -> dict[float, float]:
    """RepLKNet's high-contribution area ratios of an ERF `(H, W)`: `{t: ratio}` for each threshold `t` in [0, 1).

    On `log10(erf + 1) / max`, `ratio` is the area, as a fraction of the image, of the smallest square centred
    at `(H // 2, W // 2)` (clipped to the image) whose sum exceeds `t` of the total. The square that covers the
    whole image holds all of it, so every `t < 1` has a ratio.
    """
    data = np.log10(np.asarray(torch.as_tensor(erf, dtype=torch.float64).cpu()) + 1.0)
    if data.ndim != 2 or not np.isfinite(data).all() or data.min() < 0:
        raise ValueError(f"erf must be a finite, non-negative (H, W) map, got shape {data.shape}")
    if data.max() <= 0:
        raise ValueError("erf is zero everywhere: no area ratio is defined")
    data = data / data.max()
    height, width = data.shape
    integral = np.zeros((height + 1, width + 1))
    integral[1:, 1:] = data.cumsum(0).cumsum(1)
    half = np.arange(max(height, width) // 2 + 1)  # half-sides: squares of side 2 * half + 1
    top, bottom = np.clip(height // 2 - half, 0, height), np.clip(height // 2 + half + 1, 0, height)
    left, right = np.clip(width // 2 - half, 0, width), np.clip(width // 2 + half + 1, 0, width)
    sums = integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
    fractions = sums / sums[-1]  # the last square covers the image
    areas = (bottom - top) * (right - left) / (height * width)
    ratios = {}
    for t in thresholds:
        if not 0.0 <= t < 1.0:
            raise ValueError(f"area-ratio thresholds must be in [0, 1), got {t}")
        ratios[t] = float(areas[np.argmax(fractions > t)])
    return ratios
