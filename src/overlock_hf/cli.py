"""The ``overlock-hf`` command line: one sub-command per task, each defined next to the code it runs.

Each module in ``COMMAND_MODULES`` exposes ``add_cli_commands(subparsers)``, which adds its sub-commands
and sets ``func`` (called with the parsed arguments, returning an exit code) on each of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "overlock_hf.conversion",
    "overlock_hf.kernel_builder",
    "overlock_hf.hub",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="overlock-hf", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.add_cli_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        print(f"overlock-hf {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
