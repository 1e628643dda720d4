"""Hub layers: ``kernels.kernelize`` swaps the model's ``ContMix.forward`` for the one below."""

from __future__ import annotations

import torch
from torch import nn

from .functional import contmix


class ContMix(nn.Module):
    """Fused ContMix, same call as ``overlock_hf.contmix.ContMix``.

    ``forward(logits (B,G,H,W,K*K), rpb (G,2K-1,2K-1), value (B,G,C,H,W), kernel_size) -> (B,G,C,H,W)``.
    """

    has_backward = True
    can_torch_compile = True

    def forward(self, logits: torch.Tensor, rpb: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
        return contmix(logits, rpb, value, kernel_size)
