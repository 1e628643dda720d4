"""Whole-model CPU speed in one run: OverLoCK-XT (ours: default PyTorch path, BN-folded, fused ContMix kernel;
optionally the released implementation) against transformers' ConvNeXt-T.

    python benchmarks/model_throughput.py [--batch 8] [--size 224] [--repeats 4] [--threads 2]
        [--official-source DIR] [--compile | --compile-only] [--output FILE]

Random weights. Per model: eval-mode inference (`torch.inference_mode()`) at `--batch` and at batch 1, a
training step (train mode, labels, the auxiliary loss for OverLoCK, forward + backward + AdamW), bf16-autocast
inference, the peak resident set of a training step (SGD, a fresh process per model), and with `--compile`
`torch.compile` speed-ups and compile times. Timed calls of all models are interleaved (repeat r of every model,
then repeat r + 1, ...) so that a load change on a shared machine hits all of them; the table reports the
median wall time and the median CPU time (all threads) of a call. The floor is the FLOP count at this machine's
sgemm rate, measured in the run.

Inference variants: ours default = `reparameterize()` (what `from_pretrained` of a converted checkpoint gives),
ours + `fuse_for_inference()` (every BatchNorm folded), ours kernelized = fused + `kernelize` (kernel built in
`.kernel-build/`); the released model re-parameterized (`merge_dilated_branches`) with an unfold `na2d_av`.
Training always uses the plain (unfolded) models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import ConvNextConfig, ConvNextForImageClassification

from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification, fuse_for_inference, kernelize
from overlock_hf.kernel_builder import build_kernel

REPO_ROOT = Path(__file__).resolve().parents[1]
KERNEL_DIR = REPO_ROOT / ".kernel-build"
GMACS = {"overlock": 2.6, "convnext": 4.5}  # per 224x224 image (paper, Table I)
RELEASED, DEFAULT, FOLDED, KERNEL, CONVNEXT = (
    "released (re-parameterized, unfold ContMix)", "ours, default path (PyTorch ContMix)",
    "ours + fuse_for_inference", "ours, kernelized (fused ContMix kernel)", "ConvNeXt-T (transformers)")


def _overlock() -> torch.nn.Module:
    torch.manual_seed(0)
    return OverLoCKForImageClassification(OverLoCKConfig.from_variant("overlock-xt", num_labels=1000))


def _convnext() -> torch.nn.Module:
    torch.manual_seed(0)
    return ConvNextForImageClassification(
        ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], num_labels=1000))


def _released(source: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from official_stubs import load_released_module

    torch.manual_seed(0)
    return load_released_module(source).overlock_xt(num_classes=1000)


def build(name: str, training: bool, official: Path | None) -> torch.nn.Module:
    """One benchmark model, in train or eval mode."""
    if name == CONVNEXT:
        model = _convnext()
    elif name == RELEASED:
        model = _released(official)
        if not training:
            for module in model.modules():
                if hasattr(module, "merge_dilated_branches"):
                    module.merge_dilated_branches()
    else:
        model = _overlock()
        if not training:
            model.eval().reparameterize()
            if name in (FOLDED, KERNEL):
                fuse_for_inference(model)
        if name == KERNEL:
            kernelize(model, KERNEL_DIR, mode="training" if training else "inference")
    return model.train(training)


def _loss(model, pixels, labels):
    out = model(pixels) if not hasattr(model, "config") else model(pixel_values=pixels, labels=labels)
    if isinstance(out, dict) and "main" in out:  # the released model in train mode
        return F.cross_entropy(out["main"], labels) + 0.4 * F.cross_entropy(out["aux"], labels)
    return out.loss


def _clock(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(calls: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) seconds per call; one warm-up call each, then the repeats interleaved."""
    for fn in calls.values():
        fn()
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            samples[name].append(_clock(fn))
    return {name: tuple(statistics.median(s[i] for s in values) for i in range(2)) for name, values in samples.items()}


def inference_call(model, pixels, bf16=False):
    def call():
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            model(pixels)
    return call


def train_call(model, pixels, labels, optimizer=None):
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-4)

    def call():
        optimizer.zero_grad(set_to_none=True)
        _loss(model, pixels, labels).backward()
        optimizer.step()
    return call


def peak_rss_gb(name: str, args) -> float:
    """Peak resident set (GB) of a fresh process that builds the model and runs two SGD training steps."""
    command = [sys.executable, __file__, "--_peak", name, "--batch", str(args.batch), "--size", str(args.size),
               "--threads", str(args.threads)] + (["--official-source", str(args.official_source)]
                                                  if args.official_source else [])
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_gb"]


def _peak_child(name: str, args) -> None:
    model = build(name, True, args.official_source)
    pixels, labels = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 1000, (args.batch,))
    step = train_call(model, pixels, labels, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    step(), step()
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
    print(json.dumps({"peak_gb": hwm / 2**20}))


def sgemm_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_clock(lambda: a @ b)[0] for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def compiled(models: dict, pixels, labels, repeats: int) -> list[str]:
    """torch.compile inference and training for ours (default path) and ConvNeXt-T: compile time, speed-up."""
    rows = []
    for name in (DEFAULT, CONVNEXT):
        for training in (False, True):
            eager = models[(name, training)]
            # static shapes: the blocks of different stages are separate frames (graph breaks at the ContMix
            # planning), and with automatic dynamic shapes torch 2.13's inductor fails on the training graph
            model = torch.compile(build(name, training, None), dynamic=False)
            call = train_call(model, pixels, labels) if training else inference_call(model, pixels)
            try:
                compile_s = _clock(call)[0]
            except Exception as error:  # a compiler failure is a result to report, not a reason to lose the run
                rows.append(f"| {name} | {'train step' if training else 'inference'} | failed: "
                            f"{type(error).__name__}: {str(error).strip().splitlines()[0][:150]} | - | - | - |")
                continue
            eager_call = train_call(eager, pixels, labels) if training else inference_call(eager, pixels)
            times = interleaved({"compiled": call, "eager": eager_call}, repeats)
            rows.append(f"| {name} | {'train step' if training else 'inference'} | {compile_s:.0f} | "
                        f"{times['eager'][0]:.3f} | {times['compiled'][0]:.3f} | "
                        f"{times['eager'][0] / times['compiled'][0]:.2f}x |")
    return ["", "## torch.compile (default inductor backend)", "",
            "| model | pass | first call incl. compile (s) | eager s | compiled s | speed-up |",
            "|---|---|---:|---:|---:|---:|", *rows]


def _targets(inf, lat, train, rss, released: bool) -> list[str]:
    """The issue's targets as measured ratios (wall time; CPU time in brackets)."""
    def ratio(table, a, b, i):
        return table[a][i] / table[b][i]

    rows = []

    def add(text, table, a, b, bound, at_least):
        wall, cpu = ratio(table, a, b, 0), ratio(table, a, b, 1)
        met = wall >= bound if at_least else wall <= bound
        rows.append(f"| {text} | {'>=' if at_least else '<='} {bound} | {wall:.2f}x ({cpu:.2f}x) | "
                    f"{'met' if met else 'not met'} |")

    add("kernelized inference throughput vs ConvNeXt-T", inf, CONVNEXT, KERNEL, 1.25, True)
    add("kernelized batch-1 latency: ConvNeXt-T time / ours", lat, CONVNEXT, KERNEL, 1.0, True)
    if released:
        add("default-path inference throughput vs released", inf, RELEASED, DEFAULT, 3.0, True)
    add("default-path inference time / kernelized", inf, DEFAULT, KERNEL, 1.3, False)
    add("default + fuse_for_inference time / kernelized", inf, FOLDED, KERNEL, 1.3, False)
    add("kernelized train step time / ConvNeXt-T", train, KERNEL, CONVNEXT, 1.1, False)
    if released:
        add("kernelized train step speed vs released", train, RELEASED, KERNEL, 4.0, True)
    add("default-path train step time / kernelized", train, DEFAULT, KERNEL, 1.4, False)
    for name in (DEFAULT, KERNEL):
        value = rss[name] / rss[CONVNEXT]
        rows.append(f"| peak RSS of a training step, {name} / ConvNeXt-T | <= 1.2 | {value:.2f}x | "
                    f"{'met' if value <= 1.2 else 'not met'} |")
    return ["", "## Targets (issue 14), measured ratios: wall time (CPU time)", "",
            "| target | bound | measured | |", "|---|---:|---:|---|", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--official-source", type=Path, help="checkout of the released code (models/overlock.py)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--compile-only", action="store_true", help="measure only the torch.compile table")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    parser.add_argument("--_peak", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args._peak:
        return _peak_child(args._peak, args)
    if args.compile_only:
        return _write(_compile_report(args), args.output)

    load = os.getloadavg()[0]
    build_kernel(KERNEL_DIR, backends=["cpu"])
    names = ([RELEASED] if args.official_source else []) + [DEFAULT, FOLDED, KERNEL, CONVNEXT]
    evals = {name: build(name, False, args.official_source) for name in names}
    trains = {name: build(name, True, args.official_source) for name in names if name != FOLDED}
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    labels = torch.randint(0, 1000, (args.batch,), generator=gen)
    inf = interleaved({n: inference_call(m, pixels) for n, m in evals.items()}, args.repeats)
    lat = interleaved({n: inference_call(m, pixels[:1]) for n, m in evals.items()}, 2 * args.repeats)
    bf16 = interleaved({n: inference_call(evals[n], pixels, bf16=True) for n in (DEFAULT, KERNEL, CONVNEXT)},
                       args.repeats)
    train = interleaved({n: train_call(m, pixels, labels) for n, m in trains.items()}, args.repeats)
    rss = {name: peak_rss_gb(name, args) for name in trains}
    gflops = sgemm_gflops()

    def floor(name, factor=1):
        macs = GMACS["convnext" if name == CONVNEXT else "overlock"] * (args.size / 224) ** 2
        return factor * 2 * macs * args.batch / gflops

    bf16_note = "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    lines = [
        "# Whole-model CPU speed: OverLoCK-XT against ConvNeXt-T",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads, torch "
        f"{torch.__version__}; load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at the end (the "
        "machine is shared: wall times move with the load, compare ratios). Batch "
        f"{args.batch} at {args.size}x{args.size}, float32, random weights, median of {args.repeats} interleaved "
        f"calls. sgemm rate measured in this run: {gflops:.0f} GFLOP/s; floor = 2 x GMACs x batch / that rate "
        f"(XT {GMACS['overlock']}, ConvNeXt-T {GMACS['convnext']} GMACs per image; training taken as 3x). "
        f"CPU bf16 support (avx512_bf16): {'yes' if bf16_note else 'no'}. Produced by "
        "`python benchmarks/model_throughput.py` (`make benchmark`).",
        "",
        "| model | params (M) | inference s / batch | CPU s | x floor | batch-1 ms | bf16 autocast s | "
        "train step s (AdamW, aux loss) | CPU s | x floor | peak RSS train (GB, SGD) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        params = sum(p.numel() for p in evals[name].parameters()) / 1e6
        t_row = (f"{train[name][0]:.2f} | {train[name][1]:.2f} | {train[name][0] / floor(name, 3):.1f} | "
                 f"{rss[name]:.2f}") if name in train else "- | - | - | -"
        b_row = f"{bf16[name][0]:.3f}" if name in bf16 else "-"
        lines.append(f"| {name} | {params:.2f} | {inf[name][0]:.3f} | {inf[name][1]:.3f} | "
                     f"{inf[name][0] / floor(name):.1f} | {lat[name][0] * 1e3:.0f} | {b_row} | {t_row} |")
    lines += _targets(inf, lat, train, rss, bool(args.official_source))
    if args.compile:
        lines += compiled({(n, t): m for t, d in ((False, evals), (True, trains)) for n, m in d.items()},
                          pixels, labels, args.repeats)
    _write("\n".join(lines) + "\n", args.output)


def _compile_report(args) -> str:
    """The torch.compile table alone (`--compile-only`), with the run's conditions."""
    load = os.getloadavg()[0]
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    labels = torch.randint(0, 1000, (args.batch,), generator=gen)
    models = {(n, t): build(n, t, None) for n in (DEFAULT, CONVNEXT) for t in (False, True)}
    lines = compiled(models, pixels, labels, args.repeats)
    head = (f"torch {torch.__version__}, {args.threads} threads, batch {args.batch} at {args.size}x{args.size}, float32, "
            f"median of {args.repeats} interleaved calls; load average {load:.1f} at start, "
            f"{os.getloadavg()[0]:.1f} at the end. `python benchmarks/model_throughput.py --compile-only`.")
    return "\n".join(lines[:3] + [head, ""] + lines[3:]) + "\n"


def _write(report: str, output: Path | None) -> None:
    print(report)
    if output:
        tmp = output.with_suffix(".tmp")
        tmp.write_text(report)
        tmp.replace(output)


if __name__ == "__main__":
    main()
