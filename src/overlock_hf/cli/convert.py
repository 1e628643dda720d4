"""``overlock-hf convert``: a released checkpoint -> a transformers model folder (:mod:`overlock_hf.conversion`)."""

from __future__ import annotations

import argparse

from ..configuration_overlock import OverLoCKConfig
from ..conversion import convert_checkpoint


def _run_convert(args: argparse.Namespace) -> int:
    folder = convert_checkpoint(
        args.checkpoint, args.output_dir, variant=args.variant, use_ema=args.ema,
        reparameterize=args.reparameterize, overwrite=args.overwrite,
    )
    config = OverLoCKConfig.from_pretrained(folder)
    print(f"converted {args.checkpoint} -> {folder} (variant: {config.variant or 'custom'}, "
          f"reparameterized: {config.reparameterized}, labels: {config.num_labels})")
    if args.push_to_hub:
        from ..hub import push_model

        result = push_model(folder, args.push_to_hub, private=args.private, token=args.token)
        print(f"pushed to {result.url}" + ("" if result.changed else " (no change)"))
    return 0


def add_commands(subparsers) -> None:
    """Add ``convert CHECKPOINT OUTPUT_DIR``."""
    parser = subparsers.add_parser("convert", help="official OverLoCK checkpoint -> transformers folder",
                                   description="Convert a released OverLoCK checkpoint (.pth or .safetensors) into a transformers model folder.")
    parser.add_argument("checkpoint", help="released .pth or .safetensors file")
    parser.add_argument("output_dir", help="folder to create")
    parser.add_argument("--variant", choices=["overlock-xt", "overlock-t", "overlock-s", "overlock-b"],
                        help="insist that the checkpoint is this variant")
    parser.add_argument("--ema", action="store_true", help="convert `state_dict_ema` instead of the model weights")
    parser.add_argument("--reparameterize", action="store_true", help="fold DilatedReparam branches before saving")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    parser.add_argument("--token", help="with --push-to-hub: Hub token (default: the logged-in one)")
    parser.set_defaults(func=_run_convert)
