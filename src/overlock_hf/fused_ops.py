"""Elementwise-heavy layers of OverLoCK written for few passes over memory, in either memory layout.

The model runs channels-last (NHWC) on the CPU, where oneDNN's convolutions are fastest; a naive reduction over
the spatial axes of such a tensor is slow, and autograd's backward of a composite GRN makes five passes over
the largest maps of the network. This module holds:

* :func:`spatial_l2_norm`: ``||x[b, c]||_2`` over ``(H, W)``, vectorized along the channels for NHWC tensors;
* :func:`global_response_norm`: GRN ``y = (gamma * n + 1) * x + beta`` with ``n = E / (mean_c E + 1e-6)``,
  ``E = spatial_l2_norm(x)``; one pass forward, two passes backward (a hand-written gradient that saves only
  ``x`` and per-channel statistics);
* :func:`scaled_pointwise_conv`: a 1x1 conv of ``x * scale + shift`` with a per-sample, per-channel ``scale``
  (GRN's and squeeze-excitation's output) as one batched matmul with per-sample weights ``W diag(scale[b])``:
  the scaled map is never built, nor saved for the backward pass.

Shapes: ``x (B, C, H, W)`` in any memory layout, ``gamma`` and ``beta`` ``(1, C, 1, 1)``; outputs keep ``x``'s
layout. Under ``torch.compile`` the hand-written backward passes give way to the plain formulas (inductor plans
memory and fuses elementwise work itself). Kept out of the model file so the model stays readable; copied with it
for ``trust_remote_code``.
"""

from __future__ import annotations

import torch

from .depthwise_conv import OverLoCKDepthwiseConv2d, depthwise_conv2d_backward, hand_written_backward

__all__ = ["global_response_norm", "grn_scale", "is_channels_last", "scaled_pointwise_conv", "spatial_l2_norm"]

GRN_EPS = 1e-6


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels-last (NHWC in memory) that is not also plain contiguous."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _l2_norm(x: torch.Tensor) -> torch.Tensor:
    if not is_channels_last(x) or x.dtype != torch.float32:
        return torch.linalg.vector_norm(x, ord=2, dim=(2, 3), keepdim=True)
    b, c = x.shape[:2]
    # NHWC: a reduction over the outer axis of a (B, H*W, C) view, vectorized along the channels
    return x.permute(0, 2, 3, 1).reshape(b, -1, c).square().sum(1).sqrt().view(b, c, 1, 1)


class _SpatialL2Norm(torch.autograd.Function):
    """Backward in one pass over ``x``: ``dx = x * dE / E`` (zero where ``E = 0``, as torch's norm)."""

    @staticmethod
    def forward(ctx, x):
        energy = _l2_norm(x)
        ctx.save_for_backward(x, energy)
        return energy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, energy = ctx.saved_tensors
        return x * torch.where(energy > 0, grad / energy.clamp_min(torch.finfo(energy.dtype).tiny), 0)


def spatial_l2_norm(x: torch.Tensor) -> torch.Tensor:
    """``||x[b, c]||_2`` over the spatial axes: ``(B, C, H, W) -> (B, C, 1, 1)``, in ``x``'s dtype.

    Accumulates in float32 for half-precision inputs. Differentiable, saving only ``x`` and the result.
    """
    if hand_written_backward(x):
        return _SpatialL2Norm.apply(x)
    return _l2_norm(x)


def grn_scale(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """GRN's per-sample, per-channel multiplier ``gamma * n + 1``: ``(B, C, H, W) -> (B, C, 1, 1)``."""
    return _grn_scale(spatial_l2_norm(x), gamma)[2]


def scaled_pointwise_conv(x: torch.Tensor, scale: torch.Tensor, conv: torch.nn.Conv2d,
                          shift: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(x * scale + shift)`` for an ungrouped 1x1 ``conv``; ``x (B, C, H, W)`` in either layout,
    ``scale (B, C, 1, 1)`` (or ``(B, C)``), ``shift (1, C, 1, 1)`` or ``None``. Returns ``(B, O, H, W)`` in ``x``'s
    layout: one batched matmul with the weights ``W diag(scale[b])`` and the bias ``b + W shift``.

    The per-sample weights ``(B, O, C)`` are saved for the backward pass instead of the scaled map ``(B, C, H, W)``:
    smaller only while ``O < H*W`` (the first two stages); on smaller maps the scaled map is built and the conv
    applied as usual."""
    b, c, h, w = x.shape
    scale = scale.reshape(b, c, 1, 1)
    if conv.out_channels >= h * w:
        return conv(torch.addcmul(shift, x, scale) if shift is not None else x * scale)
    weight = conv.weight.flatten(1)  # (O, C)
    bias = conv.bias if conv.bias is not None else weight.new_zeros(weight.shape[0])
    if shift is not None:
        bias = torch.addmv(bias, weight, shift.reshape(c))
    per_sample = weight * scale.reshape(b, 1, c)  # (B, O, C)
    if is_channels_last(x):
        out = torch.baddbmm(bias, x.permute(0, 2, 3, 1).reshape(b, h * w, c), per_sample.transpose(1, 2))
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, N, O) as a channels-last (B, O, H, W)
    out = torch.baddbmm(bias[:, None], per_sample, x.reshape(b, c, h * w))
    return out.view(b, -1, h, w)


def _grn_scale(energy: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean_c E + eps, n, gamma * n + 1)`` from ``E (B, C, 1, 1)``."""
    mean = energy.mean(dim=1, keepdim=True) + GRN_EPS
    normalized = energy / mean
    return mean, normalized, gamma * normalized + 1


class _GlobalResponseNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta):
        energy = spatial_l2_norm(x)
        mean, normalized, scale = _grn_scale(energy, gamma)
        ctx.save_for_backward(x, gamma, energy, mean, normalized, scale)
        return torch.addcmul(beta, scale, x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, gamma, energy, mean, normalized, scale = ctx.saved_tensors
        channels = x.shape[1]
        # d loss / d scale[b, c] = sum_hw grad * x: the only statistic of the big maps the gradient needs
        grad_scale = (grad * x).sum((2, 3), keepdim=True)
        grad_gamma = (grad_scale * normalized).sum(0, keepdim=True) if ctx.needs_input_grad[1] else None
        grad_beta = grad.sum((0, 2, 3), keepdim=True) if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_norm = grad_scale * gamma  # d loss / d n
            grad_mean = -(grad_norm * energy).sum(1, keepdim=True) / mean.square()
            grad_energy = grad_norm / mean + grad_mean / channels
            # dE/dx = x / E (zero where a channel is all zeros, as torch's norm backward)
            per_x = torch.where(energy > 0, grad_energy / energy.clamp_min(torch.finfo(energy.dtype).tiny), 0)
            grad_x = torch.addcmul(grad * scale, x, per_x)
        return grad_x, grad_gamma, grad_beta


def global_response_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """GRN: ``(gamma * n + 1) * x + beta`` (see the module docstring); ``(B, C, H, W)`` in and out."""
    if hand_written_backward(x, gamma, beta):
        return _GlobalResponseNorm.apply(x, gamma, beta)
    _, _, scale = _grn_scale(spatial_l2_norm(x), gamma)
    return torch.addcmul(beta, scale, x)


def _batch_norm_factor(norm: torch.nn.BatchNorm2d) -> float:
    """The running-statistics momentum `nn.BatchNorm2d.forward` would use now (and its step counted)."""
    norm.num_batches_tracked.add_(1)
    return 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum


class _LeanConvNorm(torch.autograd.Function):
    """``norm(conv(x))`` in training mode, saving only ``x`` and the per-channel batch statistics: the conv output
    is recomputed in the backward pass (one conv forward) instead of being kept."""

    @staticmethod
    def forward(ctx, x, conv_weight, norm_weight, norm_bias, conv, norm):
        factor = _batch_norm_factor(norm)
        out, mean, invstd = torch.ops.aten.native_batch_norm(
            conv(x), norm_weight, norm_bias, norm.running_mean, norm.running_var, True, factor, norm.eps)
        ctx.save_for_backward(x, norm_weight, mean, invstd)
        ctx.conv, ctx.norm = conv, norm
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, norm_weight, mean, invstd = ctx.saved_tensors
        conv, norm = ctx.conv, ctx.norm
        with torch.no_grad():
            conv_out = conv(x)
        grad_conv_out, grad_norm_weight, grad_norm_bias = torch.ops.aten.native_batch_norm_backward(
            grad.contiguous(memory_format=torch.channels_last) if is_channels_last(conv_out) else grad.contiguous(),
            conv_out, norm_weight, norm.running_mean, norm.running_var, mean, invstd, True, norm.eps,
            [True, ctx.needs_input_grad[2], ctx.needs_input_grad[3]])
        grad_x, grad_conv_weight = _conv_input_and_weight_grad(conv, x, grad_conv_out, ctx.needs_input_grad[:2])
        return grad_x, grad_conv_weight, grad_norm_weight, grad_norm_bias, None, None


def _conv_input_and_weight_grad(conv: torch.nn.Conv2d, x: torch.Tensor, grad_out: torch.Tensor, needs):
    """``(grad_x, grad_weight)`` of the bias-free, zero-padded ``conv(x)`` for ``grad_out`` (None where not
    needed), computed directly: no autograd graph is built in the backward pass."""
    if isinstance(conv, OverLoCKDepthwiseConv2d) and conv.is_same_depthwise():
        return depthwise_conv2d_backward(x, conv.weight, grad_out, conv.dilation[0], tuple(needs))
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_out, x, conv.weight, None, list(conv.stride), list(conv.padding), list(conv.dilation), False, [0, 0],
        conv.groups, [needs[0], needs[1], False])
    return grad_x, grad_weight


def lean_conv_norm(x: torch.Tensor, conv: torch.nn.Conv2d, norm: torch.nn.BatchNorm2d) -> torch.Tensor:
    """``norm(conv(x))`` for a bias-free ``conv``; in training with gradients (no autocast) the conv's output is
    not kept for the backward pass (see :class:`_LeanConvNorm`), otherwise the modules run as they are."""
    lean = (norm.training and norm.track_running_stats and conv.bias is None and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str)
            and x.device.type in ("cpu", "cuda") and not torch.is_autocast_enabled(x.device.type)
            and hand_written_backward(x, conv.weight, norm.weight, norm.bias))
    if not lean:
        return norm(conv(x))
    return _LeanConvNorm.apply(x, conv.weight, norm.weight, norm.bias, conv, norm)
