"""overlock-contmix: the fused ContMix op of OverLoCK (CVPR 2025) for the Hugging Face kernels hub.

``contmix(logits, rpb, value, kernel_size)`` is the op (see :mod:`.functional` for layouts and semantics);
``layers.ContMix`` is the hub layer that ``kernels.kernelize`` puts in place of the model's ``ContMix``.
"""

from . import layers
from .functional import contmix

__all__ = ["contmix", "layers"]
