"""Grad-CAM of the Overview-Net and the Focus-Net (overlock_hf.analysis.grad_cam) against a plain-hooks reference."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from _shared import tiny_config
from overlock_hf import OverLoCKForImageClassification
from overlock_hf.analysis import grad_cam



def reference_cam(model, module, index, score_fn, pixel_values, target):
    """Grad-CAM by hand: a forward hook keeps the sub-network's output map (entry `index` of a tuple), autograd
    gives d score / d map; channel weights are the spatial mean of the gradient; CAM = ReLU(sum_c w_c A_c),
    bilinear upsize, min-max per image (a constant map gives zeros)."""
    kept = {}

    def hook(_module, _inputs, output):
        kept["map"] = output if index is None else output[index]

    handle = module.register_forward_hook(hook)
    try:
        x = pixel_values.clone().requires_grad_(True)
        scores = score_fn(x).gather(1, target[:, None]).sum()
        (gradient,) = torch.autograd.grad(scores, kept["map"])
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * kept["map"]).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=pixel_values.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    low = cam.flatten(1).min(1).values[:, None, None]
    high = cam.flatten(1).max(1).values[:, None, None]
    span = high - low
    return torch.where(span > 0, (cam - low) / torch.where(span > 0, span, 1), 0).detach()  # constant -> 0


def reference(model, pixel_values, target):
    model.eval()
    focus = reference_cam(model, model.overlock.focus_net, 1, lambda x: model(pixel_values=x).logits,
                          pixel_values, target)
    overview = reference_cam(
        model, model.overlock.overview_net, None,
        lambda x: model.aux_classifier(model.overlock(pixel_values=x).overview_hidden_state), pixel_values, target,
    )
    return overview, focus


def trained_like(config, seed=0):
    """A tiny model whose BatchNorm statistics and GRN/LayerScale parameters are not at their init values."""
    torch.manual_seed(seed)
    model = OverLoCKForImageClassification(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.train()
        model(pixel_values=torch.randn(4, 3, 64, 80))
    return model


@pytest.fixture(scope="module")
def model():
    return trained_like(tiny_config())


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (3, 3, 64, 96)])
def test_matches_plain_hooks_reference(model, shape):
    pixels = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    model.train()
    hooks_before = _hooks(model)
    cams = grad_cam(model, pixels)
    assert model.training and all(m.training for m in model.modules()), "model mode not restored"
    assert _hooks(model) == hooks_before, "hooks left on the model"
    batch, _, height, width = shape
    assert cams.focus.shape == cams.overview.shape == (batch, height, width)
    assert cams.target.shape == (batch,)
    with torch.no_grad():
        model.eval()
        assert torch.equal(cams.target, model(pixel_values=pixels).logits.argmax(1))
    for maps in (cams.focus, cams.overview):
        assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
        assert torch.allclose(maps.flatten(1).max(1).values, torch.ones(batch))
    overview, focus = reference(model, pixels, cams.target)
    assert (cams.focus - focus).abs().max() <= 1e-5
    assert (cams.overview - overview).abs().max() <= 1e-5
    assert not torch.allclose(cams.focus, cams.overview, atol=1e-2)


def test_target_choice_and_eval_mode(model):
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model.eval()
    by_int = grad_cam(model, pixels, target=3)
    assert by_int.target.tolist() == [3, 3] and not model.training
    by_tensor = grad_cam(model, pixels, target=torch.tensor([3, 5]))
    assert by_tensor.target.tolist() == [3, 5]
    assert torch.equal(by_tensor.focus[0], by_int.focus[0])
    overview, focus = reference(model, pixels, by_tensor.target)
    assert (by_tensor.focus - focus).abs().max() <= 1e-5 and (by_tensor.overview - overview).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="target classes"):
        grad_cam(model, pixels, target=10)
    with pytest.raises(ValueError, match="OverLoCKForImageClassification"):
        grad_cam(model.overlock, pixels)


def test_reparameterized_equals_plain(model):
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    plain = grad_cam(model, pixels)
    folded = trained_like(tiny_config())
    folded.load_state_dict(model.state_dict())
    folded.eval().reparameterize()
    cams = grad_cam(folded, pixels, target=plain.target)
    assert (cams.focus - plain.focus).abs().max() <= 1e-4
    assert (cams.overview - plain.overview).abs().max() <= 1e-4
    overview, focus = reference(folded, pixels, plain.target)
    assert (cams.focus - focus).abs().max() <= 1e-5 and (cams.overview - overview).abs().max() <= 1e-5


def test_fused_kernel_equals_pytorch(model):
    from test_contmix_kernel import KERNEL_BUILD_DIR
    from overlock_hf.cli import main
    from overlock_hf.kernel_hub import kernelize

    assert main(["build-kernel", str(KERNEL_BUILD_DIR), "--backend", "cpu"]) == 0
    pixels = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    plain = grad_cam(model, pixels)
    fused = trained_like(tiny_config())
    fused.load_state_dict(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernelize(fused.eval(), KERNEL_BUILD_DIR, mode="inference")
    assert any("forward" in m.__dict__ for m in fused.modules() if type(m).__name__ == "ContMix")
    cams = grad_cam(fused, pixels)
    assert torch.equal(cams.target, plain.target)
    assert (cams.focus - plain.focus).abs().max() <= 1e-5
    assert (cams.overview - plain.overview).abs().max() <= 1e-5
