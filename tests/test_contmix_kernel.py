"""The fused ContMix kernel (src/overlock_hf/contmix_kernel/) built without nix: parity with the PyTorch reference and
NATTEN, custom-op registrations, torch.compile, error handling, kernels-hub loading and kernelize.

The CPU variant is built once per session into <repo>/.kernel-build through the `build-kernel` CLI command
(reused across runs while the sources are unchanged).
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from _shared import CONTMIX_BAD_INPUTS, contmix_bad_inputs, grouped, rel_err
from conftest import REPO_ROOT, fixture_path
from overlock_hf.contmix import ContMix, contmix_pytorch, contmix_reference

KERNEL_BUILD_DIR = REPO_ROOT / ".kernel-build"
SOURCE_DIR = REPO_ROOT / "src" / "overlock_hf" / "contmix_kernel"


def _raw_ops(kernel_module):
    """The registered ops of a loaded kernel (``torch.ops.<id>``), looked up by module name: a process that
    loaded the same build through ``kernels.get_kernel`` first holds a different package object under it."""
    return importlib.import_module(f"{kernel_module.__name__}._ops").ops


def _inputs(b, g, c, h, w, k, dtype=torch.float32, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, g, h, w, k * k, generator=gen, dtype=torch.float64) * 2
    rpb = torch.randn(g, 2 * k - 1, 2 * k - 1, generator=gen, dtype=torch.float64)
    value = torch.randn(b, g, c, h, w, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(b, g, c, h, w, generator=gen, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (logits, rpb, value, grad_out)]


def _forward_backward(fn, logits, rpb, value, grad_out, k):
    leaves = [t.detach().clone().requires_grad_() for t in (logits, rpb, value)]
    out = fn(*leaves, k)
    grads = torch.autograd.grad(out, leaves, grad_out)
    return (out.detach(), *grads)


@pytest.fixture(scope="session")
def cpu_build() -> Path:
    from overlock_hf.cli import main

    assert main(["build-kernel", str(KERNEL_BUILD_DIR), "--backend", "cpu"]) == 0
    return KERNEL_BUILD_DIR


@pytest.fixture(scope="session")
def kernel(cpu_build):
    from kernels import get_local_kernel

    return get_local_kernel(cpu_build)


@pytest.fixture(scope="module")
def na2d_cases():
    return load_file(fixture_path("na2d_av_reference.safetensors"))


# ----------------------------------------------------------------------------------------------- build / load
def test_build_layout_and_cache(cpu_build):
    from overlock_hf.kernel_builder import build_kernel

    variants = sorted((cpu_build / "build").iterdir())
    variant = next(v for v in variants if v.name.endswith("-cpu-x86_64-linux") and not v.name.startswith("."))
    major, minor = torch.__version__.split(".")[:2]
    assert variant.name == f"torch{major}{minor}-cxx11-cpu-x86_64-linux"
    names = {p.name for p in variant.iterdir()}
    assert {"__init__.py", "layers.py", "functional.py", "_ops.py", "metadata.json"} <= names
    (again,) = build_kernel(cpu_build, backends=["cpu"])
    assert not again.rebuilt and again.path == variant
    assert f"{again.kernel_id}.abi3.so" in names


def test_hub_loading_paths(cpu_build, kernel):
    from kernels import LocalLayerRepository

    assert hasattr(kernel, "contmix") and hasattr(kernel.layers, "ContMix")
    layer = LocalLayerRepository(cpu_build, layer_name="ContMix").load()
    assert layer.has_backward and layer.can_torch_compile


# ------------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("case", range(8))
def test_matches_natten_fixture(kernel, na2d_cases, case):
    k = int(na2d_cases[f"case{case}.kernel_size"])
    attn = na2d_cases[f"case{case}.attn"]
    logits = attn.log()
    rpb = torch.zeros(attn.shape[1], 2 * k - 1, 2 * k - 1)
    value = grouped(na2d_cases[f"case{case}.value"])
    grad_out = grouped(na2d_cases[f"case{case}.grad_out"])
    out, g_logits, g_rpb, g_value = _forward_backward(kernel.contmix, logits, rpb, value, grad_out, k)
    grad_attn = na2d_cases[f"case{case}.grad_attn"]
    expected_logits = attn * (grad_attn - (attn * grad_attn).sum(-1, keepdim=True))
    ref_rpb = _forward_backward(contmix_reference, logits, rpb, value, grad_out, k)[2]
    assert rel_err(out, grouped(na2d_cases[f"case{case}.out"])) <= 1e-5
    assert rel_err(g_logits, expected_logits) <= 1e-5
    assert rel_err(g_value, grouped(na2d_cases[f"case{case}.grad_value"])) <= 1e-5
    assert rel_err(g_rpb, ref_rpb) <= 1e-5


@st.composite
def contmix_shapes(draw, element_budget=1_000_000):
    """(b, g, c, h, w, k) with the reference's largest intermediate (b*g*c*h*w*k) kept under the budget."""
    k = draw(st.sampled_from(range(3, 20, 2)))
    h = draw(st.integers(k, 64))
    w = draw(st.integers(k, 64))
    b = draw(st.integers(1, 4))
    g = draw(st.integers(1, 16))
    c_max = max(1, min(64, element_budget // (b * g * h * w * k)))
    c = draw(st.integers(1, c_max))
    return b, g, c, h, w, k


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=contmix_shapes(), seed=st.integers(0, 2**16))
def test_matches_reference_on_random_shapes(kernel, shape, seed):
    logits, rpb, value, grad_out = _inputs(*shape, seed=seed)
    k = shape[-1]
    ours = _forward_backward(kernel.contmix, logits, rpb, value, grad_out, k)
    ref = _forward_backward(contmix_reference, logits, rpb, value, grad_out, k)
    for name, a, r in zip(("out", "grad_logits", "grad_rpb", "grad_value"), ours, ref):
        assert a.shape == r.shape and a.dtype == r.dtype, name
        assert rel_err(a, r) <= 1e-5, (name, shape, rel_err(a, r))


@pytest.mark.parametrize("channels", [8, 10, 14, 16, 15])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_specialized_paths_match_reference(kernel, channels, dtype):
    """The CPU forward has compile-time paths for 8/10/14/16 channels per group (15: the generic path)."""
    for shape in ((2, 3, channels, 7, 9, 5), (1, 2, channels, 13, 11, 7)):
        logits, rpb, value, grad_out = (t.to(dtype) for t in _inputs(*shape))
        ours = _forward_backward(kernel.contmix, logits, rpb, value, grad_out, shape[-1])
        ref = _forward_backward(contmix_reference, *(t.float() for t in (logits, rpb, value, grad_out)), shape[-1])
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        for name, a, r in zip(("out", "grad_logits", "grad_rpb", "grad_value"), ours, ref):
            assert rel_err(a.float(), r) <= tol, (name, shape, dtype)


@pytest.mark.parametrize("shape", [(1, 2, 3, 5, 6, 3), (2, 1, 2, 5, 7, 5)])
def test_gradcheck_float64(kernel, shape):
    logits, rpb, value, _ = _inputs(*shape, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (logits, rpb, value)]
    assert torch.autograd.gradcheck(lambda a, r, v: kernel.contmix(a, r, v, shape[-1]), leaves, fast_mode=True)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 2e-2), (torch.float16, 4e-3)])
def test_half_precision(kernel, dtype, tol):
    shape = (2, 4, 8, 14, 14, 7)
    logits, rpb, value, grad_out = (t.to(dtype) for t in _inputs(*shape))
    ours = _forward_backward(kernel.contmix, logits, rpb, value, grad_out, 7)
    ref = _forward_backward(contmix_reference, *(t.float() for t in (logits, rpb, value, grad_out)), 7)
    for name, a, r in zip(("out", "grad_logits", "grad_rpb", "grad_value"), ours, ref):
        assert a.dtype == dtype, name
        assert rel_err(a, r) <= tol, (name, rel_err(a, r))


def test_non_contiguous_inputs(kernel):
    logits, rpb, value, grad_out = _inputs(2, 3, 4, 9, 8, 5)
    value_nc = value.transpose(3, 4).contiguous().transpose(3, 4)
    logits_nc = logits.permute(0, 2, 1, 3, 4).contiguous().permute(0, 2, 1, 3, 4)
    ours = _forward_backward(kernel.contmix, logits_nc, rpb, value_nc, grad_out, 5)
    ref = _forward_backward(contmix_reference, logits, rpb, value, grad_out, 5)
    for a, r in zip(ours, ref):
        assert rel_err(a, r) <= 1e-5


# ---------------------------------------------------------------------------------- custom-op machinery
def test_opcheck(kernel):
    ops = _raw_ops(kernel)
    logits, rpb, value, grad_out = _inputs(1, 2, 3, 6, 7, 3)
    leaves = [t.requires_grad_() for t in (logits, rpb, value)]
    torch.library.opcheck(ops.contmix_forward.default, (*leaves, 3))
    torch.library.opcheck(ops.contmix_backward.default, (grad_out, logits.detach(), rpb.detach(), value.detach(), 3))


def test_torch_compile_fullgraph_matches_eager(kernel):
    logits, rpb, value, grad_out = _inputs(2, 2, 3, 9, 10, 5)

    def step(a, r, v):
        return kernel.contmix(a, r, v, 5) * 2.0

    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    eager = _forward_backward(lambda a, r, v, k: step(a, r, v), logits, rpb, value, grad_out, 5)
    torch._dynamo.reset()
    ours = _forward_backward(lambda a, r, v, k: compiled(a, r, v), logits, rpb, value, grad_out, 5)
    for a, e in zip(ours, eager):
        assert rel_err(a, e) <= 1e-6


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(("change", "error", "message"), [case[1:] for case in CONTMIX_BAD_INPUTS],
                         ids=[case[0] for case in CONTMIX_BAD_INPUTS])
def test_python_errors(kernel, change, error, message):
    """The kernel's own input check (the standalone package repeats the reference's): the same table."""
    with pytest.raises(error, match=message):
        kernel.contmix(*contmix_bad_inputs(change))


def test_cpp_checks_raise_runtime_errors(kernel):
    ops = _raw_ops(kernel)
    logits, rpb, value, _ = _inputs(1, 2, 3, 6, 7, 3)
    with pytest.raises(RuntimeError, match="odd integer"):
        ops.contmix_forward(torch.randn(1, 2, 6, 7, 16), torch.randn(2, 7, 7), value, 4)
    with pytest.raises(RuntimeError, match="at least 7x7"):
        ops.contmix_forward(torch.randn(1, 2, 6, 7, 49), torch.randn(2, 13, 13), value, 7)
    with pytest.raises(RuntimeError, match="logits must be"):
        ops.contmix_forward(logits[..., :8], rpb, value, 3)
    with pytest.raises(RuntimeError, match="rpb must be"):
        ops.contmix_forward(logits, rpb[:1], value, 3)
    with pytest.raises(RuntimeError, match="share one dtype"):
        ops.contmix_forward(logits.double(), rpb, value, 3)
    with pytest.raises(RuntimeError, match="grad_out must match"):
        ops.contmix_backward(value[:, :1], logits, rpb, value, 3)


def test_mixed_dtypes_follow_reference(kernel):
    logits, rpb, value, grad_out = _inputs(1, 2, 4, 8, 9, 3)
    out = kernel.contmix(logits, rpb.double(), value.bfloat16(), 3)
    ref = contmix_reference(logits, rpb, value.bfloat16(), 3)
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) <= 1e-2


# ------------------------------------------------------------------------------------------------ memory
def test_no_kkc_sized_intermediate(cpu_build):
    """Peak RSS growth of one fused forward + backward stays near the input sizes; K*K*C would be 169x value.

    Measured in a fresh process: the kernel's peak resident set (VmHWM, reset through /proc/self/clear_refs
    right before the call) minus the resident set before it.
    """
    script = f"""
import re, torch
from pathlib import Path
from kernels import get_local_kernel

def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

kernel = get_local_kernel(Path({str(cpu_build)!r}))
b, g, c, h, w, k = 8, 8, 16, 56, 56, 13
logits = torch.randn(b, g, h, w, k * k, requires_grad=True)
rpb = torch.randn(g, 2 * k - 1, 2 * k - 1, requires_grad=True)
value = torch.randn(b, g, c, h, w, requires_grad=True)
grad_out = torch.randn(b, g, c, h, w)
kernel.contmix(logits[:1, :1, :k, :k].detach(), rpb[:1].detach(), value[:1, :1, :, :k, :k].detach(), k)
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
kernel.contmix(logits, rpb, value, k).backward(grad_out)
print(status("VmHWM") - before, value.numel() * 4, logits.numel() * 4)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    growth, value_bytes, logits_bytes = map(int, result.stdout.split())
    kkc_bytes = value_bytes * 13 * 13
    # out + grad_value + two channels-last copies (value-sized); grad_logits + float32 attention (logits-sized)
    assert 0 < growth < 5 * value_bytes + 3 * logits_bytes < kkc_bytes / 4, (growth, value_bytes, logits_bytes)


def test_the_wheel_ships_the_kernel_source(tmp_path):
    """`overlock-hf build-kernel` defaults to the source tree inside the package, and the wheel carries all of it
    (so the command works after `pip install`, outside a git checkout)."""
    import zipfile

    from overlock_hf.kernel_builder import DEFAULT_SOURCE_DIR

    assert DEFAULT_SOURCE_DIR == SOURCE_DIR.resolve() and (DEFAULT_SOURCE_DIR / "build.toml").is_file()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w",
                    str(tmp_path), str(REPO_ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("overlock_hf-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = {f"overlock_hf/contmix_kernel/{p.relative_to(SOURCE_DIR).as_posix()}" for p in SOURCE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert sources and sources <= shipped, sorted(sources - shipped)


# ---------------------------------------------------------------------------------------------- kernelize
class _Mixer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = ContMix()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, logits, rpb, value, k):
        return self.mix(logits * self.scale, rpb, value, k)


@pytest.mark.parametrize("mode", ["inference", "training", "training|torch_compile"])
def test_kernelize_local_build(cpu_build, mode):
    from overlock_hf.kernel_hub import kernelize

    model = _Mixer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernelize(model, cpu_build, mode=mode) is model
    assert "forward" in model.mix.__dict__, "ContMix.forward was not replaced"
    assert model.mix.forward.__func__ is not ContMix.forward
    logits, rpb, value, grad_out = _inputs(2, 3, 4, 9, 11, 5)
    ours = _forward_backward(model, logits, rpb, value, grad_out, 5)
    ref = _forward_backward(contmix_reference, logits, rpb, value, grad_out, 5)
    for a, r in zip(ours, ref):
        assert rel_err(a, r) <= 1e-5


@pytest.mark.parametrize("source", ["/nonexistent/overlock-contmix-build", "no-such-org/no-such-kernel"])
def test_kernelize_fallback_warns_once(tmp_path, monkeypatch, source):
    from overlock_hf.kernel_hub import kernelize

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    model = _Mixer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernelize(model, source, mode="inference")
    relevant = [w for w in caught if "overlock_hf.kernelize" in str(w.message)]
    assert len(relevant) == 1, [str(w.message) for w in caught]
    assert "keeping the PyTorch ContMix" in str(relevant[0].message)
    assert "forward" not in model.mix.__dict__
    logits, rpb, value, _ = _inputs(1, 2, 3, 7, 7, 3)
    assert torch.equal(model(logits, rpb, value, 3), contmix_pytorch(logits, rpb, value, 3))  # the default path


@pytest.mark.parametrize(
    ("source", "mode", "error", "match"),
    [
        ("acme/overlock-contmix", "inferenc", ValueError, "unknown kernelize mode 'inferenc'"),
        ("acme/overlock-contmix", "training|compile", ValueError, "unknown kernelize mode 'compile'"),
        ("acme/overlock-contmix", 3, TypeError, "mode must be a string or kernels.Mode"),
        ("inference", None, ValueError, "neither a local build folder nor a Hub repo id"),
        (None, "inference", TypeError, "kernel source must be a folder path or a Hub repo id"),
    ],
)
def test_kernelize_rejects_caller_mistakes_before_trying(source, mode, error, match):
    """Mistakes raise (nothing is tried, no fallback warning); only load/availability failures fall back."""
    from overlock_hf.kernel_hub import kernelize

    model = _Mixer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(error, match=match):
            kernelize(model, source, mode=mode)
    assert "forward" not in model.mix.__dict__


def test_kernelize_does_not_swallow_a_bug(cpu_build, monkeypatch):
    import kernels

    from overlock_hf.kernel_hub import kernelize

    monkeypatch.setattr(kernels, "kernelize", lambda *a, **k: (_ for _ in ()).throw(AttributeError("a bug")))
    model = _Mixer()
    with pytest.raises(AttributeError, match="a bug"):
        kernelize(model, cpu_build, mode="inference")


def test_kernelize_whole_model_matches_pytorch(cpu_build):
    from overlock_hf.configuration_overlock import OverLoCKConfig
    from overlock_hf.kernel_hub import kernelize
    from overlock_hf.modeling_overlock import OverLoCKForImageClassification

    config = OverLoCKConfig(
        depths=[1, 1, 1, 1], focus_depths=[1, 1], hidden_sizes=[16, 32, 48, 64], focus_num_heads=[2, 2],
        projection_dim=64, num_labels=5,
    )
    torch.manual_seed(0)
    reference = OverLoCKForImageClassification(config).train()
    fused = OverLoCKForImageClassification(config).train()
    fused.load_state_dict(reference.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernelize(fused, cpu_build, mode="training")
    replaced = [m for m in fused.modules() if isinstance(m, ContMix) and "forward" in m.__dict__]
    assert replaced, "no ContMix layer was kernelized"
    pixels = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 3])
    results = []
    for model in (reference, fused):
        output = model(pixel_values=pixels, labels=labels)
        output.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((output.logits.detach(), grads))
    (ref_logits, ref_grads), (logits, grads) = results
    assert rel_err(logits, ref_logits) <= 1e-5
    assert ref_grads.keys() == grads.keys()
    for name in ref_grads:
        assert rel_err(grads[name], ref_grads[name]) <= 1e-5, name


# ------------------------------------------------------------------------------------------ CUDA source
@pytest.mark.slow
def test_cuda_source_compiles_with_nvcc(tmp_path):
    """Compile contmix_cuda.cu (and the binding with CUDA registrations) with the local nvcc.

    The installed torch may be a CPU build: its headers then lack one generated CUDA header, which is stubbed.
    """
    nvcc = shutil.which("nvcc") or "/usr/local/bin/nvcc"
    if not Path(nvcc).exists():
        pytest.fail("nvcc not found (the slow CUDA compile test needs the CUDA toolkit)")
    torch_include = Path(torch.__file__).parent / "include"
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    if not (torch_include / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [
        f"-I{SOURCE_DIR / 'common'}", f"-I{SOURCE_DIR / 'torch-ext'}", "-isystem", str(tmp_path / "stub"),
        "-isystem", str(torch_include), "-isystem", str(torch_include / "torch" / "csrc" / "api" / "include"),
        "-isystem", sysconfig.get_paths()["include"],
    ]
    common = ["-std=c++20", "-O3", "-DCUDA_KERNEL", "-DTORCH_EXTENSION_NAME=_overlock_contmix_cuda_test", *includes]
    subprocess.run(
        [nvcc, "-c", str(SOURCE_DIR / "contmix_cuda" / "contmix_cuda.cu"), "-o", str(tmp_path / "cuda.o"),
         "--expt-relaxed-constexpr", "-gencode=arch=compute_90,code=sm_90", "-Xcompiler", "-fPIC",
         "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
         *common],
        check=True, capture_output=True, text=True,
    )
    subprocess.run(
        ["c++", "-c", str(SOURCE_DIR / "torch-ext" / "torch_binding.cpp"), "-o", str(tmp_path / "binding.o"),
         "-fPIC", *common],
        check=True, capture_output=True, text=True,
    )
    assert (tmp_path / "cuda.o").stat().st_size > 0 and (tmp_path / "binding.o").stat().st_size > 0


# -------------------------------------------------------------------------------------------------- GPU
@pytest.fixture(scope="session")
def cuda_kernel():
    from kernels import get_local_kernel

    from overlock_hf.kernel_builder import build_kernel

    build_kernel(KERNEL_BUILD_DIR, backends=["cuda"])
    return get_local_kernel(KERNEL_BUILD_DIR, backend="cuda")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("case", range(8))
def test_cuda_matches_natten_fixture(cuda_kernel, na2d_cases, case):
    k = int(na2d_cases[f"case{case}.kernel_size"])
    attn = na2d_cases[f"case{case}.attn"].cuda()
    grad_attn = na2d_cases[f"case{case}.grad_attn"].cuda()
    rpb = torch.zeros(attn.shape[1], 2 * k - 1, 2 * k - 1, device="cuda")
    value = grouped(na2d_cases[f"case{case}.value"]).cuda()
    grad_out = grouped(na2d_cases[f"case{case}.grad_out"]).cuda()
    out, g_logits, _, g_value = _forward_backward(cuda_kernel.contmix, attn.log(), rpb, value, grad_out, k)
    expected_logits = attn * (grad_attn - (attn * grad_attn).sum(-1, keepdim=True))
    assert rel_err(out.cpu(), grouped(na2d_cases[f"case{case}.out"])) <= 1e-5
    assert rel_err(g_logits, expected_logits) <= 1e-5
    assert rel_err(g_value.cpu(), grouped(na2d_cases[f"case{case}.grad_value"])) <= 1e-5


@pytest.mark.gpu
@needs_cuda
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=contmix_shapes(), seed=st.integers(0, 2**16))
def test_cuda_matches_reference_on_random_shapes(cuda_kernel, shape, seed):
    inputs = _inputs(*shape, seed=seed, device="cuda")
    k = shape[-1]
    ours = _forward_backward(cuda_kernel.contmix, *inputs, k)
    ref = _forward_backward(contmix_reference, *inputs, k)
    for name, a, r in zip(("out", "grad_logits", "grad_rpb", "grad_value"), ours, ref):
        assert rel_err(a, r) <= 1e-5, (name, shape)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.bfloat16, 2e-2), (torch.float16, 4e-3)])
def test_cuda_dtypes(cuda_kernel, dtype, tol):
    shape = (2, 4, 8, 14, 14, 7)
    inputs = [t.to(dtype) for t in _inputs(*shape, device="cuda")]
    ours = _forward_backward(cuda_kernel.contmix, *inputs, 7)
    ref = _forward_backward(contmix_reference, *(t.double() for t in inputs), 7)
    for name, a, r in zip(("out", "grad_logits", "grad_rpb", "grad_value"), ours, ref):
        assert a.dtype == dtype and rel_err(a, r) <= tol, name


@pytest.mark.gpu
@needs_cuda
def test_cuda_opcheck_gradcheck_and_compile(cuda_kernel):
    ops = _raw_ops(cuda_kernel)
    logits, rpb, value, grad_out = _inputs(1, 2, 3, 6, 7, 5, dtype=torch.float64, device="cuda")
    leaves = [t.requires_grad_() for t in (logits, rpb, value)]
    torch.library.opcheck(ops.contmix_forward.default, (*leaves, 5))
    assert torch.autograd.gradcheck(lambda a, r, v: cuda_kernel.contmix(a, r, v, 5), leaves)
    compiled = torch.compile(lambda a, r, v: cuda_kernel.contmix(a, r, v, 5), fullgraph=True)
    eager = _forward_backward(cuda_kernel.contmix, logits, rpb, value, grad_out, 5)
    ours = _forward_backward(lambda a, r, v, k: compiled(a, r, v), logits, rpb, value, grad_out, 5)
    for a, e in zip(ours, eager):
        assert rel_err(a, e) <= 1e-10
