"""``overlock-hf evaluate`` and ``overlock-hf robustness``: top-1 / top-5 on the ImageNet benchmarks
(:mod:`overlock_hf.analysis.evaluation`, :mod:`overlock_hf.analysis.robustness`)."""

from __future__ import annotations

import argparse

from ..analysis.labels import BENCHMARKS

SET_FLAGS = {"imagenet": "--imagenet", "imagenet-v2": "--imagenet-v2", "imagenet-a": "--imagenet-a",
             "imagenet-r": "--imagenet-r", "imagenet-sketch": "--imagenet-sketch"}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _crop_pct(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=_positive_int, help="evaluation resolution, e.g. 384 (default: the "
                        "model's image processor, else 224)")
    parser.add_argument("--crop-pct", type=_crop_pct, help="center-crop fraction: resize the shorter side to "
                        "image_size / crop_pct (default: 1.0 from 384 up, else the model's, else 0.875)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader worker processes (default 4)")
    parser.add_argument("--limit", type=_positive_int, help="evaluate N images evenly spread over the set")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available; under "
                        "`accelerate launch`, each process's device)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument("--skip-corrupt", action="store_true", help="count and skip images that cannot be "
                        "decoded (default: stop and name the file)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub repo")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _print_result(result: dict) -> None:
    print(f"{result['model']} on {result['benchmark']} ({result['num_images']} images at {result['image_size']}px): "
          f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%")
    print(f"  preprocessing: {result['preprocessing']}")
    if result["logit_mask"]:
        print(f"  logits restricted to the {result['logit_mask']}")
    if result["num_corrupt"]:
        print(f"  skipped {result['num_corrupt']} corrupt images:")
        for line in result["corrupt_files"]:
            print(f"    {line}")


def _run_evaluate(args: argparse.Namespace) -> int:
    from ..analysis.evaluation import evaluate
    from ..analysis.sharding import process_info

    result = evaluate(
        args.model, args.data, args.benchmark, image_size=args.image_size, crop_pct=args.crop_pct,
        batch_size=args.batch_size, num_workers=args.num_workers, limit=args.limit, device=args.device,
        output=args.output, split=args.split, skip_corrupt=args.skip_corrupt, bf16=args.bf16,
        trust_remote_code=args.trust_remote_code, progress=not args.no_progress,
    )
    if process_info(args.device).is_main:
        _print_result(result)
        if args.output:
            print(f"wrote {args.output}")
    return 0


def _run_robustness(args: argparse.Namespace) -> int:
    from ..analysis.robustness import robustness
    from ..analysis.sharding import process_info

    sets = {name: getattr(args, name.replace("-", "_")) for name in SET_FLAGS}
    sets = {name: data for name, data in sets.items() if data}
    if not sets:
        raise ValueError(f"give at least one data set: {', '.join(SET_FLAGS.values())}")
    document = robustness(
        args.models, sets, image_size=args.image_size, crop_pct=args.crop_pct, batch_size=args.batch_size,
        num_workers=args.num_workers, limit=args.limit, device=args.device, output=args.output,
        markdown=args.markdown, skip_corrupt=args.skip_corrupt, bf16=args.bf16,
        trust_remote_code=args.trust_remote_code, progress=not args.no_progress,
    )
    if process_info(args.device).is_main:
        print(document["markdown"], end="")
    return 0


def add_commands(subparsers) -> None:
    """Add ``evaluate MODEL DATA --benchmark NAME`` and ``robustness MODEL [MODEL...] --imagenet DIR ...``."""
    parser = subparsers.add_parser(
        "evaluate", help="top-1 / top-5 of a model on ImageNet, -V2, -A, -R, -Sketch or a custom set",
        description="Evaluate a transformers image-classification model (folder or Hub id) on an image folder "
                    "(ROOT/CLASS/*.jpg) or a `datasets` data set (Hub id or local folder, image + label columns). "
                    "Runs unchanged under `accelerate launch` (one shard per process).")
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument("data", help="image folder, `datasets` folder or Hub dataset id")
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS,
                        help="label convention: imagenet / imagenet-sketch (wnid folders), imagenet-v2 (folders "
                             "0..999), imagenet-a / imagenet-r (200 wnids, masked logits), folder (config.label2id)")
    parser.add_argument("--split", help="dataset split (default: the only one, else validation/val/test/train)")
    parser.add_argument("--output", metavar="FILE.json", help="write the result as JSON (atomically) to this file")
    _add_run_options(parser)
    parser.set_defaults(func=_run_evaluate)

    parser = subparsers.add_parser(
        "robustness", help="Table H: models x (ImageNet-1K, V2, A, R, Sketch) top-1, params and GFLOPs",
        description="Evaluate each model on each given set and print a markdown table in the shape of the "
                    "OverLoCK supplement's Table H (models on the rows).")
    parser.add_argument("models", nargs="+", metavar="MODEL", help="model folders or Hub ids")
    for name, flag in SET_FLAGS.items():
        parser.add_argument(flag, dest=name.replace("-", "_"), metavar="DATA", help=f"{name} image folder or dataset")
    parser.add_argument("--output", metavar="FILE.json", help="write every result as JSON (atomically) to this file")
    parser.add_argument("--markdown", metavar="FILE.md", help="write the table (markdown) to this file")
    _add_run_options(parser)
    parser.set_defaults(func=_run_robustness)
