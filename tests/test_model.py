"""Configuration validation and model behaviour: any input size, errors, init, stochastic depth, outputs."""

import pytest
import torch

from _shared import tiny_config
from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification, OverLoCKModel
from overlock_hf.modeling_overlock import (
    OverLoCKContMixer,
    OverLoCKDynamicConvBlock,
    OverLoCKGRN,
    OverLoCKLayerScale,
    OverLoCKRepConvBlock,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return OverLoCKForImageClassification(tiny_config()).eval()


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(depths=[1, 1, 1]), "`depths` needs 4 entries"),
        (dict(focus_num_heads=[2]), "`focus_num_heads` needs 2 entries"),
        (dict(focus_num_heads=[5, 3]), "divisible by 4 \\* focus_num_heads\\[0\\]"),
        (dict(hidden_sizes=[16, 32, 64, 98]), "not divisible by context_reduction"),
        (dict(kernel_sizes=[9, 7, 7, 6]), "odd and >= 3"),
        (dict(kernel_sizes=[21, 7, 7, 5]), "\\[21\\] have no re-parameterization branch table"),
        (dict(depths=[1, 0, 1, 1]), "at least one block"),
        (dict(aux_loss_weight=-1), "aux_loss_weight"),
        (dict(reparam_branches={"9": [[4, 1]], "7": [], "5": []}), "odd k"),
    ],
)
def test_invalid_configs_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_reparameterized_config_needs_no_branch_table():
    config = tiny_config(kernel_sizes=[21, 7, 7, 5], reparameterized=True)
    assert config.reparameterized


def test_variants_and_json_round_trip(tmp_path):
    config = OverLoCKConfig.from_variant("overlock-s", num_labels=5, drop_path_rate=0.2)
    assert config.variant == "overlock-s" and config.crop_pct == 0.95
    assert config.focus_kernel_sizes == [13, 7] and config.num_focus_groups == [16, 32]
    assert config.matching_variant() == "overlock-s"
    config.save_pretrained(tmp_path)
    again = OverLoCKConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()
    assert OverLoCKConfig.from_variant("t").variant == "overlock-t"


# ------------------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (48, 160), (200, 40), (97, 131)])
def test_any_input_size_including_small_input_resize_path(model, size):
    pixels = torch.randn(1, 3, *size)
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True)
    assert out.logits.shape == (1, 10)
    assert torch.isfinite(out.logits).all()
    focus = out.hidden_states[-1]
    assert focus.shape[:2] == (1, 96 + 24)


@pytest.mark.parametrize(
    "pixels, error, message",
    [
        (torch.randn(1, 3, 16, 64), ValueError, "at least 32x32"),
        (torch.randn(1, 1, 64, 64), ValueError, "must be \\(batch, 3, height, width\\)"),
        (torch.randn(3, 64, 64), ValueError, "must be \\(batch, 3, height, width\\)"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, "floating-point"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs_give_clear_errors(model, pixels, error, message):
    with pytest.raises(error, match=message):
        model(pixels)


# ------------------------------------------------------------------------------------------------ outputs
def test_outputs_dict_and_tuple(model):
    pixels = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True)
        as_tuple = model(pixels, output_hidden_states=True, return_dict=False)
    shapes = [tuple(h.shape) for h in out.hidden_states]
    assert shapes == [(2, 16, 16, 24), (2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 96, 2, 3),
                      (2, 64 + 24, 4, 6), (2, 96 + 24, 2, 3)]
    assert torch.equal(as_tuple[0], out.logits) and len(as_tuple[1]) == 7
    base = OverLoCKModel(tiny_config()).eval()
    with torch.no_grad():
        features = base(pixels)
    assert features.pooler_output.shape == (2, 120)
    assert torch.allclose(features.pooler_output, features.last_hidden_state.mean((2, 3)))


def test_eval_loss_is_main_cross_entropy_only(model):
    pixels, labels = torch.randn(2, 3, 64, 64), torch.tensor([1, 4])
    with torch.no_grad():
        out = model(pixels, labels=labels)
    assert out.aux_logits is None
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


# ------------------------------------------------------------------------------------------------ init
def test_fresh_init_is_explicit_and_sane():
    torch.manual_seed(0)
    model = OverLoCKForImageClassification(tiny_config(layer_scale_init_value=0.5))
    for module in model.modules():
        if isinstance(module, OverLoCKLayerScale):
            assert torch.all(module.weight == 0.5) and torch.all(module.bias == 0)
        if isinstance(module, OverLoCKGRN):
            assert torch.all(module.gamma == 0) and torch.all(module.beta == 0)
        if isinstance(module, OverLoCKContMixer):
            assert 0.005 < float(module.rpb_large.detach().std()) < 0.05
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.all(module.running_var == 1) and torch.all(module.running_mean == 0)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64)).logits
    assert torch.isfinite(logits).all() and float(logits.abs().max()) < 10


def test_builds_on_meta_device():
    with torch.device("meta"):
        model = OverLoCKForImageClassification(OverLoCKConfig.from_variant("overlock-xt"))
    assert all(p.device.type == "meta" for p in model.parameters())


# ------------------------------------------------------------------------------------------------ stochastic depth
def test_stochastic_depth_schedule_and_behaviour():
    config = tiny_config(drop_path_rate=0.3)
    model = OverLoCKForImageClassification(config)
    rates = [m.drop_path.drop_prob for m in model.modules()
             if isinstance(m, (OverLoCKRepConvBlock, OverLoCKDynamicConvBlock))]
    expected = torch.linspace(0, 0.3, 8).tolist()
    assert rates == pytest.approx(expected)
    pixels = torch.randn(4, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, model(pixels).logits)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        first = model(pixels).logits
        second = model(pixels).logits
    assert not torch.allclose(first, second)
