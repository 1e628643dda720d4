"""OverLoCK in PyTorch/transformers: Base-Net, Overview-Net and Focus-Net (ContMix dynamic kernels).

An image goes through the Base-Net (stem and stages 1-3, stride 16), the Overview-Net (stage 4, stride 32),
whose coarse features feed an auxiliary classifier and become the context prior, and the Focus-Net, two
stages of ContMix blocks at strides 16 and 32 guided by that prior. All tensors are NCHW.

Over 300 lines by design: like transformers' own `modeling_*.py`, the whole model is one module, the file the
Hub copies for `trust_remote_code` (with the few helpers in `CODE_FILES`); the sections follow the module tree.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import BackboneOutput
from transformers.utils import ModelOutput

from .configuration_overlock import FEATURE_MAPS, LEGACY_STAGE_NAMES, OverLoCKConfig
from .contmix import ContMix, neighborhood_aggregate, relative_position_bias
# Imported here as well as in contmix.py: transformers 4.x copies only the model file's own relative imports
# into its remote-code module cache, not those of the files it imports.
from .contmix_windowed import windowed_aggregate  # noqa: F401
from .depthwise_conv import OverLoCKDepthwiseConv2d, dilated_to_dense, hand_written_backward
from .fused_ops import global_response_norm, grn_scale, lean_conv_norm, scaled_pointwise_conv

try:  # transformers >= 5: init functions that leave already-loaded weights alone
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init

try:  # transformers >= 5
    from transformers.backbone_utils import BackboneMixin
except ImportError:  # transformers 4.x
    from transformers.utils.backbone_utils import BackboneMixin


MIN_IMAGE_SIZE = 32  # the network downsamples by 32

# Every saved folder carries these files and this map, so it loads with `trust_remote_code=True` anywhere.
CODE_FILES = (
    "configuration_overlock.py", "modeling_overlock.py", "contmix.py", "contmix_windowed.py", "depthwise_conv.py",
    "fused_ops.py", "imagenet_labels.py",
)
AUTO_MAP = {
    "AutoConfig": "configuration_overlock.OverLoCKConfig",
    "AutoModel": "modeling_overlock.OverLoCKModel",
    "AutoModelForImageClassification": "modeling_overlock.OverLoCKForImageClassification",
    "AutoBackbone": "modeling_overlock.OverLoCKBackbone",
}


# ---------------------------------------------------------------------------------------------------- outputs
@dataclass
class OverLoCKModelOutput(ModelOutput):
    """Output of :class:`OverLoCKModel`. The feature maps are named in `FEATURE_MAPS` (configuration_overlock).

    Args:
        last_hidden_state: Focus-Net output (`focus_stride32`), `(B, C4 + Cc, H/32, W/32)`, `Cc = C4 / 4`.
        pooler_output: its global average, `(B, C4 + Cc)`.
        overview_hidden_state: Overview-Net output (`overview`, base stage 4), `(B, C4, H/32, W/32)`.
        hidden_states: when asked, the seven maps in `FEATURE_MAPS` order: `(stem, base_stride4, base_stride8,
            base_stride16, overview, focus_stride16, focus_stride32)`.
        base_hidden_state: Base-Net output (`base_stride16`, base stage 3), `(B, C3, H/16, W/16)`.
        focus_stride16_hidden_state: `[x, context]` after the stride-16 Focus-Net stage (`focus_stride16`),
            `(B, C3 + Cc, H/16, W/16)`.
            The `hierarchical` ablation (no Overview-Net) returns `(stem, stage1, stage2, stage3, stage4)`, its
            `last_hidden_state` is stage 4 `(B, C4, H/32, W/32)`; the Overview-Net and Focus-Net fields are None.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    overview_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    base_hidden_state: torch.FloatTensor | None = None
    focus_stride16_hidden_state: torch.FloatTensor | None = None


@dataclass
class OverLoCKImageClassifierOutput(ModelOutput):
    """Output of :class:`OverLoCKForImageClassification`.

    Args:
        loss: `CE(logits) + aux_loss_weight * CE(aux_logits)` in training mode, `CE(logits)` in eval mode.
        logits: `(B, num_labels)` from the Focus-Net head.
        aux_logits: `(B, num_labels)` from the Overview-Net head; computed in training mode only.
        hidden_states: as in :class:`OverLoCKModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    aux_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------- layers
def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability `drop_prob`, rescale the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class OverLoCKDropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class OverLoCKLayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class OverLoCKLayerScale(nn.Module):
    """Per-channel affine `y = weight * x + bias` (weight stored as `(C, 1, 1, 1)`, bias as `(C,)`)."""

    def __init__(self, channels: int, init_value: float = 1.0):
        super().__init__()
        self.init_value = init_value
        self.weight = nn.Parameter(torch.full((channels, 1, 1, 1), float(init_value)))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


class OverLoCKGRN(nn.Module):
    """Global Response Normalization: `y = (gamma * n + 1) * x + beta`, `n` the channel-normalized L2 energy."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_response_norm(x, self.gamma, self.beta)

    def forward_into(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """`conv(self(x))` for the 1x1 `conv` that follows, without building (or saving) the normalized map."""
        return scaled_pointwise_conv(x, grn_scale(x, self.gamma), conv, self.beta)


class OverLoCKSqueezeExcite(nn.Module):
    """Channel attention: `x * sigmoid(fc2(gelu(fc1(avgpool(x)))))`, hidden width `max(16, C // 8)`."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(16, channels // 8)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C)` channel weights; the 1x1 convs of the pooled `(B, C, 1, 1)` map as linear layers on `(B, C)`."""
        scale = F.linear(F.gelu(F.linear(x.mean(dim=(2, 3)), self.fc1.weight.flatten(1), self.fc1.bias)),
                         self.fc2.weight.flatten(1), self.fc2.bias)
        return torch.sigmoid(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._scale(x)[:, :, None, None]

    def forward_into(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """`conv(self(x))` for the 1x1 `conv` that follows, without building (or saving) the excited map."""
        return scaled_pointwise_conv(x, self._scale(x), conv)


def _gelu_then(layer: nn.Module, pre_activation: torch.Tensor) -> torch.Tensor:
    return layer(F.gelu(pre_activation))


def gelu_into(layer: nn.Module, pre_activation: torch.Tensor) -> torch.Tensor:
    """`layer(gelu(pre_activation))` for a stateless-in-training `layer` (a conv, never a BatchNorm). In training the
    GELU's output is not kept for the backward pass but recomputed there with `layer`'s forward: of the two maps
    only `pre_activation` is saved."""
    if hand_written_backward(pre_activation):
        return checkpoint(_gelu_then, layer, pre_activation, use_reentrant=False)
    return _gelu_then(layer, pre_activation)


class OverLoCKResidualDepthwiseConv(OverLoCKDepthwiseConv2d):
    """`y = x + DWConv3x3(x)` (depthwise, with bias).

    `fuse_for_inference` adds the identity to the kernel's centre tap (`identity_folded`): one conv, no add.
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.identity_folded = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if self.identity_folded else x + out

    @torch.no_grad()
    def fold_identity(self) -> None:
        """Make the conv compute `x + DWConv(x)` by itself (centre tap + 1), in place."""
        if not self.identity_folded:
            centre = self.kernel_size[0] // 2
            self.weight[:, 0, centre, centre] += 1
            self.identity_folded = True


def depthwise_conv(channels: int, kernel_size: int, dilation: int = 1, bias: bool = False) -> nn.Conv2d:
    padding = (dilation * (kernel_size - 1) + 1) // 2
    return OverLoCKDepthwiseConv2d(channels, channels, kernel_size, padding=padding, dilation=dilation,
                                   groups=channels, bias=bias)


def conv_norm(in_channels: int, out_channels: int, config: OverLoCKConfig, kernel_size: int = 1, stride: int = 1):
    """Convolution without bias followed by BatchNorm (as a two-module Sequential: `0` conv, `1` norm)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps),
    )


class OverLoCKDilatedBranch(nn.Module):
    """One DilatedReparam branch: dilated depthwise `k x k` conv (no bias) + BatchNorm."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, eps: float):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.conv = depthwise_conv(channels, kernel_size, dilation)
        self.norm = nn.BatchNorm2d(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def fuse_conv_bn(weight: torch.Tensor, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding bias-free conv: returns (weight, bias)."""
    std = (norm.running_var + norm.eps).sqrt()
    scale = norm.weight / std
    return weight * scale.view(-1, 1, 1, 1), norm.bias - norm.running_mean * scale


class OverLoCKDilatedReparamConv(nn.Module):
    """UniRepLKNet's DilatedReparam block: a large depthwise kernel plus parallel dilated small kernels.

    `y = BN(DWConv_KxK(x)) + sum_(k, r) BN(DWConv_kxk,dilation r(x))`; after :meth:`reparameterize` it is a single
    biased depthwise `K x K` conv computing the same function (eval-mode statistics).
    """

    def __init__(self, channels: int, kernel_size: int, branches: list[tuple[int, int]], eps: float,
                 reparameterized: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.large_kernel = depthwise_conv(channels, kernel_size, bias=reparameterized)
        if reparameterized:
            self.large_kernel_norm = None
            self.branches = nn.ModuleList()
        else:
            self.large_kernel_norm = nn.BatchNorm2d(channels, eps=eps)
            self.branches = nn.ModuleList(OverLoCKDilatedBranch(channels, k, r, eps) for k, r in branches)

    @property
    def is_reparameterized(self) -> bool:
        return self.large_kernel_norm is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_reparameterized:
            return self.large_kernel(x)
        # in training each conv output stays out of memory until the backward pass recomputes it
        out = lean_conv_norm(x, self.large_kernel, self.large_kernel_norm)
        for branch in self.branches:
            out = out + lean_conv_norm(x, branch.conv, branch.norm)
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every branch and BatchNorm into one biased depthwise `K x K` conv, in place."""
        if self.is_reparameterized:
            return
        weight, bias = fuse_conv_bn(self.large_kernel.weight, self.large_kernel_norm)
        for branch in self.branches:
            branch_weight, branch_bias = fuse_conv_bn(branch.conv.weight, branch.norm)
            dense = dilated_to_dense(branch_weight, branch.dilation)
            pad = (self.kernel_size - dense.shape[-1]) // 2
            weight = weight + F.pad(dense, [pad] * 4)
            bias = bias + branch_bias
        fused = depthwise_conv(weight.shape[0], self.kernel_size, bias=True).to(weight.device, weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.large_kernel = fused
        self.large_kernel_norm = None
        self.branches = nn.ModuleList()


# ---------------------------------------------------------------------------------------------------- blocks
class OverLoCKStem(nn.Module):
    """Four 3x3 convs (strides 2, 1, 2, 1) with BatchNorm and GELU: image -> stride-4 features of C1 channels."""

    def __init__(self, config: OverLoCKConfig):
        super().__init__()
        half, full = config.hidden_sizes[0] // 2, config.hidden_sizes[0]
        self.conv1 = conv_norm(config.num_channels, half, config, 3, stride=2)
        self.conv2 = conv_norm(half, half, config, 3)
        self.conv3 = conv_norm(half, full, config, 3, stride=2)
        self.conv4 = conv_norm(full, full, config, 3)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixel_values)
        for conv, norm in (self.conv2, self.conv3, self.conv4):  # GELU, conv, BN
            x = norm(gelu_into(conv, x))
        return x


class OverLoCKRepConvBlock(nn.Module):
    """Base-Net / Overview-Net block: residual DW conv, then a DilatedReparam large-kernel branch with SE and a GRN MLP.

    `(B, C, H, W) -> (B, C, H, W)`.
    """

    def __init__(self, config: OverLoCKConfig, channels: int, kernel_size: int, use_layer_scale: bool,
                 drop_path_rate: float):
        super().__init__()
        hidden = int(channels * config.mlp_ratio)
        self.dwconv = OverLoCKResidualDepthwiseConv(channels)
        self.norm = OverLoCKLayerNorm2d(channels, eps=config.layer_norm_eps)
        self.large_kernel = OverLoCKDilatedReparamConv(
            channels, kernel_size, config.branches_for(kernel_size) if not config.reparameterized else [],
            config.batch_norm_eps, config.reparameterized,
        )
        self.large_kernel_norm = nn.BatchNorm2d(channels, eps=config.batch_norm_eps)
        self.se = OverLoCKSqueezeExcite(channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.mlp_dwconv = OverLoCKResidualDepthwiseConv(hidden)
        self.grn = OverLoCKGRN(hidden)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.layer_scale = OverLoCKLayerScale(channels, config.layer_scale_init_value) if use_layer_scale else None
        self.drop_path = OverLoCKDropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(x)
        residual = self.large_kernel_norm(self.large_kernel(self.norm(x)))
        residual = gelu_into(self.mlp_dwconv, self.se.forward_into(residual, self.fc1))  # fc1(se(residual))
        residual = self.grn.forward_into(residual, self.fc2)  # fc2(grn(residual))
        shortcut = self.layer_scale(x) if self.layer_scale is not None else x
        return shortcut + self.drop_path(residual)


class OverLoCKContMixLinear(nn.Module):
    """ContMix without the softmax (ablation `contmix_softmax=False`): the biased logits weight the taps directly.

    Same call as :class:`ContMix`: `(logits (B,G,H,W,K*K), rpb (G,2K-1,2K-1), value (B,G,C,H,W), K) -> (B,G,C,H,W)`.
    """

    def forward(self, logits: torch.Tensor, rpb: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
        bias = relative_position_bias(rpb, value.shape[-2], value.shape[-1], kernel_size)
        return neighborhood_aggregate(logits + bias.unsqueeze(0), value, kernel_size)


class OverLoCKContMixer(nn.Module):
    """ContMix token mixer: dynamic kernels from the affinity of each pixel (query) to the pooled context (keys).

    The queries come from the block's normalized features `(B, C, H, W)`, the keys from its context
    `(B, Cc, H, W)` pooled to `p x p` (other sources: `config.contmix_query_source` / `contmix_key_source`);
    their per-group affinity `(B, G, H*W, p*p)` is projected to the logits of a small and a large kernel per
    pixel, which :class:`ContMix` (bias + softmax + windowed aggregation) applies to the two halves of
    `values (B, C, H, W)`. Maps smaller than the large kernel are upsized for ContMix and pooled back.
    `forward(values, fused)` with `fused = [features, context]` `(B, C + Cc, H, W)` returns `(B, C, H, W)`.
    """

    def __init__(self, config: OverLoCKConfig, channels: int, kernel_size: int, num_heads: int):
        super().__init__()
        small = config.small_kernel_size if config.use_small_kernel else kernel_size
        pool = config.context_pool_size
        self.channels = channels
        self.kernel_size, self.small_kernel_size = kernel_size, small
        self.num_groups = 2 * num_heads
        self.scale = (channels // self.num_groups) ** -0.5
        self.context_pool_size = pool
        self.query_source, self.key_source = config.contmix_query_source, config.contmix_key_source
        widths = {"features": channels, "context": config.context_dim, "fused": channels}
        self.query = conv_norm(widths[self.query_source], channels // 2, config)
        self.key = conv_norm(widths[self.key_source], channels // 2, config)
        # the official 1x1 conv over the p*p affinity axis, as a linear map so the taps come out last
        self.kernel_proj = nn.Linear(pool * pool, small * small + kernel_size * kernel_size)
        self.rpb_small = nn.Parameter(torch.zeros(self.num_groups, 2 * small - 1, 2 * small - 1))
        self.rpb_large = nn.Parameter(torch.zeros(self.num_groups, 2 * kernel_size - 1, 2 * kernel_size - 1))
        self.contmix = ContMix() if config.contmix_softmax else OverLoCKContMixLinear()

    def _working_size(self, height: int, width: int) -> tuple[int, int]:
        """Size at which ContMix runs: the input size, or (when smaller than the kernel) a bilinear upsize."""
        k = self.kernel_size
        if min(height, width) >= k:
            return height, width
        if height < width:
            return k, int(k / height * width)
        return int(k / width * height), k

    def forward(self, values: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = values.shape
        groups, small, large = self.num_groups, self.small_kernel_size, self.kernel_size
        work_h, work_w = self._working_size(height, width)
        if (work_h, work_w) != (height, width):
            values = F.interpolate(values, size=(work_h, work_w), mode="bilinear", align_corners=False)
            fused = F.interpolate(fused, size=(work_h, work_w), mode="bilinear", align_corners=False)
        sources = {"features": fused[:, : self.channels], "context": fused[:, self.channels :], "fused": values}
        query = self.query(sources[self.query_source])  # (B, C/2, h, w)
        key = self.key(F.adaptive_avg_pool2d(sources[self.key_source], self.context_pool_size))  # (B, C/2, p, p)
        query = query.reshape(batch * groups, -1, work_h * work_w)  # (B*G, c, h*w)
        key = key.reshape(batch * groups, -1, self.context_pool_size**2)  # (B*G, c, p*p)
        # logits = kernel_proj(scale * query^T key) = query^T (scale * key proj^T) + bias: projecting the p*p
        # affinity axis of the keys first costs c*T per pixel instead of c*p*p + p*p*T (T taps); each kernel's
        # logits come out as their own contiguous tensor (no slicing, whose backward would zero-fill both)
        query = query.transpose(1, 2)  # (B*G, h*w, c)
        logits = []
        for weight, bias in zip(self.kernel_proj.weight.split([small * small, large * large]),
                                self.kernel_proj.bias.split([small * small, large * large])):
            projected_key = torch.matmul(key, weight.t() * self.scale)  # (B*G, c, taps)
            logits.append(torch.baddbmm(bias, query, projected_key).view(batch, groups, work_h, work_w, -1))
        values = values.reshape(batch, 2, groups, -1, work_h, work_w)  # branch, group, channel
        out_small = self.contmix(logits[0], self.rpb_small, values[:, 0], small)
        out_large = self.contmix(logits[1], self.rpb_large, values[:, 1], large)
        out = torch.cat([out_small, out_large], dim=1).reshape(batch, -1, work_h, work_w)
        if (work_h, work_w) != (height, width):
            out = F.adaptive_avg_pool2d(out, (height, width))
        return out


class OverLoCKStaticMixer(nn.Module):
    """Static token mixer (ablation `token_mixer="static"`): biased depthwise small / large convs on the two
    channel halves of `values (B, C, H, W)`, where ContMix puts its two dynamic kernels. Returns `(B, C, H, W)`."""

    def __init__(self, config: OverLoCKConfig, channels: int, kernel_size: int):
        super().__init__()
        small = config.small_kernel_size if config.use_small_kernel else kernel_size
        self.small = depthwise_conv(channels // 2, small, bias=True)
        self.large = depthwise_conv(channels // 2, kernel_size, bias=True)

    def forward(self, values: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        first, second = values.chunk(2, dim=1)
        return torch.cat([self.small(first), self.large(second)], dim=1)


class OverLoCKDynamicConvBlock(nn.Module):
    """Focus-Net block: ContMix dynamic kernels guided by the context, carried in `Cc` extra channels.

    Inputs `x (B, C, H, W)`, the current context `context (B, Cc, H, W)` and this scale's context prior
    `prior (B, Cc, H, W)`. Returns `(x, context)` with the same shapes, or, for the network's last block, the
    fused `(B, C + Cc, H, W)` map and `None`.
    """

    def __init__(self, config: OverLoCKConfig, channels: int, kernel_size: int, num_heads: int,
                 drop_path_rate: float, is_first: bool, is_last: bool):
        super().__init__()
        context_dim = config.context_dim
        fused_dim = channels + context_dim
        eps = config.batch_norm_eps
        self.channels, self.context_dim = channels, context_dim
        self.is_first, self.is_last = is_first, is_last

        # dynamic top-down guidance: blend the running context with this scale's prior
        if context_dim and not is_first:
            self.context_scale = OverLoCKLayerScale(context_dim, config.layer_scale_init_value)
            self.prior_scale = OverLoCKLayerScale(context_dim, config.layer_scale_init_value)
        self.dwconv1 = OverLoCKResidualDepthwiseConv(fused_dim)
        self.norm1 = OverLoCKLayerNorm2d(fused_dim, eps=config.layer_norm_eps)
        # fusion of features and context into the values
        self.fusion_dwconv = nn.Conv2d(fused_dim, fused_dim, 3, padding=1, groups=fused_dim)
        self.fusion_norm = nn.BatchNorm2d(fused_dim, eps=eps)
        self.fusion_proj = nn.Conv2d(fused_dim, channels, 1)
        self.fusion_grn = OverLoCKGRN(channels)
        if config.token_mixer == "static":
            self.mixer = OverLoCKStaticMixer(config, channels, kernel_size)
        else:
            self.mixer = OverLoCKContMixer(config, channels, kernel_size, num_heads)
        self.contmix_proj = conv_norm(channels, channels, config)
        # static large-kernel positional branch (absent in the `use_lepe=False` ablation) and gate
        self.lepe, self.lepe_norm = None, None
        if config.use_lepe:
            self.lepe = OverLoCKDilatedReparamConv(
                channels, kernel_size, config.branches_for(kernel_size) if not config.reparameterized else [],
                eps, config.reparameterized,
            )
            self.lepe_norm = nn.BatchNorm2d(channels, eps=eps)
        self.se = OverLoCKSqueezeExcite(channels)
        self.gate = conv_norm(channels, channels, config)
        self.proj_norm = nn.BatchNorm2d(channels, eps=eps)
        self.proj = nn.Conv2d(channels, fused_dim, 1)
        self.layer_scale1 = OverLoCKLayerScale(fused_dim, config.layer_scale_init_value)
        # MLP
        hidden = int(channels * config.focus_mlp_ratio)
        self.dwconv2 = OverLoCKResidualDepthwiseConv(fused_dim)
        self.norm2 = OverLoCKLayerNorm2d(fused_dim, eps=config.layer_norm_eps)
        self.fc1 = nn.Conv2d(fused_dim, hidden, 1)
        self.mlp_dwconv = OverLoCKResidualDepthwiseConv(hidden)
        self.grn = OverLoCKGRN(hidden)
        self.fc2 = nn.Conv2d(hidden, fused_dim, 1)
        self.layer_scale2 = OverLoCKLayerScale(fused_dim, config.layer_scale_init_value)
        self.drop_path = OverLoCKDropPath(drop_path_rate)

    def forward(self, x: torch.Tensor, context: torch.Tensor, prior: torch.Tensor):
        if self.context_dim and not self.is_first:
            context = self.context_scale(context) + self.prior_scale(prior)
        fused = self.dwconv1(torch.cat([x, context], dim=1) if self.context_dim else x)
        identity = fused
        fused = self.norm1(fused)
        values = self.fusion_grn(gelu_into(self.fusion_proj, self.fusion_norm(self.fusion_dwconv(fused))))
        gate = F.silu(self.gate(values))
        out = self.contmix_proj(self.mixer(values, fused))
        if self.lepe is not None:
            out = out + self.lepe_norm(self.lepe(values))
        out = gate * self.se(out)
        out = self.proj(self.proj_norm(out))
        y = self.layer_scale1(identity) + self.drop_path(out)
        y = self.dwconv2(y)
        mlp = self.grn.forward_into(gelu_into(self.mlp_dwconv, self.fc1(self.norm2(y))), self.fc2)
        y = self.layer_scale2(y) + self.drop_path(mlp)
        if self.is_last or not self.context_dim:
            return y, None
        return y[:, : self.channels], y[:, self.channels :]


# ---------------------------------------------------------------------------------------------------- sub-networks
class OverLoCKBlockRunner(nn.Module):
    """Base of the modules that hold blocks: runs each block through activation checkpointing when
    `model.gradient_checkpointing_enable()` set `gradient_checkpointing` and the model is training."""

    gradient_checkpointing = False

    def _run(self, block: nn.Module, *args):
        if self.gradient_checkpointing and self.training:
            return self._gradient_checkpointing_func(block.__call__, *args)
        return block(*args)


class OverLoCKStage(OverLoCKBlockRunner):
    """An optional stride-2 downsample (3x3 conv + BN) followed by `OverLoCKRepConvBlock`s (and, in the
    `hierarchical` ablation's stages 3 and 4, by context-free `OverLoCKDynamicConvBlock`s). `(B, C, H, W)` in."""

    def __init__(self, config: OverLoCKConfig, index: int, drop_path_rates: list[float]):
        super().__init__()
        channels = config.hidden_sizes[index]
        self.downsample = (
            conv_norm(config.hidden_sizes[index - 1], channels, config, 3, stride=2) if index > 0 else None
        )
        kernel = config.kernel_sizes[index]
        depth = config.depths[index]
        self.blocks = nn.ModuleList(
            OverLoCKRepConvBlock(config, channels, kernel, config.use_layer_scale[index], rate)
            for rate in drop_path_rates[:depth]
        )
        # the `hierarchical` ablation: stages 3 and 4 continue in place with context-free ContMix blocks
        self.dynamic_blocks = nn.ModuleList(
            OverLoCKDynamicConvBlock(config, channels, kernel, config.focus_num_heads[index - 2], rate,
                                     is_first=True, is_last=False)
            for rate in drop_path_rates[depth:]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        for block in self.blocks:
            x = self._run(block, x)
        for block in self.dynamic_blocks:
            x, _ = self._run(block, x, None, None)
        return x


class OverLoCKBaseNet(nn.Module):
    """Stages 1-3 of large-kernel blocks: stride-4 stem features -> stride-16 base features `x3` (C3)."""

    def __init__(self, config: OverLoCKConfig, drop_path_rates: list[list[float]]):
        super().__init__()
        self.stages = nn.ModuleList(OverLoCKStage(config, i, drop_path_rates[i]) for i in range(3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns the outputs of stages 1, 2 and 3."""
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class OverLoCKOverviewNet(OverLoCKStage):
    """Stage 4: downsample of the base features to stride 32 and large-kernel blocks -> overview features (C4)."""

    def __init__(self, config: OverLoCKConfig, drop_path_rates: list[float]):
        super().__init__(config, 3, drop_path_rates)


class OverLoCKContextDownsample(nn.Module):
    """Stride-2 3x3 conv + BN of the features (C3 -> C4) and, separately, of the context (Cc -> Cc)."""

    def __init__(self, config: OverLoCKConfig):
        super().__init__()
        self.features = conv_norm(config.hidden_sizes[2], config.hidden_sizes[3], config, 3, stride=2)
        self.context = conv_norm(config.context_dim, config.context_dim, config, 3, stride=2)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features(x), self.context(context)


class OverLoCKFocusNet(OverLoCKBlockRunner):
    """Context prior from the overview features, then ContMix stages at stride 16 (on `x3`) and stride 32.

    `forward(base_features (B, C3, H/16, W/16), overview (B, C4, H/32, W/32))` returns the stride-16 stage's
    `[x, context]` map `(B, C3 + Cc, H/16, W/16)` and the Focus-Net output `(B, C4 + Cc, H/32, W/32)`.
    """

    def __init__(self, config: OverLoCKConfig, drop_path_rates: list[list[float]]):
        super().__init__()
        self.context_prior = nn.Conv2d(config.hidden_sizes[3], config.context_dim, 1)
        depth16, depth32 = config.focus_depths
        k16, k32 = config.focus_kernel_sizes
        heads16, heads32 = config.focus_num_heads
        self.stage16 = nn.ModuleList(
            OverLoCKDynamicConvBlock(config, config.hidden_sizes[2], k16, heads16, rate, is_first=i == 0,
                                     is_last=False)
            for i, rate in enumerate(drop_path_rates[0])
        )
        self.context_downsample = OverLoCKContextDownsample(config)
        self.stage32 = nn.ModuleList(
            OverLoCKDynamicConvBlock(config, config.hidden_sizes[3], k32, heads32, rate, is_first=False,
                                     is_last=i == depth32 - 1)
            for i, rate in enumerate(drop_path_rates[1])
        )

    def forward(self, base_features: torch.Tensor, overview: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prior32 = self.context_prior(overview)
        prior16 = F.interpolate(prior32, size=base_features.shape[2:], mode="bilinear", align_corners=False)
        x, context = base_features, prior16
        for block in self.stage16:
            x, context = self._run(block, x, context, prior16)
        stride16 = torch.cat([x, context], dim=1)
        x, context = self.context_downsample(x, context)
        for block in self.stage32:
            x, context = self._run(block, x, context, prior32)
        return stride16, x


# ---------------------------------------------------------------------------------------------------- models
class OverLoCKPreTrainedModel(PreTrainedModel):
    config_class = OverLoCKConfig
    base_model_prefix = "overlock"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["OverLoCKRepConvBlock", "OverLoCKDynamicConvBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, OverLoCKLayerScale):
            init.constant_(module.weight, module.init_value)
            init.zeros_(module.bias)
        elif isinstance(module, OverLoCKGRN):
            init.zeros_(module.gamma)
            init.zeros_(module.beta)
        elif isinstance(module, OverLoCKContMixer):
            init.trunc_normal_(module.rpb_small, std=std)
            init.trunc_normal_(module.rpb_large, std=std)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the model code and a complete `auto_map` (all four Auto classes)
        so that the folder loads with `trust_remote_code=True` where this package is not installed.
        Refused for a model folded by `overlock_hf.fuse_for_inference` (its layout cannot be reloaded)."""
        if getattr(self, "is_fused_for_inference", False):
            raise RuntimeError(
                "this OverLoCK model was folded by fuse_for_inference(): its BatchNorms are merged into the "
                "convolutions, a layout from_pretrained cannot rebuild. Save the model before fusing (or reload "
                "it with from_pretrained) and call fuse_for_inference() after loading."
            )
        self.config.auto_map = dict(AUTO_MAP)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        here = Path(__file__).resolve().parent
        for name in CODE_FILES:
            shutil.copyfile(here / name, Path(save_directory) / name)
        return result

    @torch.no_grad()
    def reparameterize(self) -> "OverLoCKPreTrainedModel":
        """Fold every DilatedReparam (large kernels and `lepe`) into one biased DW conv, in place.

        The folded model computes the same eval-mode outputs; `config.reparameterized` becomes True, so
        `save_pretrained` / `from_pretrained` round-trip the folded layout. Returns the model.
        """
        for module in self.modules():
            if isinstance(module, OverLoCKDilatedReparamConv):
                module.reparameterize()
        self.config.reparameterized = True
        return self


def _check_pixel_values(pixel_values: torch.Tensor, num_channels: int) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.dim() != 4 or pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values must be (batch, {num_channels}, height, width), got shape {tuple(pixel_values.shape)}"
        )
    if not pixel_values.is_floating_point():
        raise TypeError(f"pixel_values must be a floating-point tensor, got {pixel_values.dtype}")
    height, width = pixel_values.shape[2:]
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"OverLoCK downsamples by 32 and needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels, "
            f"got {height}x{width}"
        )


# Loading a classification folder into the headless models drops its two heads by design: not worth a report.
_CLASSIFIER_HEADS = [r"^(overlock\.)?(aux_)?classifier\."]


class OverLoCKModel(OverLoCKPreTrainedModel):
    """The OverLoCK backbone network: Base-Net -> Overview-Net -> Focus-Net, without classification heads."""

    _keys_to_ignore_on_load_unexpected = _CLASSIFIER_HEADS

    def __init__(self, config: OverLoCKConfig):
        super().__init__(config)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths) + sum(config.focus_depths),
                               device="cpu").tolist()
        per_stage, start = [], 0
        for depth in list(config.depths) + list(config.focus_depths):
            per_stage.append(rates[start : start + depth])
            start += depth
        self.embeddings = OverLoCKStem(config)
        if config.architecture == "hierarchical":
            # one pyramid: stage i runs depths[i] large-kernel blocks, then (stages 3, 4) focus_depths ContMix ones
            rates, start = [], 0
            flat = [r for stage in per_stage for r in stage]
            for i, depth in enumerate(config.depths):
                depth += config.focus_depths[i - 2] if i >= 2 else 0
                rates.append(flat[start : start + depth])
                start += depth
            self.stages = nn.ModuleList(OverLoCKStage(config, i, rates[i]) for i in range(4))
        else:
            self.base_net = OverLoCKBaseNet(config, per_stage[:3])
            self.overview_net = OverLoCKOverviewNet(config, per_stage[3])
            self.focus_net = OverLoCKFocusNet(config, per_stage[4:])
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OverLoCKModelOutput | tuple:
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        _check_pixel_values(pixel_values, self.config.num_channels)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        if pixel_values.device.type == "cpu":
            # inside, the network runs channels-last (NHWC in memory), where oneDNN's convolutions and the
            # channel-wise norms are fastest; the maps it returns are plain NCHW-contiguous again
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        stem = self.embeddings(pixel_values)
        if self.config.architecture == "hierarchical":
            return self._forward_hierarchical(stem, output_hidden_states, return_dict)
        stage1, stage2, stage3 = self.base_net(stem)
        overview = self.overview_net(stage3)
        focus16, focus = self.focus_net(stage3, overview)
        pooled = focus.mean(dim=(2, 3))
        maps = (stem, stage1, stage2, stage3, overview, focus16, focus)  # FEATURE_MAPS order
        maps = tuple(m.contiguous() if output_hidden_states or info["output"] else m
                     for info, m in zip(FEATURE_MAPS.values(), maps))
        hidden_states = maps if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (maps[-1], pooled, maps[4], hidden_states) if v is not None)
        named = {info["output"]: tensor for info, tensor in zip(FEATURE_MAPS.values(), maps) if info["output"]}
        return OverLoCKModelOutput(pooler_output=pooled, hidden_states=hidden_states, **named)

    def _forward_hierarchical(self, stem: torch.Tensor, output_hidden_states: bool, return_dict: bool):
        """The `hierarchical` ablation: four stages in a row; hidden states `(stem, stage1, .., stage4)`."""
        outputs, x = [stem], stem
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        outputs = [o.contiguous() for o in outputs] if output_hidden_states else outputs  # NCHW, as returned
        x = outputs[-1].contiguous()
        pooled = x.mean(dim=(2, 3))
        hidden_states = tuple(outputs) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (x, pooled, hidden_states) if v is not None)
        return OverLoCKModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states)


class OverLoCKClassifierHead(nn.Module):
    """Main head on the Focus-Net output: 1x1 projection (no bias), BN, SiLU, global average pool, linear."""

    def __init__(self, config: OverLoCKConfig):
        super().__init__()
        in_dim = config.hidden_sizes[3] + config.context_dim
        self.proj = conv_norm(in_dim, config.projection_dim, config)
        self.fc = nn.Linear(config.projection_dim, config.num_labels) if config.num_labels > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.silu(self.proj(x)).mean(dim=(2, 3)))


class OverLoCKAuxClassifierHead(nn.Module):
    """Auxiliary head on the Overview-Net output: BN, global average pool, linear."""

    def __init__(self, config: OverLoCKConfig):
        super().__init__()
        self.norm = nn.BatchNorm2d(config.hidden_sizes[3], eps=config.batch_norm_eps)
        self.fc = nn.Linear(config.hidden_sizes[3], config.num_labels) if config.num_labels > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x).mean(dim=(2, 3)))


class OverLoCKForImageClassification(OverLoCKPreTrainedModel):
    """OverLoCK with the Focus-Net classifier and, in training, the auxiliary Overview-Net classifier.

    In training mode with labels the loss is `CE(logits) + config.aux_loss_weight * CE(aux_logits)`; in eval
    mode the auxiliary head is not computed.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: OverLoCKConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.overlock = OverLoCKModel(config)
        self.classifier = OverLoCKClassifierHead(config)
        # no Overview-Net, no auxiliary head in the `hierarchical` ablation
        has_overview = config.architecture != "hierarchical"
        self.aux_classifier = OverLoCKAuxClassifierHead(config) if has_overview else None
        self.post_init()

    def _classification_loss(self, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.loss_function(labels, logits, self.config)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OverLoCKImageClassifierOutput | tuple:
        """`pixel_values (B, C, H, W)`, optional `labels (B,)` -> logits `(B, num_labels)` (+ loss, aux logits)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.overlock(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(outputs.last_hidden_state)
        use_aux = self.training and self.config.aux_loss_weight > 0 and self.aux_classifier is not None
        aux_logits = self.aux_classifier(outputs.overview_hidden_state) if use_aux else None

        loss = None
        if labels is not None:
            loss = self._classification_loss(labels, logits)
            if aux_logits is not None:
                loss = loss + self.config.aux_loss_weight * self._classification_loss(labels, aux_logits)

        if not return_dict:
            output = tuple(v for v in (logits, aux_logits, outputs.hidden_states) if v is not None)
            return ((loss,) + output) if loss is not None else output
        return OverLoCKImageClassifierOutput(
            loss=loss, logits=logits, aux_logits=aux_logits, hidden_states=outputs.hidden_states
        )


class OverLoCKBackbone(OverLoCKPreTrainedModel, BackboneMixin):
    """OverLoCK as a dense-prediction backbone (the released Mask R-CNN / UperNet layout).

    Stages (`config.stage_names`, named in `FEATURE_MAPS` after the network that produces them; former names in
    brackets, still accepted with a FutureWarning): `stem` (stride 4, C1), `base_stride4` [`stage1`] (stride 4,
    C1), `base_stride8` [`stage2`] (stride 8, C2), `focus_stride16` [`stage3`] (stride 16, `[x, context]` after
    the stride-16 Focus-Net stage, C3 + Cc) and `focus_stride32` [`stage4`] (stride 32, the Focus-Net output,
    C4 + Cc). Every selected feature except `stem` passes through its own extra LayerNorm, as in the released
    detection/segmentation models.
    """

    has_attentions = False
    _keys_to_ignore_on_load_unexpected = _CLASSIFIER_HEADS
    _keys_to_ignore_on_load_missing = [r"^feature_norms\."]  # new in a classification folder: identity init

    def __init__(self, config: OverLoCKConfig):
        if config.architecture != "overlock":
            raise ValueError(f"OverLoCKBackbone needs the Focus-Net: config.architecture={config.architecture!r} "
                             "(the `hierarchical` ablation) has none; use OverLoCKModel's hidden_states instead")
        super().__init__(config)
        self.overlock = OverLoCKModel(config)
        if hasattr(self, "_init_backbone"):  # transformers 4.x (it resets `num_features` to None: call it first)
            self._init_backbone(config)
        channels = config.feature_map_channels()
        self.num_features = [channels[name] for name in config.stage_names]
        self.feature_norms = nn.ModuleDict(
            {name: OverLoCKLayerNorm2d(channels[name], eps=config.layer_norm_eps)
             for name in config.stage_names if name in self.out_features and name != "stem"}
        )
        self.feature_norms.register_load_state_dict_pre_hook(_rename_legacy_norms)
        self.post_init()

    @property
    def channels(self) -> list[int]:
        return [self.num_features[config_index] for config_index in self.out_indices]

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        """`pixel_values (B, C, H, W)` -> `feature_maps`, one per selected stage."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        outputs = self.overlock(pixel_values, output_hidden_states=True, return_dict=True)
        by_name = dict(zip(FEATURE_MAPS, outputs.hidden_states))
        feature_maps = tuple(
            self.feature_norms[name](by_name[name]) if name in self.feature_norms else by_name[name]
            for name in self.out_features
        )
        hidden_states = outputs.hidden_states if output_hidden_states else None
        if not return_dict:
            return (feature_maps,) + ((hidden_states,) if hidden_states is not None else ())
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states, attentions=None)


def _rename_legacy_norms(module, state_dict, prefix, *args) -> None:
    """`load_state_dict` of weights saved under the former stage names (`feature_norms.stage1.weight`, ...)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        stage, _, rest = key[len(prefix):].partition(".")
        if stage in LEGACY_STAGE_NAMES:
            state_dict[f"{prefix}{LEGACY_STAGE_NAMES[stage]}.{rest}"] = state_dict.pop(key)


__all__ = [
    "OverLoCKBackbone",
    "OverLoCKForImageClassification",
    "OverLoCKModel",
    "OverLoCKPreTrainedModel",
]
