"""``overlock-hf push`` and ``push-kernel``: publish a model folder or a kernel build (:mod:`overlock_hf.hub`)."""

from __future__ import annotations

import argparse

from ..hub import PushResult, push_kernel, push_model


def _report(result: PushResult) -> int:
    state = "pushed, new commit" if result.changed else "already up to date, no new commit"
    print(f"{result.url} ({result.revision}): {state} {result.commit_oid}")
    return 0


def _run_push(args: argparse.Namespace) -> int:
    return _report(push_model(
        args.folder, args.repo_id, revision=args.revision, private=args.private,
        commit_message=args.commit_message, token=args.token,
    ))


def _run_push_kernel(args: argparse.Namespace) -> int:
    return _report(push_kernel(
        args.build_dir, args.repo_id, version=args.version, revision=args.revision, private=args.private,
        commit_message=args.commit_message, token=args.token,
    ))


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--private", action="store_true", help="create the repo as private (if it does not exist)")
    parser.add_argument("--commit-message", default=None, help="message of the commit")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")


def add_commands(subparsers) -> None:
    """Add ``push FOLDER REPO_ID`` and ``push-kernel BUILD_DIR REPO_ID``; each sets ``func(args) -> exit code``."""
    push = subparsers.add_parser(
        "push", help="upload a converted model folder to a Hub model repo",
        description="Upload a converted model folder (weights, config with auto_map, code, processor config, "
        "model card) to a Hub model repo, creating it if needed. Unchanged files are skipped.",
    )
    push.add_argument("folder", help="the converted model folder")
    push.add_argument("repo_id", help="namespace/name of the model repo")
    push.add_argument("--revision", default=None, help="branch to commit to (default: main; created if missing)")
    _add_common_options(push)
    push.set_defaults(func=_run_push)

    push_kernel_parser = subparsers.add_parser(
        "push-kernel", help="upload a ContMix kernel build to a Hub kernel repo",
        description="Upload the build/<variant>/ folders of a kernel build (overlock-hf build-kernel) to a Hub "
        "kernel repo and point its v<version> branch at them.",
    )
    push_kernel_parser.add_argument("build_dir", help="the folder holding build/<variant>/")
    push_kernel_parser.add_argument("repo_id", help="namespace/name of the kernel repo")
    push_kernel_parser.add_argument(
        "--version", type=int, default=1, help="kernel version: branch v<version> (default 1)"
    )
    push_kernel_parser.add_argument(
        "--revision", default=None, help="branch that receives the build before v<version> (default: main)"
    )
    _add_common_options(push_kernel_parser)
    push_kernel_parser.set_defaults(func=_run_push_kernel)
