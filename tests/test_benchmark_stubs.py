"""The stand-ins that let benchmarks/model_throughput.py build the released model (benchmarks/official_stubs.py)."""

import sys

import pytest
import torch

from conftest import REPO_ROOT
from overlock_hf.contmix import neighborhood_aggregate

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import official_stubs  # noqa: E402


def test_rearrange_patterns_of_the_released_model():
    x = torch.randn(2, 12, 3, 5)
    r = official_stubs.rearrange
    assert torch.equal(r(x, "b c h w -> b h w c"), x.permute(0, 2, 3, 1))
    assert torch.equal(r(x, "b (g c) h w -> b g c (h w)", g=4), x.reshape(2, 4, 3, 15))
    assert torch.equal(r(x, "b (m g c) h w -> m b g h w c", m=2, g=3),
                       x.reshape(2, 2, 3, 2, 3, 5).permute(1, 0, 2, 4, 5, 3))
    y = torch.randn(2, 3, 4, 15)
    assert torch.equal(r(y, "b l g (h w) -> b g h w l", h=3, w=5), y.reshape(2, 3, 4, 3, 5).permute(0, 2, 3, 4, 1))
    z = torch.randn(2, 3, 4, 5, 6)
    assert torch.equal(r(z, "b g h w c -> b (g c) h w", h=4, w=5), z.permute(0, 1, 4, 2, 3).reshape(2, 18, 4, 5))


def test_einsum_and_na2d_av():
    q, k = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 6)
    assert torch.allclose(official_stubs.einsum(q, k, "b g c n, b g c l -> b g n l"),
                          torch.einsum("bgcn,bgcl->bgnl", q, k))
    attn = torch.randn(2, 3, 9, 8, 25).softmax(-1)
    value = torch.randn(2, 3, 9, 8, 4)
    ours = official_stubs.na2d_av(attn, value, kernel_size=5)
    ref = neighborhood_aggregate(attn, value.permute(0, 1, 4, 2, 3), 5).permute(0, 1, 3, 4, 2)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_na2d_av_refuses_a_map_smaller_than_the_kernel():
    """The clamped window start of a 4-row map at K = 5 would be -1 (silently wrapping to the last row)."""
    with pytest.raises(ValueError, match="smaller than kernel_size=5"):
        official_stubs.na2d_av(torch.randn(1, 1, 4, 5, 25), torch.randn(1, 1, 4, 5, 2), kernel_size=5)


def test_missing_source_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="models/overlock.py"):
        official_stubs.load_released_module(tmp_path)
