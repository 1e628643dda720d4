"""The transformers peers of the OverLoCK comparison, built from their published configurations without weights.

The configuration values below are the published architectures (ImageNet-1K, 224x224) of the Hub checkpoints
`facebook/convnext-{tiny,small,base}-224`, `microsoft/swin-{tiny,small,base}-patch4-window7-224` and
`microsoft/focalnet-{tiny,small,base}-lrf` (FocalNet with large receptive field, focal level 3, the variant
the OverLoCK paper compares with), written here as data so that nothing is downloaded. The models are
randomly initialized: their parameters, MACs and speed are those of the published models, their outputs not.

`published` holds each model's ImageNet-1K top-1 (%) from its own paper (ConvNeXt: Liu et al. 2022, Table 1;
Swin: Liu et al. 2021, Table 1a; FocalNet: Yang et al. 2022, Table 1, LRF rows).
"""

from __future__ import annotations

import copy

PEERS: dict[str, dict] = {
    "convnext-t": dict(family="convnext", config=dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3]),
                       published=dict(top1=82.1, params_m=28.0, gmacs=4.5)),
    "convnext-s": dict(family="convnext", config=dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 27, 3]),
                       published=dict(top1=83.1, params_m=50.0, gmacs=8.7)),
    "convnext-b": dict(family="convnext", config=dict(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3]),
                       published=dict(top1=83.8, params_m=89.0, gmacs=15.4)),
    "swin-t": dict(family="swin", config=dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                              window_size=7),
                   published=dict(top1=81.3, params_m=28.0, gmacs=4.5)),
    "swin-s": dict(family="swin", config=dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24],
                                              window_size=7),
                   published=dict(top1=83.0, params_m=50.0, gmacs=8.7)),
    "swin-b": dict(family="swin", config=dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                                              window_size=7),
                   published=dict(top1=83.5, params_m=88.0, gmacs=15.4)),
    "focalnet-t": dict(family="focalnet", config=dict(embed_dim=96, depths=[2, 2, 6, 2], focal_levels=[3, 3, 3, 3],
                                                      focal_windows=[3, 3, 3, 3]),
                       published=dict(top1=82.3, params_m=28.6, gmacs=4.5)),
    "focalnet-s": dict(family="focalnet", config=dict(embed_dim=96, depths=[2, 2, 18, 2], focal_levels=[3, 3, 3, 3],
                                                      focal_windows=[3, 3, 3, 3]),
                       published=dict(top1=83.5, params_m=50.3, gmacs=8.7)),
    "focalnet-b": dict(family="focalnet", config=dict(embed_dim=128, depths=[2, 2, 18, 2], focal_levels=[3, 3, 3, 3],
                                                      focal_windows=[3, 3, 3, 3]),
                       published=dict(top1=83.9, params_m=88.7, gmacs=15.4)),
}


def peer_key(name: str) -> str | None:
    """The `PEERS` key of a peer name (`ConvNeXt-T`, `convnext_t`, `swin-tiny` ...), or None."""
    key = name.lower().replace("_", "-")
    for long, short in (("-tiny", "-t"), ("-small", "-s"), ("-base", "-b")):
        key = key.replace(long, short)
    return key if key in PEERS else None


def build_peer(name: str, image_size: int = 224, num_labels: int = 1000):
    """A randomly initialized transformers image classifier with the published architecture of peer `name`."""
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        FocalNetConfig,
        FocalNetForImageClassification,
        SwinConfig,
        SwinForImageClassification,
    )

    key = peer_key(name)
    if key is None:
        raise ValueError(f"unknown peer model {name!r}; known peers: {', '.join(PEERS)}")
    classes = {
        "convnext": (ConvNextConfig, ConvNextForImageClassification),
        "swin": (SwinConfig, SwinForImageClassification),
        "focalnet": (FocalNetConfig, FocalNetForImageClassification),
    }
    entry = PEERS[key]
    config_class, model_class = classes[entry["family"]]
    fields = copy.deepcopy(entry["config"])
    if entry["family"] != "convnext":
        fields["image_size"] = image_size
    return model_class(config_class(num_labels=num_labels, **fields))
