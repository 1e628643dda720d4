"""The fused ContMix op as a PyTorch custom op with fake (meta) and autograd registrations.

Layouts (no permute copies are needed in the model):

* ``logits``: ``(B, G, H, W, K*K)`` kernel logits; tap ``a*K + b`` is row ``a``, column ``b`` of the window.
* ``rpb``: ``(G, 2K-1, 2K-1)`` relative-position bias, indexed by key minus query position plus ``K-1``.
* ``value``: ``(B, G, C, H, W)``, grouped NCHW: a ``(B, G*C, H, W)`` feature map viewed without a copy.
* result: ``(B, G, C, H, W)``, likewise viewable as ``(B, G*C, H, W)``.

``out[b,g,c,i,j] = sum_t softmax_t(logits[b,g,i,j,t] + bias) * value[b,g,c,si+a,sj+b']`` with the window
start ``si = clamp(i - K//2, 0, H-K)`` (the window shifts inward at borders, NATTEN ``na2d`` semantics).
"""

from __future__ import annotations

import torch

from ._ops import add_op_namespace_prefix, ops

__all__ = ["contmix"]

_SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_inputs(logits: torch.Tensor, rpb: torch.Tensor, value: torch.Tensor, kernel_size: int) -> None:
    """Raise ``ValueError`` / ``TypeError`` with a clear message when the inputs do not fit together."""
    k = kernel_size
    if not isinstance(k, int) or isinstance(k, bool) or k < 3 or k % 2 == 0:
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
        if tensor.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(
                f"ContMix {name} must be float32, float64, float16 or bfloat16, got {tensor.dtype}"
            )
    if not (logits.device == rpb.device == value.device):
        raise ValueError(
            f"ContMix inputs must be on one device, got logits on {logits.device}, rpb on {rpb.device}, "
            f"value on {value.device}"
        )


@torch.library.register_fake(add_op_namespace_prefix("contmix_forward"))
def _contmix_forward_fake(logits, rpb, value, kernel_size):
    return value.new_empty(value.shape)


@torch.library.register_fake(add_op_namespace_prefix("contmix_backward"))
def _contmix_backward_fake(grad_out, logits, rpb, value, kernel_size):
    return logits.new_empty(logits.shape), rpb.new_empty(rpb.shape), value.new_empty(value.shape)


def _setup_context(ctx, inputs, output):
    logits, rpb, value, kernel_size = inputs
    ctx.save_for_backward(logits, rpb, value)
    ctx.kernel_size = kernel_size


def _contmix_backward(ctx, grad_out):
    logits, rpb, value = ctx.saved_tensors
    grad_logits, grad_rpb, grad_value = ops.contmix_backward(
        grad_out.contiguous(), logits, rpb, value, ctx.kernel_size
    )
    return grad_logits, grad_rpb, grad_value, None


torch.library.register_autograd(
    add_op_namespace_prefix("contmix_forward"), _contmix_backward, setup_context=_setup_context
)


def contmix(logits: torch.Tensor, rpb: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Fused bias add + softmax over the ``K*K`` taps + clamped-window aggregation.

    Args:
        logits: ``(B, G, H, W, K*K)``.
        rpb: ``(G, 2K-1, 2K-1)``.
        value: ``(B, G, C, H, W)``.
        kernel_size: odd ``K >= 3`` with ``H >= K`` and ``W >= K``.

    Returns:
        ``(B, G, C, H, W)`` in ``value``'s dtype. Float16/bfloat16 inputs are accumulated in float32. When
        ``logits`` and ``value`` dtypes differ both are promoted; ``rpb`` (a small table) is cast to the
        compute dtype. Differentiable with respect to all three tensors.
    """
    _check_inputs(logits, rpb, value, kernel_size)
    compute_dtype = torch.promote_types(logits.dtype, value.dtype)
    out = ops.contmix_forward(
        logits.to(compute_dtype), rpb.to(compute_dtype), value.to(compute_dtype), kernel_size
    )
    return out.to(value.dtype)
