"""``overlock-hf convert`` (a released checkpoint -> a transformers model folder) and ``overlock-hf
reparameterize`` (a plain model folder -> the folded one); the work is in :mod:`overlock_hf.conversion`."""

from __future__ import annotations

import argparse

from ..configuration_overlock import VARIANTS, OverLoCKConfig, normalize_variant_name
from ..conversion import convert_checkpoint, reparameterize_folder


def _variant(name: str) -> str:
    try:
        return normalize_variant_name(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _describe(folder) -> str:
    config = OverLoCKConfig.from_pretrained(folder)
    return (f"variant: {config.variant or 'custom'}, reparameterized: {config.reparameterized}, "
            f"labels: {config.num_labels}")


def _run_convert(args: argparse.Namespace) -> int:
    folder = convert_checkpoint(
        args.checkpoint, args.output_dir, variant=args.variant, use_ema=args.ema,
        reparameterize=args.reparameterize, overwrite=args.overwrite, image_size=args.image_size,
        crop_pct=args.crop_pct,
    )
    print(f"converted {args.checkpoint} -> {folder} ({_describe(folder)})")
    if args.push_to_hub:
        from ..hub import push_model

        result = push_model(folder, args.push_to_hub, private=args.private, token=args.token)
        print(f"pushed to {result.url}" + ("" if result.changed else " (no change)"))
    return 0


def _run_reparameterize(args: argparse.Namespace) -> int:
    folder = reparameterize_folder(args.folder, args.output_dir, overwrite=args.overwrite)
    print(f"re-parameterized {args.folder} -> {folder} ({_describe(folder)})")
    return 0


def add_commands(subparsers) -> None:
    """Add ``convert CHECKPOINT OUTPUT_DIR`` and ``reparameterize FOLDER OUTPUT_DIR``."""
    parser = subparsers.add_parser("convert", help="official OverLoCK checkpoint -> transformers folder",
                                   description="Convert a released OverLoCK checkpoint (.pth or .safetensors) into a "
                                   "transformers model folder, verified before it is moved into place.")
    parser.add_argument("checkpoint", help="released .pth or .safetensors file")
    parser.add_argument("output_dir", help="folder to create")
    parser.add_argument("--variant", type=_variant, metavar="VARIANT",
                        help=f"insist that the checkpoint is this variant ({', '.join(VARIANTS)}; `xt` ... also work)")
    parser.add_argument("--ema", action="store_true", help="convert `state_dict_ema` instead of the model weights")
    parser.add_argument("--reparameterize", action="store_true", help="fold DilatedReparam branches before saving")
    parser.add_argument("--image-size", type=int, default=224, metavar="N",
                        help="evaluation crop of preprocessor_config.json (default: %(default)s; 384 for a model "
                        "fine-tuned at 384)")
    parser.add_argument("--crop-pct", type=float, default=None, metavar="F",
                        help="evaluation crop fraction (default: the variant's at 224, 1.0 from 384 up)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing model folder (refused if it holds files the writer does not write)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    parser.add_argument("--token", help="with --push-to-hub: Hub token (default: the logged-in one)")
    parser.set_defaults(func=_run_convert)

    parser = subparsers.add_parser("reparameterize", help="plain model folder -> re-parameterized (folded) folder",
                                   description="Fold every DilatedReparam branch of a plain OverLoCK model folder into "
                                   "one depthwise convolution (faster inference, same outputs) and write the result "
                                   "as a new, verified model folder.")
    parser.add_argument("folder", help="a plain (not re-parameterized) model folder, e.g. from `overlock-hf convert`")
    parser.add_argument("output_dir", help="folder to create")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing model folder (refused if it holds files the writer does not write)")
    parser.set_defaults(func=_run_reparameterize)
