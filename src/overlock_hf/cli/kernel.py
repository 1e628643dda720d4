"""``overlock-hf build-kernel``: compile the fused ContMix kernel (:mod:`overlock_hf.kernel_builder`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..kernel_builder import DEFAULT_SOURCE_DIR, build_kernel


def _run_build(args: argparse.Namespace) -> int:
    backends = None if args.backend == "all" else [args.backend]
    for variant in build_kernel(args.output_dir, args.source, backends, force=args.force, verbose=args.verbose):
        state = "built" if variant.rebuilt else "up to date"
        print(f"{variant.path} ({variant.kernel_id}): {state}")
    return 0


def add_commands(subparsers) -> None:
    """Add ``build-kernel OUTPUT_DIR`` to the ``overlock-hf`` command line."""
    parser = subparsers.add_parser(
        "build-kernel",
        help="build the fused ContMix kernel into a kernels-hub folder (no nix needed)",
        description="Compile the ContMix kernel source tree into a kernels-hub repository folder (build/<variant>/).",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", type=Path, help="kernel repository folder to fill")
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE_DIR, help=f"kernel source tree (default: {DEFAULT_SOURCE_DIR})"
    )
    parser.add_argument(
        "--backend", choices=["all", "cpu", "cuda"], default="all", help="variant(s) to build (default: all possible)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the sources are unchanged")
    parser.add_argument("--verbose", action="store_true", help="show the compiler output")
    parser.set_defaults(func=_run_build)
