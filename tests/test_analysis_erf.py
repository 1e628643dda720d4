"""Effective receptive field (overlock_hf.analysis.effective_receptive_field) and its area ratios."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from _shared import relative_error, tiny_config
from overlock_hf import OverLoCKForImageClassification, OverLoCKModel
from overlock_hf.analysis import effective_receptive_field, erf_area_ratios

THRESHOLDS = (0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)


@pytest.mark.parametrize("depth", [1, 3, 5])
def test_conv_stack_support_is_the_centre_square(depth):
    torch.manual_seed(depth)
    layers = [nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(depth)]
    for conv in layers:  # positive weights: every path adds, so the support is the full (2n+1)^2 square
        nn.init.uniform_(conv.weight, 0.1, 1.0)
    stack = nn.Sequential(*layers)
    erf = effective_receptive_field(stack, torch.rand(3, 3, 33, 40))
    assert erf.shape == (33, 40)
    rows, cols = (erf > 0).nonzero().unbind(1)
    side = 2 * depth + 1
    assert (erf > 0).sum() == side * side
    assert rows.min() == 16 - depth and rows.max() == 16 + depth
    assert cols.min() == 20 - depth and cols.max() == 20 + depth


def independent_erf(model, images, feature_index):
    """Per image: the base model's hidden state `feature_index`, autograd of its relu'd centre, relu, channel sum."""
    total = torch.zeros(images.shape[2:])
    for image in images:
        x = image[None].clone().requires_grad_(True)
        fmap = model.overlock(pixel_values=x, output_hidden_states=True).hidden_states[feature_index]
        h, w = fmap.shape[2:]
        (grad,) = torch.autograd.grad(fmap[0, :, h // 2, w // 2].clamp_min(0).sum(), x)
        total += grad[0].clamp_min(0).sum(0)
    return total / len(images)


@pytest.mark.parametrize("feature, index", [("focus", 6), ("overview", 4)])
def test_tiny_overlock_matches_independent_autograd(feature, index):
    torch.manual_seed(0)
    model = OverLoCKForImageClassification(tiny_config())
    with torch.no_grad():  # move BatchNorm statistics away from their init
        model.train()(pixel_values=torch.randn(4, 3, 64, 64))
    images = torch.randn(5, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    model.train()
    batches = (images[i : i + 2] for i in range(0, 5, 2))  # an iterable of batches (2, 2, 1)
    erf = effective_receptive_field(model, batches, feature=feature)
    assert model.training, "mode not restored"
    model.eval()
    reference = independent_erf(model, images, index)
    assert erf.shape == (64, 96)
    assert relative_error(erf, reference) <= 1e-5
    # the base OverLoCKModel names the same maps
    base = effective_receptive_field(model.overlock, images, feature=feature)
    assert relative_error(base, reference) <= 1e-5


def test_unknown_feature_names_the_known_ones():
    model = OverLoCKModel(tiny_config())
    with pytest.raises(ValueError, match="focus.*overview|overview.*focus"):
        effective_receptive_field(model, torch.randn(1, 3, 64, 64), feature="stage9")


@pytest.mark.parametrize("kind", ["convnext", "swin"])
def test_transformers_peers_use_their_last_stage(kind):
    from transformers import AutoModel, ConvNextConfig, SwinConfig

    if kind == "convnext":
        config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])
    else:
        config = SwinConfig(image_size=64, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4)
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    erf = effective_receptive_field(model, images)
    assert erf.shape == (64, 64) and float(erf.sum()) > 0
    model.eval()
    x = images.clone().requires_grad_(True)
    outputs = model(pixel_values=x, output_hidden_states=True)
    fmap = outputs.reshaped_hidden_states[-1] if kind == "swin" else outputs.last_hidden_state
    assert fmap.dim() == 4
    (grad,) = torch.autograd.grad(fmap[:, :, fmap.shape[2] // 2, fmap.shape[3] // 2].clamp_min(0).sum(), x)
    assert relative_error(erf, grad.clamp_min(0).sum((0, 1)) / 2) <= 1e-5


def brute_force_ratio(data, t):
    data = np.log10(data + 1)
    data = data / data.max()
    h, w = data.shape
    total = sum(data[r, c] for r in range(h) for c in range(w))
    for half in itertools.count():
        rows = [r for r in range(h) if abs(r - h // 2) <= half]
        cols = [c for c in range(w) if abs(c - w // 2) <= half]
        inside = sum(data[r, c] for r in rows for c in cols)
        if inside / total > t:
            return len(rows) * len(cols) / (h * w)


def hand_made_maps():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:21, :21]
    gaussian = 100 * np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / 20)
    point = np.zeros((15, 15))
    point[7, 7] = 50.0
    ring = np.where(np.abs(np.hypot(yy - 10, xx - 10) - 8) < 1, 10.0, 0.0)
    uniform = np.ones((12, 17))
    corner = np.zeros((16, 10))
    corner[0, 0] = 3.0
    corner[8, 5] = 1.0
    return [gaussian, point, ring, uniform, corner, rng.exponential(5, (18, 14))]


@pytest.mark.parametrize("index", range(6))
def test_area_ratios_match_brute_force(index):
    data = hand_made_maps()[index]
    ratios = erf_area_ratios(torch.tensor(data), thresholds=THRESHOLDS)
    assert list(ratios) == list(THRESHOLDS)
    for t in THRESHOLDS:
        expected = brute_force_ratio(data, t)
        assert ratios[t] is not None and math.isclose(ratios[t], expected, rel_tol=1e-12), (t, ratios[t], expected)


def test_area_ratio_errors():
    assert erf_area_ratios(torch.ones(5, 5)) == pytest.approx(
        {0.2: 9 / 25, 0.3: 9 / 25, 0.5: 1.0, 0.99: 1.0})  # 1, 9 then 25 of 25 pixels
    with pytest.raises(ValueError, match="zero everywhere"):
        erf_area_ratios(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        erf_area_ratios(torch.ones(4, 4), thresholds=(1.0,))
