"""Result files, written atomically: a failed or interrupted run leaves no partial file behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .labels import EvaluationError


def check_output_path(path: str | Path | None, flag: str = "--output") -> Path | None:
    """Validate an output file before a long run: not a folder, parent creatable and writable."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise EvaluationError(f"{flag} {path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EvaluationError(f"{flag} {path}: cannot create its folder ({error})") from error
    if not os.access(path.parent, os.W_OK):
        raise EvaluationError(f"{flag} {path}: folder {path.parent} is not writable")
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, document: dict) -> Path:
    """`write_text_atomic` of `document` as indented JSON."""
    return write_text_atomic(path, json.dumps(document, indent=2) + "\n")
