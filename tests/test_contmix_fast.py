"""The fast pure-PyTorch ContMix (tiled matmuls) against the per-tap reference (its NATTEN fixture parity runs in
tests/test_contmix_reference.py, beside the reference's)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _shared import grouped, rel_err
from overlock_hf.contmix import (
    ContMix,
    contmix_pytorch,
    contmix_reference,
    windowed_aggregate,
)


def _random_inputs(b, g, c, h, w, k, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, g, h, w, k * k, generator=gen, dtype=dtype).requires_grad_()
    rpb = torch.randn(g, 2 * k - 1, 2 * k - 1, generator=gen, dtype=dtype).requires_grad_()
    value = torch.randn(b, g, c, h, w, generator=gen, dtype=dtype).requires_grad_()
    grad_out = torch.randn(b, g, c, h, w, generator=gen, dtype=dtype)
    return logits, rpb, value, grad_out


def _assert_matches_reference(b, g, c, h, w, k, seed=0):
    logits, rpb, value, grad_out = _random_inputs(b, g, c, h, w, k, seed=seed)
    ref = contmix_reference(logits, rpb, value, k)
    ref_grads = torch.autograd.grad(ref, (logits, rpb, value), grad_out)
    fast = contmix_pytorch(logits, rpb, value, k)
    fast_grads = torch.autograd.grad(fast, (logits, rpb, value), grad_out)
    assert rel_err(fast.detach(), ref.detach()) <= 1e-12
    for name, ours, theirs in zip(("logits", "rpb", "value"), fast_grads, ref_grads):
        assert rel_err(ours, theirs) <= 1e-12, name


@pytest.mark.parametrize(
    "h, w, k",
    [(14, 14, 13), (14, 14, 5), (7, 7, 7), (7, 7, 5), (28, 28, 13), (50, 83, 13), (40, 17, 5), (64, 9, 3)],
)
def test_contmix_pytorch_matches_reference_at_model_and_tiled_sizes(h, w, k):
    """The model's 224x224 shapes (one tile) and larger maps (several tiles, padded last tile)."""
    _assert_matches_reference(1, 2, 3, h, w, k)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.sampled_from([3, 5, 7, 9]),
    extra_h=st.integers(0, 25),
    extra_w=st.integers(0, 25),
    b=st.integers(1, 2),
    g=st.integers(1, 3),
    c=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_contmix_pytorch_matches_reference_on_random_shapes(k, extra_h, extra_w, b, g, c, seed):
    _assert_matches_reference(b, g, c, k + extra_h, k + extra_w, k, seed=seed)


@pytest.mark.parametrize("k, height, width", [(3, 4, 6), (5, 7, 5), (3, 9, 4)])
def test_contmix_pytorch_gradcheck_float64(k, height, width):
    logits, rpb, value, _ = _random_inputs(2, 2, 3, height, width, k)
    assert torch.autograd.gradcheck(lambda *xs: contmix_pytorch(*xs, k), (logits, rpb, value), fast_mode=True)


def test_windowed_aggregate_gradcheck_float64_several_tiles():
    k, h, w = 3, 10, 7  # 10 >= 2K: tiles of 3 queries (last one padded), 7 >= 2K too
    logits, _, value, _ = _random_inputs(1, 1, 2, h, w, k)
    weights = logits.detach().softmax(-1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, v: windowed_aggregate(a, v, k), (weights, value), fast_mode=True)


def test_contmix_pytorch_saves_no_kxk_times_value_tensor():
    """Training memory: autograd keeps tensors of the logits' or the values' size, never a K*K*C-sized one
    (the dense per-tile matrices are rebuilt in backward)."""
    k, b, g, c, h, w = 13, 2, 4, 16, 14, 14
    logits, rpb, value, _ = _random_inputs(b, g, c, h, w, k, dtype=torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = contmix_pytorch(logits, rpb, value, k)
    out.sum().backward()
    assert max(saved) <= logits.numel()
    assert max(saved) < b * g * h * w * k * k * c // 8


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_contmix_pytorch_half_precision_matches_reference(dtype):
    logits, rpb, value, _ = _random_inputs(2, 2, 4, 14, 14, 13, dtype=torch.float32)
    args = (logits.detach().to(dtype), rpb.detach().to(dtype), value.detach().to(dtype))
    fast, ref = contmix_pytorch(*args, 13), contmix_reference(*args, 13)
    assert fast.dtype == dtype
    assert rel_err(fast.float(), ref.float()) <= 1e-2


def test_layer_uses_the_fast_path_and_equals_reference():
    logits, rpb, value, _ = _random_inputs(1, 2, 3, 9, 11, 5, dtype=torch.float32)
    with torch.no_grad():
        out = ContMix()(logits, rpb, value, 5)
        assert rel_err(out, contmix_reference(logits, rpb, value, 5)) <= 1e-6
