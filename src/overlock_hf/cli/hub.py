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


def _add_push_parser(subparsers, name: str, repo: str, what: str, description: str, source: tuple[str, str], run,
                     extra: list[tuple[str, dict]]) -> None:
    """One upload command: ``NAME SOURCE REPO_ID`` with ``extra`` options and the options every upload takes."""
    parser = subparsers.add_parser(name, help=f"upload {what}", description=description)
    parser.add_argument(source[0], help=source[1])
    parser.add_argument("repo_id", help=f"namespace/name of the {repo} repo")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    parser.add_argument("--private", action="store_true", help="create the repo as private (if it does not exist)")
    parser.add_argument("--commit-message", default=None, help="message of the commit")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    parser.set_defaults(func=run)


def add_commands(subparsers) -> None:
    """Add ``push FOLDER REPO_ID`` and ``push-kernel BUILD_DIR REPO_ID``; each sets ``func(args) -> exit code``."""
    _add_push_parser(
        subparsers, "push", "model", "a converted model folder to a Hub model repo",
        "Upload a converted model folder (weights, config with auto_map, code, processor config, model card) to a "
        "Hub model repo, creating it if needed. Unchanged files are skipped.",
        ("folder", "the converted model folder"), _run_push,
        [("--revision", dict(default=None, help="branch to commit to (default: main; created if missing)"))],
    )
    _add_push_parser(
        subparsers, "push-kernel", "kernel", "a ContMix kernel build to a Hub kernel repo",
        "Upload the build/<variant>/ folders of a kernel build (overlock-hf build-kernel) to a Hub kernel repo and "
        "point its v<version> branch at them.",
        ("build_dir", "the folder holding build/<variant>/"), _run_push_kernel,
        [("--version", dict(type=int, default=1, help="kernel version: branch v<version> (default 1)")),
         ("--revision", dict(default=None, help="branch that receives the build before v<version> (default: main)"))],
    )
