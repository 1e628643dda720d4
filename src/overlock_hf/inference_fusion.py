"""Inference folding: every BatchNorm that sits next to a convolution is folded into it.

:func:`fuse_for_inference` first re-parameterizes the DilatedReparam convs (:meth:`reparameterize`), then folds

* every conv + BN pair built by ``conv_norm`` (stem, downsamples, context downsample, ContMix query/key,
  ``contmix_proj``, ``gate``, the classifier's projection);
* the BN after each large-kernel conv (Base/Overview-Net blocks), after the Focus-Net's ``lepe`` conv and after
  its ``fusion_dwconv``;
* the Focus-Net's ``proj_norm`` into the following 1x1 ``proj`` (a BN *before* a 1x1 conv folds exactly);
* the identity of every residual depthwise conv (``x + DWConv(x)``) into the conv's centre tap.

On the CPU the kernels of the dense convolutions are then stored channels-last, the layout the network runs in
there (oneDNN would otherwise reorder them on every call).

The folded BNs become ``nn.Identity``. Only the auxiliary head's BN stays (it is not computed in eval mode).
The result computes the eval-mode function of the unfolded model (equal to about 1e-6 relative in float32).

A fused model cannot be saved: its layout (biased convs, no BatchNorm keys) has no configuration flag that
``from_pretrained`` could rebuild, so ``save_pretrained`` raises. Save before fusing and fuse after loading.
"""

from __future__ import annotations

import torch
from torch import nn

from .modeling_overlock import (
    OverLoCKDynamicConvBlock,
    OverLoCKPreTrainedModel,
    OverLoCKRepConvBlock,
    OverLoCKResidualDepthwiseConv,
)

__all__ = ["fuse_for_inference"]

# (conv, following BN) attribute paths inside each block type
_CONV_THEN_NORM = {
    OverLoCKRepConvBlock: [("large_kernel.large_kernel", "large_kernel_norm")],
    OverLoCKDynamicConvBlock: [("fusion_dwconv", "fusion_norm"), ("lepe.large_kernel", "lepe_norm")],
}
# (preceding BN, 1x1 conv)
_NORM_THEN_CONV = {OverLoCKDynamicConvBlock: [("proj_norm", "proj")]}


def _bn_affine(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``y = scale * x + shift`` per channel."""
    scale = norm.weight / (norm.running_var + norm.eps).sqrt()
    return scale, norm.bias - norm.running_mean * scale


def _set_bias(conv: nn.Conv2d, bias: torch.Tensor) -> None:
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.clone())
    else:
        conv.bias.copy_(bias)


def fold_norm_after_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """``BN(conv(x))`` -> ``conv'(x)`` in place (any kernel size, groups, stride; bias optional)."""
    scale, shift = _bn_affine(norm)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    _set_bias(conv, bias * scale + shift)


def fold_norm_before_conv(norm: nn.BatchNorm2d, conv: nn.Conv2d) -> None:
    """``conv(BN(x))`` -> ``conv'(x)`` in place; exact only for an ungrouped 1x1 conv without padding."""
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding != (0, 0):
        raise ValueError(f"a BatchNorm folds into a following conv only when it is an ungrouped 1x1, got {conv}")
    scale, shift = _bn_affine(norm)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=shift.device)
    _set_bias(conv, bias + conv.weight[:, :, 0, 0] @ shift)
    conv.weight.mul_(scale.view(1, -1, 1, 1))


@torch.no_grad()
def fuse_for_inference(model: OverLoCKPreTrainedModel) -> OverLoCKPreTrainedModel:
    """Re-parameterize and fold every foldable BatchNorm of an OverLoCK model, in place; returns it in eval mode.

    The model then refuses ``save_pretrained`` (see the module docstring); training it afterwards trains a
    network without those BatchNorms.
    """
    if not isinstance(model, OverLoCKPreTrainedModel):
        raise TypeError(f"fuse_for_inference expects an OverLoCK model, got {type(model).__name__}")
    model.eval()
    model.reparameterize()
    for module in list(model.modules()):
        if (isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], nn.Conv2d)
                and isinstance(module[1], nn.BatchNorm2d)):
            fold_norm_after_conv(module[0], module[1])
            module[1] = nn.Identity()
        for kind, pairs in _CONV_THEN_NORM.items():
            if isinstance(module, kind):
                for conv_path, norm_name in pairs:
                    fold_norm_after_conv(module.get_submodule(conv_path), getattr(module, norm_name))
                    setattr(module, norm_name, nn.Identity())
        for kind, pairs in _NORM_THEN_CONV.items():
            if isinstance(module, kind):
                for norm_name, conv_name in pairs:
                    fold_norm_before_conv(getattr(module, norm_name), getattr(module, conv_name))
                    setattr(module, norm_name, nn.Identity())
    for module in model.modules():
        if isinstance(module, OverLoCKResidualDepthwiseConv):
            module.fold_identity()
        if isinstance(module, nn.Conv2d) and module.weight.device.type == "cpu" and module.kernel_size != (1, 1):
            # the network runs channels-last on the CPU: a dense kernel stored so needs no reorder per call
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
        if isinstance(module, OverLoCKPreTrainedModel):
            module.is_fused_for_inference = True
    return model
