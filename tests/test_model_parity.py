"""Parity with the released implementation on the tiny fixture (random weights, every tensor randomized)."""

import pytest
import torch
from safetensors.torch import load_file

from _shared import relative_error
from conftest import fixture_path
from overlock_hf.conversion import load_official_model

TOLERANCE = 1e-4  # max|ours - ref| <= 1e-4 * max|ref| (fixtures/README.md)


@pytest.fixture(scope="module")
def reference():
    return load_file(fixture_path("tiny_reference_outputs.safetensors"))


@pytest.fixture(scope="module", params=["tiny_official.pth", "tiny_official.safetensors"])
def plain_model(request):
    return load_official_model(fixture_path(request.param))


def test_eval_logits_and_hidden_states(plain_model, reference):
    with torch.no_grad():
        out = plain_model(reference["pixel_values"], output_hidden_states=True)
    stem, stage1, stage2, stage3, overview, focus16, focus = out.hidden_states
    assert out.aux_logits is None, "the auxiliary head must not run in eval mode"
    assert relative_error(out.logits, reference["logits"]) <= TOLERANCE
    assert relative_error(stage2, reference["stage2"]) <= TOLERANCE
    assert relative_error(stage3, reference["stage3"]) <= TOLERANCE
    assert relative_error(overview, reference["stage4_context"]) <= TOLERANCE
    assert relative_error(focus, reference["focus"]) <= TOLERANCE


def test_train_mode_logits(plain_model, reference):
    """Train mode uses batch statistics and computes the auxiliary head (the fixture has no drop path)."""
    model = load_official_model(fixture_path("tiny_official.pth")).train()
    with torch.no_grad():
        out = model(reference["pixel_values"])
    assert relative_error(out.logits, reference["train_logits_main"]) <= TOLERANCE
    assert relative_error(out.aux_logits, reference["train_logits_aux"]) <= TOLERANCE


def test_official_reparam_checkpoint(reference):
    model = load_official_model(fixture_path("tiny_official_reparam.safetensors"))
    assert model.config.reparameterized
    with torch.no_grad():
        logits = model(reference["pixel_values"]).logits
    assert relative_error(logits, reference["logits_reparam"]) <= TOLERANCE


def test_our_reparameterization_matches_official(reference):
    model = load_official_model(fixture_path("tiny_official.pth"))
    n_before = sum(p.numel() for p in model.parameters())
    model.reparameterize()
    assert model.config.reparameterized
    assert sum(p.numel() for p in model.parameters()) < n_before
    official = load_official_model(fixture_path("tiny_official_reparam.safetensors"))
    assert set(model.state_dict()) == set(official.state_dict())
    with torch.no_grad():
        logits = model(reference["pixel_values"]).logits
    assert relative_error(logits, reference["logits_reparam"]) <= TOLERANCE


def test_training_loss_includes_weighted_aux_term(reference):
    model = load_official_model(fixture_path("tiny_official.pth")).train()
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        out = model(reference["pixel_values"], labels=labels)
    ce = torch.nn.functional.cross_entropy
    expected = ce(out.logits, labels) + 0.4 * ce(out.aux_logits, labels)
    assert torch.allclose(out.loss, expected)

    model.config.aux_loss_weight = 0.0
    with torch.no_grad():
        out = model(reference["pixel_values"], labels=labels)
    assert out.aux_logits is None
    assert torch.allclose(out.loss, ce(out.logits, labels))
