"""Benchmark the fused ContMix CPU kernel against the PyTorch reference and an unfold formulation.

Shapes are OverLoCK-XT's Focus-Net ContMix calls at batch 8 (224x224 input): stride 16 (G=8, 14x14, C=16,
K=13 and the small K=5 branch) and stride 32 (G=12, 7x7, C=14, K=7 and K=5).

* fused: the kernel built by ``overlock-hf build-kernel`` (loaded with ``kernels.get_local_kernel``).
* reference: ``overlock_hf.contmix.contmix_reference`` (loops over the K window rows, K x value intermediate).
* unfold: softmax weights, then ``F.unfold`` of every K x K window start and a per-pixel gather of its clamped
  window, then an einsum: the technique of unfold-based fallbacks, with a K*K*C-per-pixel intermediate.

Times are medians over repeated calls (after warm-up) in this process. Peak memory is measured in a fresh
subprocess per (method, shape, pass): the peak resident set (VmHWM, reset through ``/proc/self/clear_refs``
right before the call) minus the resident set before it, i.e. what the call itself allocated at its peak,
outputs and gradients included.

Usage: ``python benchmarks/contmix.py [--output benchmarks/RESULTS_contmix.md]``
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / ".kernel-build"
BATCH = 8
SHAPES = [  # (G, H, W, C, K)
    (8, 14, 14, 16, 13),
    (8, 14, 14, 16, 5),
    (12, 7, 7, 14, 7),
    (12, 7, 7, 14, 5),
]
METHODS = ("fused", "reference", "unfold")


def contmix_unfold(logits: torch.Tensor, rpb: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """ContMix through ``F.unfold``: (B,G,H,W,K*K), (G,2K-1,2K-1), (B,G,C,H,W) -> (B,G,C,H,W)."""
    from overlock_hf.contmix import relative_position_bias, window_starts

    b, g, c, h, w = value.shape
    k = kernel_size
    weights = torch.softmax(logits + relative_position_bias(rpb, h, w, k).unsqueeze(0), dim=-1)
    windows = F.unfold(value.reshape(b, g * c, h, w), k)  # (B, G*C*K*K, (H-K+1)*(W-K+1))
    starts = window_starts(h, k)[:, None] * (w - k + 1) + window_starts(w, k)[None, :]  # (H, W)
    taps = windows[:, :, starts.reshape(-1)].reshape(b, g, c, k * k, h * w)  # K*K*C per pixel
    out = torch.einsum("bgctp,bgpt->bgcp", taps, weights.reshape(b, g, h * w, k * k))
    return out.reshape(b, g, c, h, w)


def _implementation(method: str):
    if method == "fused":
        from kernels import get_local_kernel

        return get_local_kernel(BUILD_DIR).contmix
    if method == "reference":
        from overlock_hf.contmix import contmix_reference

        return contmix_reference
    return contmix_unfold


def _inputs(shape, requires_grad: bool):
    g, h, w, c, k = shape
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, g, h, w, k * k, generator=gen).requires_grad_(requires_grad)
    rpb = torch.randn(g, 2 * k - 1, 2 * k - 1, generator=gen).requires_grad_(requires_grad)
    value = torch.randn(BATCH, g, c, h, w, generator=gen).requires_grad_(requires_grad)
    return logits, rpb, value, torch.randn(BATCH, g, c, h, w, generator=gen)


def _call(fn, inputs, k: int, backward: bool):
    logits, rpb, value, grad_out = inputs
    out = fn(logits, rpb, value, k)
    if backward:
        torch.autograd.grad(out, (logits, rpb, value), grad_out)


def time_call(method: str, shape, backward: bool, min_seconds: float = 1.0) -> float:
    """Median wall time of one call in milliseconds."""
    fn = _implementation(method)
    inputs = _inputs(shape, backward)
    for _ in range(3):
        _call(fn, inputs, shape[-1], backward)
    samples = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(samples) < 10:
        t0 = time.perf_counter()
        _call(fn, inputs, shape[-1], backward)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def _measure_peak(method: str, shape, backward: bool) -> int:
    """Runs in the subprocess: bytes the call raised the resident set by at its peak."""
    fn = _implementation(method)
    inputs = _inputs(shape, backward)
    small = _inputs((shape[0], shape[-1], shape[-1], 1, shape[-1]), backward)
    _call(fn, small, shape[-1], backward)  # lazy imports and first-call set-up stay outside the measurement
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    _call(fn, inputs, shape[-1], backward)
    return _status("VmHWM") - before


def peak_memory(method: str, shape, backward: bool) -> int:
    spec = json.dumps({"method": method, "shape": shape, "backward": backward})
    result = subprocess.run(
        [sys.executable, __file__, "--threads", str(torch.get_num_threads()), "--measure-peak", spec],
        capture_output=True, text=True, check=True,
    )
    return int(result.stdout.strip())


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def run(output: Path | None) -> str:
    import os

    from overlock_hf.kernel_builder import build_kernel

    build_kernel(BUILD_DIR, backends=["cpu"])
    lines = [
        "# ContMix CPU benchmark",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores at start. Batch {BATCH}, float32. "
        "Produced by `python benchmarks/contmix.py` (method in its docstring).",
        "",
        "## Time (ms, median) and speed-up of the fused kernel",
        "",
        "| G | HxW | C | K | pass | fused | reference | unfold | vs reference | vs unfold |",
        "|---|-----|---|---|------|------:|----------:|-------:|-------------:|----------:|",
    ]
    memory_rows = []
    for shape in SHAPES:
        g, h, w, c, k = shape
        for backward in (False, True):
            label = "fwd+bwd" if backward else "fwd"
            times = {m: time_call(m, shape, backward) for m in METHODS}
            peaks = {m: peak_memory(m, shape, backward) for m in METHODS}
            lines.append(
                f"| {g} | {h}x{w} | {c} | {k} | {label} | {times['fused']:.3f} | {times['reference']:.3f} | "
                f"{times['unfold']:.3f} | {times['reference'] / times['fused']:.1f}x | "
                f"{times['unfold'] / times['fused']:.1f}x |"
            )
            value_bytes = BATCH * g * c * h * w * 4
            memory_rows.append(
                f"| {g} | {h}x{w} | {c} | {k} | {label} | {_mib(value_bytes)} | {_mib(value_bytes * k * k)} | "
                f"{_mib(peaks['fused'])} | {_mib(peaks['reference'])} | {_mib(peaks['unfold'])} |"
            )
    lines += [
        "",
        "## Peak memory of one call (MiB; peak resident-set growth, outputs and gradients included)",
        "",
        "| G | HxW | C | K | pass | value size | K*K x value | fused | reference | unfold |",
        "|---|-----|---|---|------|-----------:|------------:|------:|----------:|-------:|",
        *memory_rows,
        "",
    ]
    text = "\n".join(lines)
    if output is not None:
        output.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="write the markdown table here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable on a busy host)")
    parser.add_argument("--measure-peak", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure_peak is not None:
        spec = json.loads(args.measure_peak)
        print(_measure_peak(spec["method"], tuple(spec["shape"]), spec["backward"]))
        return
    print(run(args.output))


if __name__ == "__main__":
    main()
