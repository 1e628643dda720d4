"""overlock-hf: OverLoCK (CVPR 2025) as a Hugging Face transformers model."""

from .contmix import ContMix, contmix_reference

__all__ = ["ContMix", "contmix_reference"]
__version__ = "0.1.0"
