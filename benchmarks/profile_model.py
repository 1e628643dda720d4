"""torch.profiler op table of OverLoCK-XT (default PyTorch path) inference and training step on the CPU.

    python benchmarks/profile_model.py [--batch 8] [--threads 2] [--rows 15] --output benchmarks/PROFILE_after.md

Ops sorted by self CPU time over two profiled calls (after one warm-up); percentages are of the total self CPU
time. Uses the models of ``benchmarks/model_throughput.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_throughput as mt  # noqa: E402


def op_table(call, rows: int) -> list[str]:
    call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call(), call()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = ["| op | calls | self CPU ms / call of the model | share |", "|---|---:|---:|---:|"]
    for e in events[:rows]:
        lines.append(f"| `{e.key}` | {e.count // 2} | {e.self_cpu_time_total / 2e3:.1f} | "
                     f"{100 * e.self_cpu_time_total / total:.1f}% |")
    lines.append(f"| total | | {total / 2e3:.1f} | 100% |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.batch, 3, 224, 224, generator=gen)
    labels = torch.randint(0, 1000, (args.batch,), generator=gen)
    sections = []
    for title, name, training in (("inference, default path + fuse_for_inference", mt.FOLDED, False),
                                  ("training step (AdamW, aux loss), default path", mt.DEFAULT, True)):
        model = mt.build(name, training, None)
        call = mt.train_call(model, pixels, labels) if training else mt.inference_call(model, pixels)
        sections += ["", f"## {title}", "", *op_table(call, args.rows)]
    header = [f"# OverLoCK-XT CPU profile (`{' '.join(sys.argv[1:])}`)", "",
              f"Batch {args.batch}, 224x224, float32, {args.threads} threads, torch {torch.__version__}, load "
              f"average {os.getloadavg()[0]:.1f} (shared machine). Produced by `python benchmarks/profile_model.py`."]
    report = "\n".join(header + sections) + "\n"
    print(report)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(report)
    tmp.replace(args.output)


if __name__ == "__main__":
    main()
