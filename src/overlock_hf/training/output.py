"""The upload of a run's model folder with `--push_to_hub` (the folder itself is written by
:func:`overlock_hf.export.write_model_folder`).

The upload is checked before training (`check_push_target`: endpoint reachable, token valid and allowed to
write), so a run does not end in an authentication error after hours of training; if the upload still fails,
`push_model_folder` raises an error that gives the exact `overlock-hf push` command finishing the job.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..data import FinetuningError

__all__ = ["check_push_target", "push_command", "push_model_folder"]


def push_command(model_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """The `overlock-hf push` command line that uploads `model_dir` to `repo_id`."""
    words = ["overlock-hf", "push", str(model_dir), repo_id] + (["--private"] if private else [])
    return shlex.join(words)


def check_push_target(repo_id: str) -> str:
    """Before training: check that the Hub endpoint answers and the token may write; returns the user name.
    Raises `FinetuningError` saying what is wrong (no token, rejected token, unreachable endpoint)."""
    from ..hub import HubPublishError, check_hub_login

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise FinetuningError(f"--push_to_hub {repo_id!r}: expected a repo id of the form namespace/name")
    try:
        return check_hub_login()
    except HubPublishError as error:
        raise FinetuningError(f"--push_to_hub {repo_id}: {error}") from error


def push_model_folder(model_dir: Path, repo_id: str, private: bool = False) -> str:
    """Upload `model_dir`; returns a one-line report. A failed upload raises `FinetuningError` whose message
    holds the `overlock-hf push` command that finishes the job (the folder is complete and stays)."""
    from ..hub import HubPublishError, push_model

    try:
        result = push_model(model_dir, repo_id, private=private)
    except HubPublishError as error:
        raise FinetuningError(
            f"{error}\nThe trained model is saved in {model_dir}; upload it with:\n    "
            f"{push_command(model_dir, repo_id, private)}"
        ) from error
    return f"pushed to {result.url} ({result.revision}, commit {result.commit_oid})"
