"""Where the analysis tools find OverLoCK's named feature maps: one table, one lookup (re-point it here).

Each name maps to a sub-module of the base `OverLoCKModel` and, when that module returns a tuple, the index of
the map in it: `overview` is the Overview-Net output `(B, C4, H/32, W/32)`, `focus` the Focus-Net output
`(B, C4 + C4/4, H/32, W/32)`, `focus16` the stride-16 Focus-Net map, `base` the Base-Net output (stage 3) and
`stem` the stride-4 stem features.
"""

from __future__ import annotations

from torch import nn

# name -> (sub-module of the base model, index of the map in that module's tuple output or None)
FEATURE_LAYERS: dict[str, tuple[str, int | None]] = {
    "stem": ("embeddings", None),
    "base": ("base_net", 2),
    "overview": ("overview_net", None),
    "focus16": ("focus_net", 0),
    "focus": ("focus_net", 1),
}


def is_overlock(model: nn.Module) -> bool:
    """Whether `model` is an OverLoCK transformers model (any head)."""
    return getattr(getattr(model, "config", None), "model_type", None) == "overlock"


def feature_layer(model: nn.Module, name: str) -> tuple[nn.Module, int | None]:
    """The sub-module producing OverLoCK feature map `name` and its index in that module's output (or None)."""
    if name not in FEATURE_LAYERS:
        raise ValueError(f"unknown OverLoCK feature map {name!r}; known: {', '.join(FEATURE_LAYERS)}")
    if not is_overlock(model):
        raise ValueError(f"named feature maps exist for OverLoCK models only, got {type(model).__name__}")
    attribute, index = FEATURE_LAYERS[name]
    return getattr(model.base_model, attribute), index
