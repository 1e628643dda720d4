"""overlock-hf: OverLoCK (CVPR 2025) as a Hugging Face transformers model.

Importing the package registers `OverLoCKConfig` (model type `overlock`) and the models with the Auto classes.
"""

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_overlock import VARIANTS, OverLoCKConfig
from .contmix import ContMix, contmix_reference
from .image_processing_overlock import OverLoCKImageProcessor, make_image_processor
from .inference_fusion import fuse_for_inference
from .kernel_hub import kernelize
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


__all__ = [
    "VARIANTS",
    "ContMix",
    "OverLoCKBackbone",
    "OverLoCKConfig",
    "OverLoCKForImageClassification",
    "OverLoCKImageProcessor",
    "OverLoCKModel",
    "OverLoCKPreTrainedModel",
    "contmix_reference",
    "fuse_for_inference",
    "kernelize",
    "make_image_processor",
]
__version__ = "0.1.0"
