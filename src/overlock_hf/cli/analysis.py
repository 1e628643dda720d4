"""``overlock-hf cam`` and ``overlock-hf erf``: Grad-CAM figures and effective receptive fields
(:mod:`overlock_hf.analysis.reports`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run_cam(args: argparse.Namespace) -> int:
    from ..analysis.reports import cam_report

    figures = cam_report(args.model, args.inputs, args.output, target=args.target, image_size=args.image_size,
                         batch_size=args.batch_size)
    print(f"wrote {len(figures)} figures, cam_maps.safetensors and cam_maps.json to {args.output}")
    return 0


def _run_erf(args: argparse.Namespace) -> int:
    from ..analysis.reports import erf_report

    if len(args.paths) < 2:
        raise ValueError("erf needs at least one MODEL and the DATA folder")
    *models, data = args.paths
    figures = erf_report(models, data, args.output, num_images=args.num_images, image_size=args.image_size,
                         seed=args.seed, batch_size=args.batch_size, feature=args.feature)
    print(f"wrote {len(figures)} figures, erf_maps.safetensors and erf_area_ratios.json/.md to {args.output}")
    print((Path(args.output) / "erf_area_ratios.md").read_text())
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_commands(subparsers) -> None:
    """Add ``cam`` and ``erf`` to the ``overlock-hf`` command line."""
    cam = subparsers.add_parser(
        "cam",
        help="Grad-CAM of the Overview-Net and the Focus-Net for images (supplement Figure A)",
        description="For each image: input | Overview-Net Grad-CAM (auxiliary head) | Focus-Net Grad-CAM (main "
                    "head), a grid of all images, and the raw maps (cam_maps.safetensors, cam_maps.json).",
    )
    cam.add_argument("model", metavar="MODEL", help="an OverLoCK image-classification folder or Hub id")
    cam.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+", help="images, or folders searched recursively")
    cam.add_argument("--output", required=True, type=Path, metavar="DIR", help="folder for the figures and maps")
    cam.add_argument("--target", default=None, metavar="CLASS",
                     help="class index or name to explain (default: each image's predicted class)")
    cam.add_argument("--image-size", type=_positive, default=None, metavar="N",
                     help="crop size for the model's processor (default: the processor's own)")
    cam.add_argument("--batch-size", type=_positive, default=8, help="images per forward pass (default: 8)")
    cam.set_defaults(func=_run_cam)

    erf = subparsers.add_parser(
        "erf",
        help="effective receptive fields of models over images (supplement Figure B)",
        description="ERF (RepLKNet's measure) of each MODEL over images sampled at random from DATA: a heat map "
                    "per model and all side by side on one colour scale, the raw maps (erf_maps.safetensors) and "
                    "the high-contribution area ratios (erf_area_ratios.md / .json).",
        usage="overlock-hf erf MODEL [MODEL ...] DATA --output DIR [options]",
    )
    erf.add_argument("paths", metavar="MODEL [MODEL ...] DATA", nargs="+",
                     help="model folders or Hub ids (AutoModel: OverLoCK, ConvNeXt, Swin, ...), then DATA: an "
                          "image folder (searched recursively) or a datasets folder saved with save_to_disk")
    erf.add_argument("--output", required=True, type=Path, metavar="DIR", help="folder for the figures and tables")
    erf.add_argument("--num-images", type=_positive, default=300, help="images sampled from DATA (default: 300)")
    erf.add_argument("--image-size", type=_positive, default=224, help="square input size (default: 224)")
    erf.add_argument("--seed", type=int, default=0, help="seed of the random image sample (default: 0)")
    erf.add_argument("--batch-size", type=_positive, default=8, help="images per forward pass (default: 8)")
    erf.add_argument("--feature", default="focus",
                     help="OverLoCK feature map: focus (default), overview, focus16, base, stem; other models use "
                          "their last stage")
    erf.set_defaults(func=_run_erf)
