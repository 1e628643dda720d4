"""The pure-PyTorch ContMix reference against NATTEN's na2d_av outputs and gradients."""

import pytest
import torch
from safetensors.torch import load_file

from _shared import CONTMIX_BAD_INPUTS, contmix_bad_inputs, grouped, rel_err
from conftest import fixture_path
from overlock_hf.contmix import contmix_reference, neighborhood_aggregate, windowed_aggregate

CASES = range(8)


@pytest.fixture(scope="module")
def na2d_cases():
    return load_file(fixture_path("na2d_av_reference.safetensors"))


@pytest.mark.parametrize("aggregate", [neighborhood_aggregate, windowed_aggregate], ids=["reference", "windowed"])
@pytest.mark.parametrize("case", CASES)
def test_aggregation_matches_natten(na2d_cases, case, aggregate):
    """The per-tap reference and the fast windowed path (the default) against NATTEN's outputs and gradients."""
    k = int(na2d_cases[f"case{case}.kernel_size"])
    attn = na2d_cases[f"case{case}.attn"].clone().requires_grad_()
    value = grouped(na2d_cases[f"case{case}.value"]).requires_grad_()
    out = aggregate(attn, value, k)
    out.backward(grouped(na2d_cases[f"case{case}.grad_out"]))
    assert rel_err(out.detach(), grouped(na2d_cases[f"case{case}.out"])) <= 1e-5
    assert rel_err(attn.grad, na2d_cases[f"case{case}.grad_attn"]) <= 1e-5
    assert rel_err(value.grad, grouped(na2d_cases[f"case{case}.grad_value"])) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_contmix_reference_matches_natten(na2d_cases, case):
    """Softmax(log(attn) + 0) == attn, so the full op must reproduce na2d_av; logit gradients follow."""
    k = int(na2d_cases[f"case{case}.kernel_size"])
    attn = na2d_cases[f"case{case}.attn"]
    groups = attn.shape[1]
    logits = attn.log().requires_grad_()
    rpb = torch.zeros(groups, 2 * k - 1, 2 * k - 1, requires_grad=True)
    value = grouped(na2d_cases[f"case{case}.value"]).requires_grad_()
    out = contmix_reference(logits, rpb, value, k)
    out.backward(grouped(na2d_cases[f"case{case}.grad_out"]))
    grad_attn = na2d_cases[f"case{case}.grad_attn"]
    grad_logits = attn * (grad_attn - (attn * grad_attn).sum(-1, keepdim=True))
    assert rel_err(out.detach(), grouped(na2d_cases[f"case{case}.out"])) <= 1e-5
    assert rel_err(logits.grad, grad_logits) <= 1e-5
    assert rel_err(value.grad, grouped(na2d_cases[f"case{case}.grad_value"])) <= 1e-5
    # the bias enters the logits per tap, so its gradient is the logit gradient scattered into the table
    assert torch.isfinite(rpb.grad).all() and rpb.grad.abs().sum() > 0


def test_relative_position_bias_indexing():
    """A table whose entry encodes its own (dy, dx) reproduces key-minus-query offsets everywhere."""
    from overlock_hf.contmix import relative_position_bias, window_starts

    k, h, w = 3, 5, 6
    dy = torch.arange(-(k - 1), k).view(-1, 1).expand(2 * k - 1, 2 * k - 1)
    dx = torch.arange(-(k - 1), k).view(1, -1).expand(2 * k - 1, 2 * k - 1)
    table = (100 * dy + dx).float().unsqueeze(0)
    bias = relative_position_bias(table, h, w, k)[0]
    si, sj = window_starts(h, k), window_starts(w, k)
    for i in range(h):
        for j in range(w):
            for a in range(k):
                for b in range(k):
                    expected = 100 * (si[i] + a - i) + (sj[j] + b - j)
                    assert bias[i, j, a * k + b] == expected


@pytest.mark.parametrize(("change", "error", "message"), [case[1:] for case in CONTMIX_BAD_INPUTS],
                         ids=[case[0] for case in CONTMIX_BAD_INPUTS])
def test_contmix_reference_rejects_bad_inputs(change, error, message):
    with pytest.raises(error, match=message):
        contmix_reference(*contmix_bad_inputs(change))


@pytest.mark.parametrize("k, height, width", [(3, 4, 6), (5, 7, 5)])
def test_contmix_reference_gradcheck_float64(k, height, width):
    torch.manual_seed(0)
    logits = torch.randn(2, 2, height, width, k * k, dtype=torch.float64, requires_grad=True)
    rpb = torch.randn(2, 2 * k - 1, 2 * k - 1, dtype=torch.float64, requires_grad=True)
    value = torch.randn(2, 2, 3, height, width, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *xs: contmix_reference(*xs, k), (logits, rpb, value), fast_mode=True)


def test_contmix_reference_saves_no_kxk_times_value_tensor():
    """Training memory: what autograd keeps is of the size of the logits or the values, never K*K*C-sized."""
    k, b, g, c, h, w = 13, 2, 4, 16, 14, 14
    logits = torch.randn(b, g, h, w, k * k, requires_grad=True)
    rpb = torch.randn(g, 2 * k - 1, 2 * k - 1, requires_grad=True)
    value = torch.randn(b, g, c, h, w, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = contmix_reference(logits, rpb, value, k)
    out.sum().backward()
    assert max(saved) <= logits.numel()
    assert max(saved) < b * g * h * w * k * k * c // 8
