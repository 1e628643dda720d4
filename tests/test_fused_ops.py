"""fused_ops: GRN and the spatial L2 norm against their composite definitions, in both memory layouts, and the
model's channels-last execution (same outputs, plain NCHW maps returned)."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _shared import relative_error, tiny_config
from overlock_hf import OverLoCKForImageClassification, fuse_for_inference
from overlock_hf.fused_ops import _GlobalResponseNorm, global_response_norm, is_channels_last, spatial_l2_norm
from overlock_hf.modeling_overlock import OverLoCKResidualDepthwiseConv


def grn_definition(x, gamma, beta):
    """ConvNeXt-V2's GRN as the released OverLoCK writes it (the parity ground truth's formula)."""
    energy = torch.norm(x, p=2, dim=(-1, -2), keepdim=True)
    normalized = energy / (energy.mean(dim=1, keepdim=True) + 1e-6)
    return (gamma * normalized + 1) * x + beta


def _inputs(b, c, h, w, channels_last, seed, dtype=torch.float64, zero_channel=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    if zero_channel:
        x[0, 0] = 0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    gamma = torch.randn(1, c, 1, 1, generator=gen, dtype=dtype)
    beta = torch.randn(1, c, 1, 1, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (x, gamma, beta)]


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(1, 7), w=st.integers(1, 7),
       channels_last=st.booleans(), zero_channel=st.booleans(), seed=st.integers(0, 2**16))
def test_grn_matches_definition_forward_and_backward(b, c, h, w, channels_last, zero_channel, seed):
    x, gamma, beta = _inputs(b, c, h, w, channels_last, seed, zero_channel=zero_channel)
    ours = global_response_norm(x, gamma, beta)
    ref = grn_definition(x, gamma, beta)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn(ours.shape, dtype=ours.dtype, generator=torch.Generator().manual_seed(seed + 1))
    for g_ours, g_ref in zip(torch.autograd.grad(ours, (x, gamma, beta), grad_out),
                             torch.autograd.grad(ref, (x, gamma, beta), grad_out)):
        assert torch.isfinite(g_ours).all()
        assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels_last", [False, True])
def test_grn_gradcheck(channels_last):
    assert torch.autograd.gradcheck(_GlobalResponseNorm.apply, tuple(_inputs(2, 5, 4, 3, channels_last, 0)))


@pytest.mark.parametrize("channels_last", [False, True])
def test_grn_keeps_layout_and_saves_no_extra_map_in_inference(channels_last):
    x, gamma, beta = (t.detach() for t in _inputs(2, 6, 5, 5, channels_last, 3, dtype=torch.float32))
    out = global_response_norm(x, gamma, beta)
    assert is_channels_last(out) == channels_last
    assert relative_error(out, grn_definition(x, gamma, beta)) <= 1e-6


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_l2_norm(dtype, tolerance, channels_last):
    x = torch.randn(3, 7, 9, 5).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours = spatial_l2_norm(x)
    assert ours.shape == (3, 7, 1, 1) and ours.dtype == dtype
    ref = torch.linalg.vector_norm(x.double(), dim=(2, 3), keepdim=True)
    assert relative_error(ours.double(), ref) <= tolerance


def test_model_runs_channels_last_inside_and_returns_nchw_maps():
    torch.manual_seed(0)
    model = OverLoCKForImageClassification(tiny_config()).eval()
    pixels = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True)
        again = model(pixels.contiguous(memory_format=torch.channels_last), output_hidden_states=True)
        base = model.overlock(pixels)
    assert torch.equal(out.logits, again.logits)
    for tensor in list(out.hidden_states) + [base.last_hidden_state, base.overview_hidden_state,
                                             base.base_hidden_state, base.focus_stride16_hidden_state]:
        assert tensor.is_contiguous()
    assert base.last_hidden_state.view(2, base.last_hidden_state.shape[1], -1).shape[-1] == 3 * 4


def test_fuse_for_inference_folds_every_residual_identity():
    torch.manual_seed(0)
    model = OverLoCKForImageClassification(tiny_config()).eval()
    residual = [m for m in model.modules() if isinstance(m, OverLoCKResidualDepthwiseConv)]
    assert residual and not any(m.identity_folded for m in residual)
    fused = fuse_for_inference(copy.deepcopy(model))
    assert all(m.identity_folded for m in fused.modules() if isinstance(m, OverLoCKResidualDepthwiseConv))
    pixels = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert relative_error(fused(pixels).logits, model(pixels).logits) <= 1e-5


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("kernel, dilation, groups", [(7, 1, 6), (3, 3, 6), (3, 1, 6), (5, 2, 6), (3, 1, 1)])
def test_lean_conv_norm_equals_the_modules_in_training(kernel, dilation, groups, momentum):
    """Same output, gradients (input, conv weight, norm affine) and running statistics as `norm(conv(x))`."""
    from overlock_hf.depthwise_conv import OverLoCKDepthwiseConv2d
    from overlock_hf.fused_ops import lean_conv_norm

    torch.manual_seed(0)
    conv_class = OverLoCKDepthwiseConv2d if groups > 1 else torch.nn.Conv2d
    conv = conv_class(6, 6, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=groups,
                      bias=False).double()
    norm = torch.nn.BatchNorm2d(6, momentum=momentum).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.normal_()
    ref_conv, ref_norm = copy.deepcopy(conv), copy.deepcopy(norm)
    x = torch.randn(3, 6, 11, 9, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x_ref = x.clone().requires_grad_()
    x.requires_grad_()
    for step in range(2):  # the second step uses the running statistics updated by the first
        out = lean_conv_norm(x, conv, norm)
        ref = ref_norm(ref_conv(x_ref))
        assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
        grad = torch.randn_like(ref)
        ours = torch.autograd.grad(out, (x, conv.weight, norm.weight, norm.bias), grad)
        theirs = torch.autograd.grad(ref, (x_ref, ref_conv.weight, ref_norm.weight, ref_norm.bias), grad)
        for a, b in zip(ours, theirs):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(norm, name), getattr(ref_norm, name)), (step, name)


def test_lean_conv_norm_runs_the_modules_in_eval_mode():
    from overlock_hf.fused_ops import lean_conv_norm

    conv, norm = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4).eval()
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert torch.equal(lean_conv_norm(x, conv, norm), norm(conv(x)))
    assert int(norm.num_batches_tracked) == 0


def test_training_gradients_equal_the_plain_formulas(monkeypatch):
    """Every parameter gradient of a train-mode step with the memory- and speed-lean paths (GRN/SE folded into the
    next conv, lean conv+BN, GELU recomputation) equals the plain composition's, in float64."""
    import overlock_hf.modeling_overlock as modeling

    torch.manual_seed(0)
    model = OverLoCKForImageClassification(tiny_config()).double().train()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("gamma", "beta")):
                parameter.normal_()  # GRN starts as the identity: make it act
    plain = copy.deepcopy(model)
    pixels, labels = torch.randn(3, 3, 128, 160, dtype=torch.float64), torch.tensor([1, 2, 3])

    def gradients(net):
        torch.manual_seed(1)
        net(pixel_values=pixels, labels=labels).loss.backward()
        return {name: p.grad for name, p in net.named_parameters() if p.grad is not None}

    ours = gradients(model)
    monkeypatch.setattr(modeling, "gelu_into", lambda layer, pre: layer(torch.nn.functional.gelu(pre)))
    monkeypatch.setattr(modeling, "lean_conv_norm", lambda x, conv, norm: norm(conv(x)))
    monkeypatch.setattr(modeling.OverLoCKGRN, "forward_into", lambda self, x, conv: conv(self(x)))
    monkeypatch.setattr(modeling.OverLoCKSqueezeExcite, "forward_into", lambda self, x, conv: conv(self(x)))
    reference = gradients(plain)
    assert ours.keys() == reference.keys()
    scale = max(float(g.abs().max()) for g in reference.values())
    for name, grad in reference.items():
        # gradients that are zero in exact arithmetic (biases before a train-mode BatchNorm) are rounding noise:
        # compare against the step's largest gradient
        assert float((ours[name] - grad).abs().max()) <= 1e-10 * scale, name
