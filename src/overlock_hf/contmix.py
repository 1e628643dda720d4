"""ContMix: the dynamic-kernel aggregation at the heart of OverLoCK's Focus-Net.

For every pixel the Focus-Net predicts ``K*K`` kernel logits per group. ContMix adds a relative-position
bias, takes a softmax over the taps and aggregates the values of a ``K x K`` window around the pixel.
Windows never leave the feature map: near a border the window *shifts inward* (the start row is
``clamp(i - K//2, 0, H - K)``), exactly like NATTEN's ``na2d_av`` with dilation 1, so ``H >= K`` and
``W >= K`` are required.

Tensor layouts (the ones the model produces without copies):

* ``logits``: ``(B, G, H, W, K*K)`` kernel logits, tap ``a*K + b`` is row ``a``, column ``b`` of the window.
* ``rpb``: ``(G, 2K-1, 2K-1)`` relative-position bias table, indexed by key position minus query position
  (offset by ``K-1``).
* ``value``: ``(B, G, C, H, W)``, the grouped NCHW layout: a ``(B, G*C, H, W)`` feature map viewed as
  ``(B, G, C, H, W)`` without a copy.
* output: ``(B, G, C, H, W)``, likewise viewable as ``(B, G*C, H, W)``.

This module holds the pure-PyTorch reference (the ground truth and the fallback, memory-lean: its largest
intermediate is one value-sized tensor, in training as well) and the :class:`ContMix` layer the model calls,
which the kernels hub can swap for the fused op (see :func:`overlock_hf.kernelize`).
"""

from __future__ import annotations

import torch
from torch import nn

from .contmix_windowed import window_starts, windowed_aggregate

try:  # optional: tags the layer so that `kernels.kernelize` can replace its forward
    from kernels import use_kernel_forward_from_hub
except Exception:  # kernels not installed (or broken): the layer stays the PyTorch reference

    def use_kernel_forward_from_hub(layer_name: str):
        def decorate(cls):
            return cls

        return decorate


__all__ = [
    "ContMix",
    "check_contmix_inputs",
    "contmix_pytorch",
    "contmix_reference",
    "neighborhood_aggregate",
    "relative_position_bias",
    "window_starts",
    "windowed_aggregate",
]


def _window_indices(length: int, kernel_size: int, device=None) -> torch.Tensor:
    """Key positions of each query's window along one axis: ``(length, K)`` int64."""
    return window_starts(length, kernel_size, device)[:, None] + torch.arange(kernel_size, device=device)


def relative_position_bias(rpb: torch.Tensor, height: int, width: int, kernel_size: int) -> torch.Tensor:
    """Expand a ``(G, 2K-1, 2K-1)`` bias table to the per-pixel, per-tap bias ``(G, H, W, K*K)``.

    The bias of tap ``(a, b)`` for query ``(i, j)`` is ``rpb[g, K-1 + (si+a) - i, K-1 + (sj+b) - j]``.
    """
    k = kernel_size
    rows = _window_indices(height, k, rpb.device) - torch.arange(height, device=rpb.device)[:, None] + (k - 1)
    cols = _window_indices(width, k, rpb.device) - torch.arange(width, device=rpb.device)[:, None] + (k - 1)
    # (G, H, K, 2K-1) then (G, H, K, W, K)
    bias = rpb[:, rows]
    bias = bias[:, :, :, cols]
    return bias.permute(0, 1, 3, 2, 4).reshape(rpb.shape[0], height, width, k * k)


class _NeighborhoodAggregate(torch.autograd.Function):
    """Clamped-window aggregation with a hand-written backward, so that autograd saves only the inputs.

    Both passes loop over the ``K*K`` taps and touch one value-sized tensor at a time: no ``K*K``-times-larger
    tensor is ever built or saved, in inference or in training.
    """

    @staticmethod
    def forward(ctx, weights: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
        b, g, c, h, w = value.shape
        k = kernel_size
        rows, cols = _window_indices(h, k, value.device), _window_indices(w, k, value.device)
        # taps first, (B, G, K*K, H, W): each tap's weights are then one contiguous map, broadcast over C
        taps_first = weights.reshape(b, g, h, w, k * k).permute(0, 1, 4, 2, 3).contiguous()
        out = value.new_zeros(b, g, c, h, w)
        for a in range(k):
            window_row = value.index_select(3, rows[:, a])  # row si+a for every query row i
            for col in range(k):
                tap = window_row.index_select(4, cols[:, col])  # column sj+col for every query column j
                out.addcmul_(taps_first[:, :, a * k + col].unsqueeze(2), tap)
        ctx.save_for_backward(taps_first, value)
        ctx.kernel_size = k
        ctx.weights_shape = weights.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        taps_first, value = ctx.saved_tensors
        k = ctx.kernel_size
        b, g, c, h, w = value.shape
        rows, cols = _window_indices(h, k, value.device), _window_indices(w, k, value.device)
        grad_taps = torch.empty_like(taps_first) if ctx.needs_input_grad[0] else None
        grad_value = torch.zeros_like(value) if ctx.needs_input_grad[1] else None
        for a in range(k):
            window_row = value.index_select(3, rows[:, a])
            grad_row = torch.zeros_like(value) if grad_value is not None else None
            for col in range(k):
                t = a * k + col
                if grad_taps is not None:
                    tap = window_row.index_select(4, cols[:, col])
                    torch.sum(grad_out * tap, dim=2, out=grad_taps[:, :, t])
                if grad_row is not None:
                    grad_row.index_add_(4, cols[:, col], grad_out * taps_first[:, :, t].unsqueeze(2))
            if grad_value is not None:
                grad_value.index_add_(3, rows[:, a], grad_row)
        grad_weights = None
        if grad_taps is not None:
            grad_weights = grad_taps.permute(0, 1, 3, 4, 2).reshape(ctx.weights_shape)
        return grad_weights, grad_value, None


def neighborhood_aggregate(weights: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``out[..., i, j] = sum_{a,b} weights[..., i, j, a*K+b] * value[..., si+a, sj+b]`` (NATTEN ``na2d_av``).

    Args:
        weights: ``(B, G, H, W, K*K)`` aggregation weights (already normalized).
        value: ``(B, G, C, H, W)`` values.
    Returns:
        ``(B, G, C, H, W)``; differentiable in ``weights`` and ``value``.
    """
    return _NeighborhoodAggregate.apply(weights, value, kernel_size)


def check_contmix_inputs(logits: torch.Tensor, rpb: torch.Tensor, value: torch.Tensor, kernel_size: int) -> None:
    """Raise ``ValueError`` / ``TypeError`` with a clear message when ContMix inputs do not fit together."""
    k = kernel_size
    if not isinstance(k, int) or k < 3 or k % 2 == 0:
        raise ValueError(f"ContMix kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    if value.dim() != 5:
        raise ValueError(f"ContMix value must be (B, G, C, H, W), got shape {tuple(value.shape)}")
    b, g, c, h, w = value.shape
    if h < k or w < k:
        raise ValueError(f"ContMix needs a feature map at least {k}x{k} for kernel_size={k}, got {h}x{w}")
    if tuple(logits.shape) != (b, g, h, w, k * k):
        raise ValueError(
            f"ContMix logits must be (B, G, H, W, K*K) = {(b, g, h, w, k * k)} to match value "
            f"{tuple(value.shape)} and kernel_size={k}, got {tuple(logits.shape)}"
        )
    if tuple(rpb.shape) != (g, 2 * k - 1, 2 * k - 1):
        raise ValueError(
            f"ContMix rpb must be (G, 2K-1, 2K-1) = {(g, 2 * k - 1, 2 * k - 1)}, got {tuple(rpb.shape)}"
        )
    for name, tensor in (("logits", logits), ("rpb", rpb), ("value", value)):
        if not tensor.is_floating_point():
            raise TypeError(f"ContMix {name} must be a floating-point tensor, got {tensor.dtype}")
    if not (logits.device == rpb.device == value.device):
        raise ValueError(
            f"ContMix inputs must be on one device, got logits on {logits.device}, rpb on {rpb.device}, "
            f"value on {value.device}"
        )


def contmix_reference(logits: torch.Tensor, rpb: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Bias add + softmax over taps + clamped-window aggregation, in plain PyTorch (autograd for backward).

    Shapes as in the module docstring; returns ``(B, G, C, H, W)`` in ``value``'s dtype. The softmax and the
    aggregation run in float32 for half-precision inputs.
    """
    return _contmix(logits, rpb, value, kernel_size, neighborhood_aggregate)


def contmix_pytorch(logits: torch.Tensor, rpb: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The default ContMix: :func:`contmix_reference`'s bias and softmax, aggregation by
    :func:`windowed_aggregate` (tiled matmuls). Same shapes, dtypes and gradients as the reference."""
    return _contmix(logits, rpb, value, kernel_size, windowed_aggregate)


def _contmix(logits, rpb, value, kernel_size, aggregate):
    check_contmix_inputs(logits, rpb, value, kernel_size)
    h, w = value.shape[-2:]
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    bias = relative_position_bias(rpb.to(compute_dtype), h, w, kernel_size)
    weights = torch.softmax(logits.to(compute_dtype) + bias.unsqueeze(0), dim=-1)
    out = aggregate(weights, value.to(compute_dtype), kernel_size)
    return out.to(value.dtype)


@use_kernel_forward_from_hub("ContMix")
class ContMix(nn.Module):
    """Stateless layer wrapping :func:`contmix_pytorch`; the kernels hub swaps its ``forward``.

    ``forward(logits (B,G,H,W,K*K), rpb (G,2K-1,2K-1), value (B,G,C,H,W), kernel_size) -> (B,G,C,H,W)``.
    """

    def forward(self, logits: torch.Tensor, rpb: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
        return contmix_pytorch(logits, rpb, value, kernel_size)
