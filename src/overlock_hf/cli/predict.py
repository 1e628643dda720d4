"""``overlock-hf predict MODEL IMAGE...``: top-k labels and scores per image (:mod:`overlock_hf.prediction`)."""

from __future__ import annotations

import argparse


def _run_predict(args: argparse.Namespace) -> int:
    from ..analysis.output import check_output_path, write_json_atomic
    from ..prediction import predict

    check_output_path(args.output)  # before the model is loaded
    predictions = predict(args.model, args.images, top_k=args.top_k, batch_size=args.batch_size,
                          device=args.device, trust_remote_code=args.trust_remote_code)
    for prediction in predictions:
        ranked = ", ".join(f"{label} ({score:.3f})" for label, score in zip(prediction.labels, prediction.scores))
        print(f"{prediction.path}: {ranked}")
    if args.output:
        write_json_atomic(args.output, {"model": args.model, "predictions": [
            {"image": str(p.path), "labels": p.labels, "indices": p.indices, "scores": p.scores} for p in predictions
        ]})
    return 0


def add_commands(subparsers) -> None:
    """Add ``predict MODEL IMAGE...``."""
    parser = subparsers.add_parser(
        "predict", help="top-k labels and scores of a model on images",
        description="Classify image files (or every image in the given folders) with a model folder or Hub id, "
        "using the model's own image processor; print the top-k labels with their probabilities.",
    )
    parser.add_argument("model", help="model folder or Hub id (any transformers image-classification model)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    parser.add_argument("--top-k", type=int, default=5, help="classes per image (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    parser.add_argument("--output", metavar="FILE.json", help="also write the predictions as JSON")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a Hub model's own code")
    parser.set_defaults(func=_run_predict)
