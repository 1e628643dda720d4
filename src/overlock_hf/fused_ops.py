"""Elementwise-heavy layers of OverLoCK written for few passes over memory, in either memory layout.

The model runs channels-last (NHWC) on the CPU, where oneDNN's convolutions are fastest; a naive reduction over
the spatial axes of such a tensor is slow, and autograd's backward of a composite GRN makes five passes over
the largest maps of the network. This module holds:

* :func:`spatial_l2_norm`: ``||x[b, c]||_2`` over ``(H, W)``, vectorized along the channels for NHWC tensors;
* :func:`global_response_norm`: GRN ``y = (gamma * n + 1) * x + beta`` with ``n = E / (mean_c E + 1e-6)``,
  ``E = spatial_l2_norm(x)``; one pass forward, two passes backward (a hand-written gradient that saves only
  ``x`` and per-channel statistics).

Shapes: ``x (B, C, H, W)`` in any memory layout, ``gamma`` and ``beta`` ``(1, C, 1, 1)``; outputs keep ``x``'s
layout. Kept out of the model file so the model stays readable; copied with it for ``trust_remote_code``.
"""

from __future__ import annotations

import torch

__all__ = ["global_response_norm", "is_channels_last", "spatial_l2_norm"]

GRN_EPS = 1e-6


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels-last (NHWC in memory) that is not also plain contiguous."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def spatial_l2_norm(x: torch.Tensor) -> torch.Tensor:
    """``||x[b, c]||_2`` over the spatial axes: ``(B, C, H, W) -> (B, C, 1, 1)``, in ``x``'s dtype.

    Accumulates in float32 for half-precision inputs. Differentiable (autograd).
    """
    if not is_channels_last(x) or x.dtype != torch.float32:
        return torch.linalg.vector_norm(x, ord=2, dim=(2, 3), keepdim=True)
    b, c = x.shape[:2]
    # NHWC: a reduction over the outer axis of a (B, H*W, C) view, vectorized along the channels
    return x.permute(0, 2, 3, 1).reshape(b, -1, c).square().sum(1).sqrt().view(b, c, 1, 1)


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
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, gamma, beta)):
        return _GlobalResponseNorm.apply(x, gamma, beta)
    _, _, scale = _grn_scale(spatial_l2_norm(x), gamma)
    return torch.addcmul(beta, scale, x)
