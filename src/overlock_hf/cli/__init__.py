"""The ``overlock-hf`` command line: the one owner of every sub-command's arguments.

Each module named in ``COMMAND_MODULES`` (``overlock_hf.cli.<name>``) defines the arguments of its sub-commands
in ``add_commands(subparsers)`` and sets ``func`` (called with the parsed arguments, returning an exit code) on
each; the work itself lives in the library modules those functions call.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

COMMAND_MODULES = (
    "convert",
    "kernel",
    "hub",
    "evaluate",
    "analysis",
    "profile",
    "predict",
)

DESCRIPTION = (
    "OverLoCK for Hugging Face transformers: convert released checkpoints, publish models and the ContMix "
    "kernel to the Hub. Run `overlock-hf COMMAND --help` for the options of a command."
)


def _package_version() -> str:
    try:
        return version("overlock-hf")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The full ``overlock-hf`` parser with every sub-command of ``COMMAND_MODULES``."""
    parser = argparse.ArgumentParser(prog="overlock-hf", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``overlock-hf``: parse ``argv``, run the command, map user errors to exit code 1."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError) as error:
        print(f"overlock-hf {args.command}: error: {error}", file=sys.stderr)
        return 1
