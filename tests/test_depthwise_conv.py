"""The CPU-fast depthwise conv (channels-last forward, own backward) equals F.conv2d, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from overlock_hf.depthwise_conv import OverLoCKDepthwiseConv2d, depthwise_conv2d


def _max_err(a, b):
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


@pytest.mark.parametrize(
    "n, c, h, w, k, dilation, bias",
    [(2, 3, 19, 19, 17, 1, True), (1, 4, 20, 18, 15, 1, False), (1, 2, 33, 31, 15, 2, True),
     (1, 4, 20, 18, 7, 1, False), (2, 2, 15, 17, 9, 1, True), (1, 2, 25, 23, 7, 2, True), (1, 3, 40, 38, 9, 2, True),
     (2, 3, 9, 11, 3, 1, True), (1, 2, 12, 10, 5, 2, False), (2, 3, 14, 14, 3, 3, False), (1, 3, 12, 13, 5, 1, True)],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_conv2d_values_and_gradients(n, c, h, w, k, dilation, bias, channels_last):
    """Own backward (K >= 5 or dilated; the weight gradient channels-last below K = 15, NCHW from it) or stock
    F.conv2d (undilated 3x3), NCHW and channels-last inputs: same as F.conv2d."""
    gen = torch.Generator().manual_seed(k * 10 + dilation)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(c, 1, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    grad = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    leaves = (x, weight) + ((b,) if bias else ())
    ref = F.conv2d(x, weight, b, padding=dilation * (k - 1) // 2, dilation=dilation, groups=c)
    out = depthwise_conv2d(x, weight, b, dilation)
    assert _max_err(out.detach(), ref.detach()) <= 1e-12
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for ours, theirs in zip(torch.autograd.grad(out, leaves, grad), torch.autograd.grad(ref, leaves, grad)):
        assert _max_err(ours, theirs) <= 1e-12


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 9, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 15, 15, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: depthwise_conv2d(*t, 1), (x, weight, b), fast_mode=True)


def test_module_keeps_conv2d_state_dict_and_result():
    conv = OverLoCKDepthwiseConv2d(6, 6, 13, padding=6, groups=6)
    stock = torch.nn.Conv2d(6, 6, 13, padding=6, groups=6)
    stock.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 16, 15)
    with torch.no_grad():
        assert _max_err(conv(x), stock(x)) <= 1e-5
        assert conv(x).is_contiguous()


def test_bf16_autocast_training_step_runs():
    conv = OverLoCKDepthwiseConv2d(4, 4, 15, padding=7, groups=4)
    x = torch.randn(1, 4, 12, 12, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        out = conv(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert conv.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
