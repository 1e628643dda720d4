"""``overlock-hf profile``: parameters, MACs and throughput of models (:mod:`overlock_hf.analysis`)."""

from __future__ import annotations

import argparse
import platform

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _machine(args: argparse.Namespace) -> dict:
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return machine


def _run_profile(args: argparse.Namespace) -> int:
    from ..analysis.ablations import ablation_rows, ablations_to_markdown
    from ..analysis.benchmark import CONVENTIONS, profile_models, rows_to_markdown, write_atomic, write_json

    if not args.ablations and not args.models:
        raise ValueError("give at least one MODEL (a variant, ablation preset, peer, folder or Hub id) or --ablations")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {args.device}: no CUDA device is available")
    if args.ablations:
        rows = ablation_rows()
        markdown = ablations_to_markdown(rows)
    else:
        rows = profile_models(args.models, args.image_size, batch_size=args.batch_size, throughput=args.throughput,
                              device=args.device, dtype=DTYPES[args.dtype])
        markdown = rows_to_markdown(rows)
    if args.output:
        write_json(args.output, {"conventions": CONVENTIONS, "machine": _machine(args), "rows": rows})
    if args.markdown:
        write_atomic(args.markdown, markdown)
    print(markdown, end="")
    return 0


def add_commands(subparsers) -> None:
    """Add ``profile MODEL... | --ablations`` to the ``overlock-hf`` command line."""
    parser = subparsers.add_parser(
        "profile",
        help="parameters, MACs and throughput of models (variants, ablation presets, peers, folders, Hub ids)",
        description="Parameters (re-parameterized, without the auxiliary head) and multiply-accumulates per image "
                    "of each MODEL at each size, and with --throughput images/s (warm-up, timed runs, median and "
                    "quartiles) and peak memory. --ablations: every ablation preset beside the paper's figures.",
    )
    parser.add_argument("models", metavar="MODEL", nargs="*",
                        help="overlock-xt/-t/-s/-b, an ablation preset (e.g. kernels-9-9-7), a peer (convnext-t, "
                             "swin-s, focalnet-b ...), a model folder or a Hub id")
    parser.add_argument("--image-size", type=int, nargs="+", default=[224], metavar="N",
                        help="input side(s) in pixels (default: 224)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N",
                        help="images per timed forward pass with --throughput (default: 32)")
    parser.add_argument("--throughput", action="store_true", help="measure images/s and peak memory")
    parser.add_argument("--device", default="cpu", help="device for --throughput: cpu, cuda, cuda:1 ... (default: cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype for --throughput")
    parser.add_argument("--ablations", action="store_true",
                        help="profile OverLoCK-XT and every ablation preset at 224 beside the paper's figures")
    parser.add_argument("--output", metavar="FILE.json", help="write the rows (and the machine) as JSON")
    parser.add_argument("--markdown", metavar="FILE.md", help="write the table as Markdown")
    parser.set_defaults(func=_run_profile)
