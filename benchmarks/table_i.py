"""Table I of the OverLoCK supplement on this machine: throughput of OverLoCK XT/T/S/B and the transformers
peers, beside the paper's L40S figures as ratios to ConvNeXt-T, and the speed-accuracy scatter.

    python benchmarks/table_i.py measure --batch-size 2 --threads 2 --warmup 1 --runs 5     # this CPU
    python benchmarks/table_i.py measure --device cuda --batch-size 128                    # the paper's setting
    python benchmarks/table_i.py report [--device cpu]

`measure` profiles one model at a time (the library behind `overlock-hf profile --throughput`) and writes
`benchmarks/table_i_<device>/<model>.json` after each, so a stopped run keeps what it measured; `report` merges
them into `RESULTS_table_i[_<device>].md` and `table_i_speed_accuracy[_<device>].png`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from overlock_hf.analysis import paper_figures, profile_model, published_top1, speed_accuracy_plot
from overlock_hf.analysis.benchmark import CONVENTIONS, write_atomic, write_json

HERE = Path(__file__).resolve().parent
ORDER = ["overlock-xt", "overlock-t", "overlock-s", "overlock-b", "convnext-t", "convnext-s", "convnext-b",
         "swin-t", "swin-s", "swin-b", "focalnet-t", "focalnet-s", "focalnet-b"]
BASELINE = "convnext-t"


def _folder(device: str) -> Path:
    return HERE / f"table_i_{device.split(':')[0]}"


def measure(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "load_average_at_start": round(os.getloadavg()[0], 1)}
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    for model in args.models:
        row = profile_model(model, 224, batch_size=args.batch_size, throughput=True, device=args.device,
                            warmup=args.warmup, runs=args.runs)
        write_json(_folder(args.device) / f"{model}.json",
                   {"conventions": CONVENTIONS, "machine": machine, "rows": [row.as_dict()]})
        print(f"{model}: {row.measured['images_per_s']:.2f} images/s", flush=True)


def _ratio(value, baseline) -> str:
    return "n/a" if value is None or not baseline else f"{value / baseline:.2f}"


def report_markdown(rows: list[dict], machine: dict, device: str) -> str:
    paper = paper_figures()["throughput_l40s"]
    ours = {row["model"]: row["images_per_s"] for row in rows}
    theirs = paper["images_per_s"]
    first = rows[0]
    lines = [
        "# Table I (OverLoCK supplement): throughput on this machine beside the paper's", "",
        f"Machine: {machine['processor']}, {machine['platform']}, torch {machine['torch']}"
        f"{', GPU ' + machine['gpu'] if 'gpu' in machine else ''}; device `{device}`, {machine['threads']} torch "
        f"threads, batch {first['batch_size']} at 224x224, {first['dtype']}, eval mode, PyTorch ContMix (no fused "
        f"kernel); {first['timed_runs']} timed passes after warm-up, with synchronisation; median and quartiles.",
        "", "The CPU is shared with other jobs (load average "
        f"{machine.get('load_average_at_start', '?')} on its cores when the last model started): absolute figures "
        "are low and noisy, an inversion between neighbouring sizes is noise; read the ratios as rough.", "", f"Paper: one L40S GPU, batch {paper['batch_size']} ({paper['note']}). {CONVENTIONS}", "",
        "| model | params (M) | GMACs | images/s (median) | q1-q3 | ours : ConvNeXt-T | paper L40S images/s "
        "| paper : ConvNeXt-T | ours / paper ratio | published top-1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        model = row["model"]
        ratio_paper = theirs[model] / theirs[BASELINE] if model in theirs else None
        ratio_ours = row["images_per_s"] / ours[BASELINE] if BASELINE in ours else None
        relative = "n/a" if ratio_ours is None or ratio_paper is None else f"{ratio_ours / ratio_paper:.2f}"
        top1 = published_top1(model)
        lines.append(
            f"| {model} | {row['params_m']:.2f} | {row['gmacs']:.2f} | {row['images_per_s']:.2f} | "
            f"{row['images_per_s_q1']:.2f}-{row['images_per_s_q3']:.2f} | "
            f"{_ratio(row['images_per_s'], ours.get(BASELINE))} | {theirs.get(model, 'n/a')} | "
            f"{'n/a' if ratio_paper is None else f'{ratio_paper:.2f}'} | {relative} | "
            f"{'n/a' if top1 is None else top1} |")
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace) -> None:
    rows, machine = [], {}
    for model in ORDER:
        path = _folder(args.device) / f"{model}.json"
        if path.is_file():
            payload = json.loads(path.read_text())
            rows.extend(payload["rows"])
            machine = payload["machine"]
    if not rows:
        raise SystemExit(f"no measurements in {_folder(args.device)}; run `measure` first")
    suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
    write_atomic(HERE / f"RESULTS_table_i{suffix}.md", report_markdown(rows, machine, args.device))
    speed_accuracy_plot(rows, HERE / f"table_i_speed_accuracy{suffix}.png",
                        f"{args.device}, batch {rows[0]['batch_size']}: measured throughput vs published top-1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("measure", help="measure each model, one JSON per model")
    run.add_argument("--models", nargs="+", default=ORDER)
    run.add_argument("--device", default="cpu")
    run.add_argument("--batch-size", type=int, default=2)
    run.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    run.add_argument("--warmup", type=int, default=1)
    run.add_argument("--runs", type=int, default=5)
    run.set_defaults(func=measure)
    show = commands.add_parser("report", help="merge the measurements into the Markdown table and the PNG")
    show.add_argument("--device", default="cpu")
    show.set_defaults(func=report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
