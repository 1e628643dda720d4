"""fuse_for_inference: every foldable BatchNorm folded, same eval-mode function, saving refused."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from _shared import relative_error, tiny_config
from conftest import fixture_path
from overlock_hf import OverLoCKBackbone, OverLoCKForImageClassification, fuse_for_inference
from overlock_hf.conversion import load_official_model

TOLERANCE = 1e-5  # relative, the bound for the folded model


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BatchNorm statistic random (positive variances), so that every fold moves the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2 + (1.0 if name.endswith("weight")
                                                                               and tensor.dim() == 1 else 0.0))
    return model.eval()


def _batch_norms(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)]


@pytest.mark.parametrize("size", [(96, 128), (64, 64)])  # 64x64: the stride-32 maps are upsized for ContMix
def test_fused_classifier_equals_unfolded(size):
    model = _randomized(OverLoCKForImageClassification(tiny_config()))
    fused = fuse_for_inference(copy.deepcopy(model))
    assert _batch_norms(fused) == ["aux_classifier.norm"]  # only the head that eval mode never computes
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(pixels, output_hidden_states=True)
        out = fused(pixels, output_hidden_states=True)
    assert relative_error(out.logits, ref.logits) <= TOLERANCE
    for ours, theirs in zip(out.hidden_states, ref.hidden_states):
        assert relative_error(ours, theirs) <= TOLERANCE


def test_fused_backbone_equals_unfolded():
    features = ["stem", "base_stride4", "base_stride8", "focus_stride16", "focus_stride32"]
    model = _randomized(OverLoCKBackbone(tiny_config(out_features=features)))
    fused = fuse_for_inference(copy.deepcopy(model))
    assert _batch_norms(fused) == []
    pixels = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for ours, theirs in zip(fused(pixels).feature_maps, model(pixels).feature_maps):
            assert relative_error(ours, theirs) <= TOLERANCE


def test_fused_official_fixture_matches_released_logits():
    reference = load_file(fixture_path("tiny_reference_outputs.safetensors"))
    model = fuse_for_inference(load_official_model(fixture_path("tiny_official.safetensors")))
    with torch.no_grad():
        logits = model(reference["pixel_values"]).logits
    assert relative_error(logits, reference["logits"]) <= 1e-4


def test_fused_model_refuses_save_pretrained(tmp_path):
    model = fuse_for_inference(OverLoCKForImageClassification(tiny_config()))
    with pytest.raises(RuntimeError, match="fuse_for_inference"):
        model.save_pretrained(tmp_path / "fused")
    with pytest.raises(RuntimeError, match="fuse_for_inference"):
        model.overlock.save_pretrained(tmp_path / "fused-base")
    assert not (tmp_path / "fused").exists()


def test_fuse_for_inference_rejects_other_modules():
    with pytest.raises(TypeError, match="OverLoCK model"):
        fuse_for_inference(nn.Conv2d(3, 3, 1))
