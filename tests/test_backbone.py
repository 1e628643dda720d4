"""`OverLoCKBackbone`: stage selection, feature shapes and strides, classification weights, UperNet."""

from __future__ import annotations

import pytest
import torch
import transformers
from huggingface_hub.errors import HFValidationError
from transformers import AutoBackbone, UperNetConfig, UperNetForSemanticSegmentation

from _shared import converted_tiny_folder, tiny_config
from overlock_hf import VARIANTS, OverLoCKBackbone, OverLoCKConfig, OverLoCKForImageClassification
from overlock_hf.configuration_overlock import FEATURE_MAPS

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
ALL_STAGES = ["stem", "base_stride4", "base_stride8", "focus_stride16", "focus_stride32"]
STRIDES = {name: info["stride"] for name, info in FEATURE_MAPS.items()}


def expected_channels(config: OverLoCKConfig) -> dict[str, int]:
    """ARCHITECTURE.md section 8: C1, C1, C2, C3 + Cc, C4 + Cc with Cc = C4 / 4."""
    c1, c2, c3, c4 = config.hidden_sizes
    context = c4 // config.context_reduction
    return {"stem": c1, "base_stride4": c1, "base_stride8": c2, "focus_stride16": c3 + context,
            "focus_stride32": c4 + context}


# ------------------------------------------------------------------------------------------------ stage selection
def test_default_out_features_are_the_four_dense_prediction_maps():
    config = tiny_config()
    assert config.stage_names == ALL_STAGES
    assert config.out_features == ["base_stride4", "base_stride8", "focus_stride16", "focus_stride32"]
    assert list(config.out_indices) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "features", "indices"),
    [
        (dict(out_features=["stem", "base_stride8"]), ["stem", "base_stride8"], [0, 2]),
        (dict(out_indices=[3, 4]), ["focus_stride16", "focus_stride32"], [3, 4]),
        (dict(out_indices=[-1]), ["focus_stride32"], [4]),
        (dict(out_features=["base_stride4", "focus_stride16"], out_indices=[1, 3]), ["base_stride4", "focus_stride16"],
         [1, 3]),
    ],
)
def test_out_features_and_out_indices_select_named_stages(kwargs, features, indices):
    config = tiny_config(**kwargs)
    assert config.out_features == features
    assert [i % len(ALL_STAGES) for i in config.out_indices] == indices
    backbone = OverLoCKBackbone(config).eval()
    assert backbone.out_features == features
    channels = expected_channels(config)
    assert backbone.channels == [channels[name] for name in features]
    assert set(backbone.feature_norms) == {name for name in features if name != "stem"}
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 96)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(1, channels[n], 64 // STRIDES[n], 96 // STRIDES[n]) for n in features]


@pytest.mark.parametrize(
    "kwargs",
    [dict(out_features=["stage5"]), dict(out_indices=[5]), dict(out_features=["base_stride4"], out_indices=[2])],
)
def test_invalid_stage_selection_raises(kwargs):
    with pytest.raises(ValueError):
        tiny_config(**kwargs)


def test_out_features_survive_a_save_and_reload(tmp_path):
    backbone = OverLoCKBackbone(tiny_config(out_features=["base_stride8", "focus_stride32"]))
    backbone.save_pretrained(tmp_path)
    reloaded = OverLoCKBackbone.from_pretrained(tmp_path)
    assert reloaded.out_features == ["base_stride8", "focus_stride32"]
    overridden = OverLoCKBackbone.from_pretrained(tmp_path, out_indices=[1, 3])
    assert overridden.out_features == ["base_stride4", "focus_stride16"]
    assert set(overridden.feature_norms) == {"base_stride4", "focus_stride16"}


def test_former_stage_names_still_work_with_a_deprecation_warning(tmp_path):
    """`stage1`..`stage4` (the names before the stages said their network) map to the new names, in the config,
    in `from_pretrained` overrides, and in weights saved under the old `feature_norms.stageN` keys."""
    with pytest.warns(FutureWarning, match=r"stage1 -> base_stride4.*stage4 -> focus_stride32"):
        config = tiny_config(out_features=["stage2", "stage3"])
    assert config.out_features == ["base_stride8", "focus_stride16"]
    backbone = OverLoCKBackbone(tiny_config())
    backbone.save_pretrained(tmp_path)
    with pytest.warns(FutureWarning, match="deprecated"):
        overridden = OverLoCKBackbone.from_pretrained(tmp_path, out_features=["stage1", "stage4"])
    assert overridden.out_features == ["base_stride4", "focus_stride32"]
    renamed = {"base_stride4": "stage1", "base_stride8": "stage2", "focus_stride16": "stage3",
               "focus_stride32": "stage4"}
    old_layout = {}
    for key, tensor in backbone.state_dict().items():
        if key.startswith("feature_norms."):
            stage = key.split(".")[1]
            key = key.replace(f"feature_norms.{stage}.", f"feature_norms.{renamed[stage]}.")
        old_layout[key] = tensor + 1 if key.startswith("feature_norms.") else tensor
    fresh = OverLoCKBackbone(tiny_config())
    fresh.load_state_dict(old_layout)
    for name in renamed:
        torch.testing.assert_close(fresh.feature_norms[name].weight, backbone.feature_norms[name].weight + 1)


def test_model_output_names_the_feature_maps():
    """`OverLoCKModelOutput`'s named fields are the `hidden_states` entries that `FEATURE_MAPS` says they are."""
    model = OverLoCKForImageClassification(tiny_config()).overlock.eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64), output_hidden_states=True)
    assert len(outputs.hidden_states) == len(FEATURE_MAPS)
    fields = {info["output"]: index for index, info in enumerate(FEATURE_MAPS.values()) if info["output"]}
    assert set(fields) == {"base_hidden_state", "overview_hidden_state", "focus_stride16_hidden_state",
                           "last_hidden_state"}
    for field, index in fields.items():
        assert outputs[field] is outputs.hidden_states[index], field
    channels = model.config.feature_map_channels()
    for (name, info), tensor in zip(FEATURE_MAPS.items(), outputs.hidden_states):
        assert tuple(tensor.shape) == (1, channels[name], 64 // info["stride"], 64 // info["stride"]), name


# ------------------------------------------------------------------------------------------------ released variants
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_feature_shapes_and_strides(variant):
    """Every stage of each released architecture, on the meta device (no memory, no compute)."""
    config = OverLoCKConfig.from_variant(variant, out_features=ALL_STAGES)
    height, width = 224, 160
    with torch.device("meta"):
        backbone = OverLoCKBackbone(config)
        outputs = backbone(torch.empty(2, 3, height, width))
    channels = expected_channels(config)
    assert backbone.channels == [channels[name] for name in ALL_STAGES]
    assert [tuple(m.shape) for m in outputs.feature_maps] == [
        (2, channels[name], height // STRIDES[name], width // STRIDES[name]) for name in ALL_STAGES
    ]


# ------------------------------------------------------------------------------------------------ weights
def test_backbone_loads_the_weights_of_a_classification_folder():
    folder = converted_tiny_folder()
    classifier = OverLoCKForImageClassification.from_pretrained(folder)
    backbone = OverLoCKBackbone.from_pretrained(folder)
    expected = classifier.overlock.state_dict()
    loaded = backbone.overlock.state_dict()
    assert set(loaded) == set(expected)
    mismatched = [name for name, tensor in expected.items() if not torch.equal(loaded[name], tensor)]
    assert not mismatched, f"not loaded from the classification folder: {mismatched[:5]}"
    for norm in backbone.feature_norms.values():  # the extra per-feature norms are new: identity-initialized
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    pixel_values = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    backbone.eval()
    classifier.eval()
    with torch.no_grad():
        hidden = classifier.overlock(pixel_values, output_hidden_states=True).hidden_states
        maps = backbone(pixel_values).feature_maps
    reference = dict(zip(ALL_STAGES[1:], (hidden[1], hidden[2], hidden[5], hidden[6])))
    for name, feature in zip(backbone.out_features, maps):
        assert torch.equal(feature, backbone.feature_norms[name](reference[name]))


def test_backbone_outputs_tuple_and_hidden_states():
    backbone = OverLoCKBackbone(tiny_config(out_indices=[2, 4])).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = backbone(pixel_values, output_hidden_states=True)
        as_tuple = backbone(pixel_values, output_hidden_states=True, return_dict=False)
    assert len(outputs.hidden_states) == 7
    assert outputs.attentions is None
    assert len(as_tuple) == 2
    for ours, theirs in zip(as_tuple[0], outputs.feature_maps):
        assert torch.equal(ours, theirs)
    for ours, theirs in zip(as_tuple[1], outputs.hidden_states):
        assert torch.equal(ours, theirs)


# ------------------------------------------------------------------------------------------------ Auto classes
def test_auto_backbone_from_config_builds_the_overlock_backbone():
    backbone = AutoBackbone.from_config(tiny_config(out_indices=[1, 4]))
    assert isinstance(backbone, OverLoCKBackbone)
    assert backbone.out_features == ["base_stride4", "focus_stride32"]


@pytest.mark.xfail(
    TRANSFORMERS_MAJOR >= 5, raises=HFValidationError, strict=True,
    reason="transformers 5.x AutoBackbone.from_pretrained calls the Hub's repo_exists on local folders; "
    "use OverLoCKBackbone.from_pretrained(folder, out_indices=...)",
)
def test_auto_backbone_from_pretrained_local_folder():
    backbone = AutoBackbone.from_pretrained(str(converted_tiny_folder()), out_indices=[2, 3])
    assert isinstance(backbone, OverLoCKBackbone)
    assert backbone.out_features == ["base_stride8", "focus_stride16"]


# ------------------------------------------------------------------------------------------------ UperNet
def test_upernet_with_overlock_backbone_forward_and_backward(tmp_path):
    """UperNet builds the backbone from `backbone_config` (`AutoBackbone.from_config`); 5.x ignores
    `use_pretrained_backbone`, so pretrained weights are copied in with `load_state_dict`."""
    folder = converted_tiny_folder()
    config = UperNetConfig(
        backbone_config=OverLoCKConfig.from_pretrained(folder, out_features=ALL_STAGES[1:]),
        hidden_size=32, auxiliary_channels=16, num_labels=5,
    )
    model = UperNetForSemanticSegmentation(config)
    assert isinstance(model.backbone, OverLoCKBackbone)
    assert model.backbone.channels == list(expected_channels(config.backbone_config).values())[1:]
    pretrained = OverLoCKBackbone.from_pretrained(folder)
    model.backbone.load_state_dict(pretrained.state_dict())
    assert torch.equal(
        model.backbone.overlock.embeddings.conv1[0].weight, pretrained.overlock.embeddings.conv1[0].weight
    )

    model.train()
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 64, 64, generator=generator)
    labels = torch.randint(0, 5, (2, 64, 64), generator=generator)
    outputs = model(pixel_values=pixel_values, labels=labels)
    assert outputs.logits.shape == (2, 5, 64, 64)
    outputs.loss.backward()
    assert torch.isfinite(outputs.loss)
    without_grad = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not without_grad, without_grad[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    model.save_pretrained(tmp_path)
    reloaded = UperNetForSemanticSegmentation.from_pretrained(tmp_path).eval()
    model.eval()
    reloaded_state = reloaded.state_dict()
    assert all(torch.equal(tensor, reloaded_state[name]) for name, tensor in model.state_dict().items())
    with torch.no_grad():  # same weights; oneDNN may sum in another order at another alignment: float rounding
        expected, got = model(pixel_values).logits, reloaded(pixel_values).logits
    assert (expected - got).abs().max() <= 1e-5 * expected.abs().max()
