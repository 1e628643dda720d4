"""Depthwise "same" convolutions that are fast on the CPU, forward and backward.

On the CPU (oneDNN, torch 2.x) a large depthwise kernel is about 10x faster on a channels-last input than on
an NCHW one. :func:`depthwise_conv2d` runs the forward on a channels-last tensor (the model's own layout on
the CPU; an NCHW input is converted and the output converted back) and, when a gradient is needed, uses its
own backward, built from depthwise *forward* convs (oneDNN's best-tuned path):

* input gradient: the same depthwise conv with the kernel flipped (stride 1, symmetric padding);
* weight gradient: each ``(n, c)`` plane of the padded input convolved with its ``grad[n, c]`` plane as the
  kernel ("valid", stride = dilation), summed over ``n``.

At 2 threads (batch 8, the shapes of OverLoCK-XT) the weight gradient takes 7 ms at 15x15 on 28x28 maps and
15 ms at 17x17 on 56x56, against 99 and 185 ms for oneDNN's own channels-last backward and 50 and 121 ms for
the row-GEMM formulation this module used before (``benchmarks/PROFILE_after.md``).

Only the inputs are saved. Undilated 3x3 (and smaller) kernels and other devices use ``F.conv2d`` unchanged.
Layout: ``x (N, C, H, W)``, ``weight (C, 1, K, K)``, ``bias (C,)`` or ``None``; odd ``K``, padding
``dilation * (K - 1) // 2``, output ``(N, C, H, W)`` in ``x``'s memory layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OverLoCKDepthwiseConv2d", "depthwise_conv2d", "depthwise_conv2d_backward", "dilated_to_dense",
           "hand_written_backward"]

# Undilated kernels up to this size keep the stock F.conv2d, whose backward is faster there (3x3 on 14x14 maps,
# batch 8, 1 thread: 1.1 against 3.4 ms forward+backward). oneDNN's backward is slow for 5x5 and for every dilated
# kernel (5x5: 6.5 against 4.2 ms; 3x3 at dilation 3-5 on the model's maps: 1.2-1.7x; 5x5 at dilation 2: 1.7-2.5x)
SMALL_KERNEL = 3
DENSE_DILATED_KERNEL = 9  # dilated kernels from this size on run as their dense equivalent (measured, 2 threads)
# The weight gradient's plane conv is faster channels-last below this kernel size, NCHW from it on (measured, 1
# thread, batch 8: 13x13 on 14x14 maps 5 against 17 ms; 17x17 on 56x56 45 against 37 ms; 15x15 on 28x28 about even)
NCHW_WEIGHT_GRAD_KERNEL = 15


def hand_written_backward(*tensors: torch.Tensor | None) -> bool:
    """Whether to use a hand-written autograd Function: eager mode, gradients on, and one input needs them
    (under ``torch.compile`` the plain formulas run: inductor plans memory and fuses elementwise work itself)."""
    return (torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and any(t is not None and t.requires_grad for t in tensors))


def dilated_to_dense(weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """A dilated `k x k` depthwise kernel as its dense `(r(k-1)+1)`-wide equivalent (zeros between taps)."""
    if dilation == 1:
        return weight
    channels, _, k, _ = weight.shape
    size = dilation * (k - 1) + 1
    dense = weight.new_zeros(channels, 1, size, size)
    dense[:, :, ::dilation, ::dilation] = weight
    return dense


def _forward(x: torch.Tensor, weight: torch.Tensor, bias, dilation: int) -> torch.Tensor:
    """The conv on a channels-last copy of ``x``; the output comes back in ``x``'s layout.

    A dilated kernel of 9 or more taps a side runs as its dense zero-filled equivalent: oneDNN's dilated depthwise
    path is slow there (9x9 at dilation 2 on 56x56 maps: 16.5 ms, against 6.4 ms for the dense 17x17)."""
    k = weight.shape[-1]
    padding = dilation * (k - 1) // 2
    if dilation > 1 and k >= DENSE_DILATED_KERNEL:
        weight, dilation = dilated_to_dense(weight, dilation), 1
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    out = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias, padding=padding,
                   dilation=dilation, groups=weight.shape[0])
    return out if channels_last else out.contiguous()


def _weight_grad(x: torch.Tensor, grad: torch.Tensor, k: int, dilation: int) -> torch.Tensor:
    """``dW[c, a, b] = sum_{n,i,j} xpad[n, c, i + d*a, j + d*b] * grad[n, c, i, j]`` -> ``(C, 1, K, K)``.

    Computed as one depthwise *forward* conv, oneDNN's fastest path: every ``(n, c)`` plane of the padded input
    is a channel of one image, convolved ("valid", stride ``d``) with its own ``grad[n, c]`` as the kernel; the
    ``(1, N*C, K, K)`` result summed over ``n``.
    """
    n, c, h, w = x.shape
    p = dilation * (k - 1) // 2
    if k >= NCHW_WEIGHT_GRAD_KERNEL:  # the padded input as (1, N*C, H+2p, W+2p), NCHW
        padded = x.new_zeros(n, c, h + 2 * p, w + 2 * p)
        padded[:, :, p : p + h, p : p + w] = x
        planes = padded.view(1, n * c, h + 2 * p, w + 2 * p)
    else:  # the same, channels-last (memory: rows, columns, n, c); built 4-d, as an ``unsqueeze`` would give the
        # batch dim a stride that oneDNN reads as NCHW (and copies to it)
        padded = x.new_zeros(1, h + 2 * p, w + 2 * p, n, c)
        padded[0, p : p + h, p : p + w] = x.permute(2, 3, 0, 1)
        planes = padded.view(1, h + 2 * p, w + 2 * p, n * c).permute(0, 3, 1, 2)
    kernels = grad.reshape(n * c, 1, h, w)
    out = F.conv2d(planes, kernels, None, stride=dilation, groups=n * c)  # (1, N*C, K, K)
    return out.view(n, c, k, k).sum(0).unsqueeze(1)


def _own_backward(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor, dilation: int,
                  needs: tuple[bool, bool]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(grad_x, grad_weight)`` from depthwise forward convs (see the module docstring); None where not needed."""
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    grad_out = grad_out.contiguous(memory_format=layout)
    grad_x = grad_w = None
    if needs[0]:
        grad_x = _forward(grad_out, weight.flip(-1, -2), None, dilation).to(x.dtype)
    if needs[1]:
        compute = torch.promote_types(x.dtype, grad_out.dtype)
        grad_w = _weight_grad(x.to(compute), grad_out.to(compute), weight.shape[-1], dilation).to(weight.dtype)
    return grad_x, grad_w


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, dilation):
        ctx.save_for_backward(x, weight)
        ctx.dilation, ctx.has_bias = dilation, bias is not None
        return _forward(x, weight, bias, dilation)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x, grad_w = _own_backward(x, weight, grad_out, ctx.dilation, ctx.needs_input_grad[:2])
        grad_b = grad_out.sum((0, 2, 3)).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def _stock(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> bool:
    """Whether :func:`depthwise_conv2d` leaves this conv to ``F.conv2d`` (and its backward to autograd's)."""
    k = weight.shape[-1]
    return (x.device.type != "cpu" or (k <= SMALL_KERNEL and dilation == 1) or k % 2 == 0
            or k != weight.shape[-2])


def _same_padding(weight: torch.Tensor, dilation: int) -> list[int]:
    return [dilation * (weight.shape[-2] - 1) // 2, dilation * (weight.shape[-1] - 1) // 2]


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     dilation: int = 1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=d*(K-1)//2, dilation=d, groups=C)``, fast on the CPU."""
    if _stock(x, weight, dilation):
        return F.conv2d(x, weight, bias, padding=_same_padding(weight, dilation), dilation=dilation,
                        groups=weight.shape[0])
    if hand_written_backward(x, weight, bias):
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        with torch.autocast("cpu", enabled=False):
            return _DepthwiseConv.apply(x, weight, bias, dilation)
    return _forward(x, weight, bias, dilation)


def depthwise_conv2d_backward(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor, dilation: int = 1,
                              needs: tuple[bool, bool] = (True, True)):
    """``(grad_x, grad_weight)`` of ``depthwise_conv2d(x, weight, None, dilation)`` for ``grad_out``, None where
    ``needs`` says so, by the same path as its forward. For a caller's own backward pass that recomputed the conv
    (no nested autograd graph)."""
    if _stock(x, weight, dilation):
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out, x, weight, None, [1, 1], _same_padding(weight, dilation), [dilation, dilation], False, [0, 0],
            weight.shape[0], [needs[0], needs[1], False])
        return grad_x, grad_w
    return _own_backward(x, weight, grad_out, dilation, needs)


class OverLoCKDepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` with "same" padding whose forward is :func:`depthwise_conv2d`
    (same parameters and state-dict keys as ``nn.Conv2d``)."""

    def is_same_depthwise(self) -> bool:
        """Whether this conv is what :func:`depthwise_conv2d` computes (else the stock ``nn.Conv2d`` forward runs)."""
        k, d = self.kernel_size[0], self.dilation[0]
        return (self.padding == (d * (k - 1) // 2,) * 2 and self.kernel_size == (k, k) and self.dilation == (d, d)
                and self.groups == self.in_channels == self.out_channels and self.stride == (1, 1)
                and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_same_depthwise():
            return super().forward(x)
        return depthwise_conv2d(x, self.weight, self.bias, self.dilation[0])
