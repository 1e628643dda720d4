"""overlock-hf: OverLoCK (CVPR 2025) as a Hugging Face transformers model.

Importing the package registers `OverLoCKConfig` (model type `overlock`) and the models with the Auto classes.
"""

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_overlock import VARIANTS, OverLoCKConfig
from .contmix import ContMix, contmix_reference
from .modeling_overlock import (
    OverLoCKBackbone,
    OverLoCKForImageClassification,
    OverLoCKModel,
    OverLoCKPreTrainedModel,
)

AutoConfig.register("overlock", OverLoCKConfig, exist_ok=True)
AutoModel.register(OverLoCKConfig, OverLoCKModel, exist_ok=True)
AutoModelForImageClassification.register(OverLoCKConfig, OverLoCKForImageClassification, exist_ok=True)
AutoBackbone.register(OverLoCKConfig, OverLoCKBackbone, exist_ok=True)


def kernelize(model, source, mode=None, device="cpu"):
    """Swap every ContMix layer of `model` for the fused kernel from `source` (Hub repo id or local build folder);
    keeps the PyTorch path, with one warning, when that fails. See `overlock_hf.kernel_hub.kernelize`."""
    from .kernel_hub import kernelize as _kernelize

    return _kernelize(model, source, mode=mode, device=device)


__all__ = [
    "VARIANTS",
    "ContMix",
    "OverLoCKBackbone",
    "OverLoCKConfig",
    "OverLoCKForImageClassification",
    "OverLoCKModel",
    "OverLoCKPreTrainedModel",
    "contmix_reference",
    "kernelize",
]
__version__ = "0.1.0"
