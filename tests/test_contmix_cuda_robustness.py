"""Robustness of the CUDA variant of the fused ContMix (issue 14, point 7).

The build-flag and index-math tests run everywhere (the latter compiles the shared header with the host C++
compiler); the ones marked `gpu` need a CUDA device and skip without one.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from conftest import REPO_ROOT
from overlock_hf.contmix import contmix_reference
from overlock_hf.kernel_builder import DEFAULT_SOURCE_DIR, cuda_gencode_flags

CAPABILITIES = ["7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0"]


@pytest.mark.parametrize(
    "version, newest, absent",
    [((12, 4), "90", ["100", "120"]), ((12, 8), "120", []), ((13, 0), "120", []), (None, "120", [])],
)
def test_gencode_filtered_by_nvcc_version_with_ptx_of_newest(version, newest, absent):
    flags = cuda_gencode_flags(CAPABILITIES, version)
    assert flags[-1] == f"-gencode=arch=compute_{newest},code=compute_{newest}"  # PTX for newer GPUs
    assert f"-gencode=arch=compute_{newest},code=sm_{newest}" in flags
    for arch in absent:
        assert not any(f"compute_{arch}," in flag for flag in flags)


def test_gencode_drops_architectures_removed_from_nvcc_13():
    assert not any("sm_70" in flag for flag in cuda_gencode_flags(["7.0", "8.0"], (13, 0)))
    with pytest.raises(RuntimeError, match="accepts none"):
        cuda_gencode_flags(["12.0"], (12, 4))


_HOST_PROGRAM = r"""
#include <cstdio>
#include "contmix_common.h"
int main() {
  for (int length = 3; length <= 40; ++length)
    for (int k = 3; k <= length && k <= 17; k += 2)
      for (int d = 0; d < 2 * k - 1; ++d) {
        int lo, hi;
        contmix::offset_queries(d, length, k, &lo, &hi);
        std::printf("%d %d %d %d %d\n", length, k, d, lo, hi);
      }
}
"""


def test_rpb_gradient_query_ranges_match_brute_force(tmp_path):
    """The rpb-gradient kernel visits only the queries whose tap reads a table entry: check that range."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.fail("a host C++ compiler is needed to check contmix_common.h")
    (tmp_path / "check.cpp").write_text(_HOST_PROGRAM)
    subprocess.run([compiler, "-std=c++17", f"-I{DEFAULT_SOURCE_DIR / 'common'}", "check.cpp", "-o",
                    "check"], cwd=tmp_path, check=True, capture_output=True)
    lines = subprocess.run([str(tmp_path / "check")], check=True, capture_output=True, text=True).stdout.split("\n")
    for line in filter(None, lines):
        length, k, d, lo, hi = map(int, line.split())
        starts = [min(max(i - k // 2, 0), length - k) for i in range(length)]
        valid = [i for i in range(length) if 0 <= i + d - (k - 1) - starts[i] < k]
        assert (lo, hi) == ((valid[0], valid[-1]) if valid else (lo, lo - 1)), line
        assert valid == list(range(lo, hi + 1)), line


# ------------------------------------------------------------------------------------------------ GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cuda_contmix():
    from kernels import get_local_kernel

    from overlock_hf.kernel_builder import build_kernel

    build_kernel(REPO_ROOT / ".kernel-build", backends=["cuda"])
    return get_local_kernel(REPO_ROOT / ".kernel-build", backend="cuda").contmix


def _inputs(b, g, c, h, w, k, dtype=torch.float32, device="cuda", seed=0):
    gen = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(b, g, h, w, k * k, generator=gen, dtype=torch.float64),
               torch.randn(g, 2 * k - 1, 2 * k - 1, generator=gen, dtype=torch.float64),
               torch.randn(b, g, c, h, w, generator=gen, dtype=torch.float64),
               torch.randn(b, g, c, h, w, generator=gen, dtype=torch.float64)]
    return [t.to(device=device, dtype=dtype) for t in tensors]


def _run(fn, logits, rpb, value, grad_out, k):
    leaves = [t.detach().clone().requires_grad_() for t in (logits, rpb, value)]
    out = fn(*leaves, k)
    return (out.detach(), *torch.autograd.grad(out, leaves, grad_out))


def _assert_close(ours, ref, tol):
    for a, b in zip(ours, ref):
        a, b = a.double(), b.double()
        assert float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.gpu
@needs_cuda
def test_batch_times_groups_beyond_grid_z_limit(cuda_contmix):
    inputs = _inputs(2100, 32, 1, 3, 4, 3)  # B*G = 67200 > 65535
    _assert_close(_run(cuda_contmix, *inputs, 3), _run(contmix_reference, *inputs, 3), 1e-4)


@pytest.mark.gpu
@needs_cuda
def test_forward_and_backward_accept_the_same_largest_kernel(cuda_contmix):
    k = 77  # float32: two 77x77 float buffers per pixel fit 48 KiB of shared memory, 79x79 do not
    inputs = _inputs(1, 1, 1, k, k, k)
    _run(cuda_contmix, *inputs, k)  # forward and backward both run
    too_big = _inputs(1, 1, 1, k + 2, k + 2, k + 2)
    with pytest.raises(RuntimeError, match=f"up to {k}"):
        cuda_contmix(*too_big[:3], k + 2)


@pytest.mark.gpu
@needs_cuda
def test_grad_logits_zero_without_channels(cuda_contmix):
    torch.empty(1 << 20, device="cuda").fill_(float("nan"))  # leave garbage in the caching allocator
    _, grad_logits, grad_rpb, grad_value = _run(cuda_contmix, *_inputs(2, 3, 0, 7, 7, 5), 5)
    assert torch.equal(grad_logits, torch.zeros_like(grad_logits))
    assert torch.equal(grad_rpb, torch.zeros_like(grad_rpb)) and grad_value.numel() == 0


@pytest.mark.gpu
@needs_cuda
def test_non_contiguous_inputs(cuda_contmix):
    logits, rpb, value, grad_out = _inputs(2, 4, 6, 15, 14, 5)
    wide = torch.cat([logits, logits], dim=-1)[..., :25]  # a slice of the taps axis, as the model passes
    strided_value = value.transpose(-1, -2).contiguous().transpose(-1, -2)
    ours = _run(cuda_contmix, wide, rpb.transpose(1, 2).contiguous().transpose(1, 2), strided_value, grad_out, 5)
    _assert_close(ours, _run(contmix_reference, logits, rpb, value, grad_out, 5), 1e-4)


@pytest.mark.gpu
@needs_cuda
def test_non_default_stream(cuda_contmix):
    inputs = _inputs(2, 4, 8, 20, 18, 7)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ours = _run(cuda_contmix, *inputs, 7)
    torch.cuda.current_stream().wait_stream(stream)
    _assert_close(ours, _run(contmix_reference, *inputs, 7), 1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device(cuda_contmix):
    inputs = _inputs(2, 4, 8, 14, 14, 13, device="cuda:1")
    ours = _run(cuda_contmix, *inputs, 13)
    assert all(t.device == torch.device("cuda:1") for t in ours)
    _assert_close(ours, _run(contmix_reference, *inputs, 13), 1e-4)


@pytest.mark.gpu
@needs_cuda
def test_bitwise_deterministic(cuda_contmix):
    inputs = _inputs(4, 8, 16, 14, 14, 13)
    first, second = _run(cuda_contmix, *inputs, 13), _run(cuda_contmix, *inputs, 13)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [13, 17])
def test_half_precision_large_kernels_on_56x56(cuda_contmix, dtype, k):
    inputs = _inputs(2, 2, 8, 56, 56, k, dtype=dtype)
    reference = _run(contmix_reference, *[t.double() for t in inputs], k)
    _assert_close(_run(cuda_contmix, *inputs, k), reference, 2e-2 if dtype == torch.bfloat16 else 5e-3)
