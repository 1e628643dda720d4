"""Publishing to the Hugging Face Hub: converted model folders and ContMix kernel builds.

* :func:`push_model` uploads a folder written by the converter / ``save_pretrained`` (``model.safetensors``,
  ``config.json`` with the full ``auto_map``, the model code, ``preprocessor_config.json``, the ``README.md``
  model card) to a model repo. The card's ``<org>/...`` placeholders (a card rendered before the repo was
  known) are replaced by the repo id in the uploaded copy; the local card is left as it is.
* :func:`push_kernel` uploads the ``build/<variant>/`` folders of a kernel build to a kernel repo and points
  the ``v<version>`` branch (what ``kernels.get_kernel(repo_id, version=N)`` loads) at them.

Both check the local folder before touching the network, create the repo if needed, and only ever *read* local
files. Unchanged files are skipped, so pushing the same content again makes no commit. Any Hub or network
failure raises :class:`HubPublishError` saying which step failed; a retry after fixing the cause continues
where the remote side stands.

The ``overlock-hf push`` and ``push-kernel`` commands (:mod:`overlock_hf.cli.hub`) call these functions.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .export import check_model_folder

__all__ = [
    "HubPublishError", "PushResult", "check_hub_login", "check_model_folder", "kernel_variants", "push_kernel",
    "push_model",
]

IGNORE_PATTERNS = [
    "*.pyc", "__pycache__", "*/__pycache__/*", "__pycache__/*", ".DS_Store", "*/.DS_Store",
    ".git", ".git/*", "*/.git/*", ".cache/*", "*/.cache/*",
]


class HubPublishError(RuntimeError):
    """A push to the Hub failed (network, authentication, permission or server error).

    Raised after the local files were only read: nothing local was changed, and running the push again is safe.
    """


@dataclass(frozen=True)
class PushResult:
    """Outcome of a push: where it went, the commit the revision now points at, and whether it made a new one."""

    repo_id: str
    repo_type: str
    revision: str
    commit_oid: str
    url: str
    changed: bool


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the Hub request failed": the client's HTTP errors (status and transport), a missing
    token and offline mode. Deliberately not every ``OSError`` / ``ValueError``: a bug or a bad argument in this
    package must surface as itself, not as "check the endpoint and token"."""
    from huggingface_hub import errors as hub_errors

    found: list[type[BaseException]] = [hub_errors.HfHubHTTPError, hub_errors.LocalTokenNotFoundError]
    for name in ("HTTPError", "OfflineModeIsEnabled"):  # huggingface_hub 1.x re-exports httpx's HTTPError
        if isinstance(getattr(hub_errors, name, None), type):
            found.append(getattr(hub_errors, name))
    # whichever HTTP client huggingface_hub loaded: httpx / httpx2 (1.x), requests (0.x)
    for module_name, attribute in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        module = sys.modules.get(module_name)
        if module is not None and isinstance(getattr(module, attribute, None), type):
            found.append(getattr(module, attribute))
    return tuple(found)


class _Step:
    """Context manager naming one remote step; turns a Hub failure inside it into a :class:`HubPublishError`."""

    def __init__(self, what: str, source: Path, repo_id: str):
        self.what, self.source, self.repo_id = what, source, repo_id

    def __enter__(self) -> "_Step":
        return self

    def __exit__(self, exc_type, error, traceback) -> bool:
        cause = _hub_cause(error)
        if cause is None or isinstance(error, HubPublishError):
            return False
        detail = f"{type(error).__name__}: {_first_lines(error)}"
        if cause is not error:  # e.g. huggingface_hub's "Error while uploading ..." around the HTTP error
            detail += f"\ncaused by {type(cause).__name__}: {_first_lines(cause)}"
        raise HubPublishError(
            f"pushing {self.source} to {self.repo_id} failed while {self.what}: {detail}\n"
            "Nothing local was changed. Fix the cause (endpoint, token, permissions) and run the push again; "
            "files already on the Hub are skipped."
        ) from error


def _hub_cause(error: BaseException | None) -> BaseException | None:
    """The first exception in ``error``'s cause chain that is a Hub / HTTP failure, or None."""
    errors, seen = _hub_errors(), set()
    while error is not None and id(error) not in seen:
        if isinstance(error, errors):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _first_lines(error: BaseException, limit: int = 6) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return "\n".join(lines[:limit]) or repr(error)


def _api(token: str | None, endpoint: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def check_hub_login(token: str | None = None, endpoint: str | None = None) -> str:
    """Ask the Hub who the token belongs to (one request, nothing written); returns the user name.

    Raises :class:`HubPublishError` when the endpoint does not answer, there is no token, the Hub rejects it,
    or it is a read-only token. Used before long jobs that push at their end (``--push_to_hub``).
    """
    api = _api(token, endpoint)
    try:
        info = api.whoami()
    except _hub_errors() as error:
        raise HubPublishError(
            f"cannot log in to the Hub at {api.endpoint}: {type(error).__name__}: {_first_lines(error, 2)}\n"
            "Check the endpoint (HF_ENDPOINT, the network) and the token (HF_TOKEN or `hf auth login`)."
        ) from error
    role = (info.get("auth") or {}).get("accessToken", {}).get("role")
    if role == "read":
        raise HubPublishError(f"the token of {info.get('name')} at {api.endpoint} is read-only; use a write token")
    return str(info.get("name"))


def _ensure_branch(api, repo_id: str, repo_type: str, branch: str, source: Path) -> None:
    if branch != "main":
        with _Step(f"creating branch {branch}", source, repo_id):
            api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)


def _head(api, folder: Path, repo_id: str, repo_type: str, revision: str) -> str:
    with _Step(f"reading the current state of {revision}", folder, repo_id):
        return api.repo_info(repo_id, repo_type=repo_type, revision=revision).sha


def _upload(
    api, folder: Path, repo_id: str, repo_type: str, revision: str, commit_message: str, **patterns
) -> tuple[str, bool]:
    """``upload_folder`` to ``revision``; returns ``(head commit, whether a new commit was made)``."""
    head = _head(api, folder, repo_id, repo_type, revision)
    with _Step(f"uploading the files to {revision}", folder, repo_id):
        info = api.upload_folder(
            folder_path=folder, repo_id=repo_id, repo_type=repo_type, revision=revision,
            commit_message=commit_message, **patterns,
        )
    return info.oid, info.oid != head


def _model_operations(folder: Path, repo_id: str) -> list:
    """One ``CommitOperationAdd`` per file of ``folder`` (minus caches); README.md with its placeholders filled."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.utils import filter_repo_objects

    from .model_card import set_card_repo_id

    paths = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    operations = []
    for path in filter_repo_objects(paths, ignore_patterns=IGNORE_PATTERNS):
        if path == "README.md":
            card = set_card_repo_id((folder / path).read_text(encoding="utf-8"), repo_id)
            operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=card.encode("utf-8")))
        else:
            operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(folder / path)))
    return operations


def push_model(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> PushResult:
    """Upload a converted model folder to the model repo ``repo_id`` (created if needed).

    Args:
        folder: the folder (checked with :func:`check_model_folder`).
        repo_id: ``"namespace/name"``.
        revision: branch to commit to (created from ``main`` if missing); ``main`` by default.
        private: visibility of a newly created repo (an existing repo keeps its visibility).
        commit_message: defaults to ``"Upload <folder name>"``.
        token: Hub token; the locally saved one (or ``HF_TOKEN``) by default.
        endpoint: Hub URL; ``HF_ENDPOINT`` (or huggingface.co) by default.

    Returns a :class:`PushResult`; ``changed`` is False when the remote already held the same files (no commit
    is made then). Raises :class:`HubPublishError` on any Hub failure, local files untouched.
    """
    folder = check_model_folder(folder)
    operations = _model_operations(folder, repo_id)  # hashes every file: all local work before the first request
    revision = revision or "main"
    api = _api(token, endpoint)
    with _Step("creating the repository", folder, repo_id):
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    _ensure_branch(api, repo_id, "model", revision, folder)
    head = _head(api, folder, repo_id, "model", revision)
    with _Step(f"uploading the files to {revision}", folder, repo_id):
        # create_commit drops files whose remote hash is unchanged and makes no commit when nothing is left
        info = api.create_commit(
            repo_id, operations, commit_message=commit_message or f"Upload {folder.name}", repo_type="model",
            revision=revision,
        )
    return PushResult(repo_id, "model", revision, info.oid, str(url), info.oid != head)


def kernel_variants(build_dir: str | Path) -> list[str]:
    """The variant folders (``build/<variant>/``) of a kernel build, checked to be loadable kernel packages.

    Each needs ``__init__.py`` and a ``metadata.json`` with ``id`` and ``name`` (what ``kernels`` reads).
    Raises ``FileNotFoundError`` / ``ValueError`` naming the problem.
    """
    build = Path(build_dir) / "build"
    if not build.is_dir():
        raise FileNotFoundError(
            f"no build/ folder in {build_dir} (build one with `overlock-hf build-kernel {build_dir}`)"
        )
    variants = sorted(
        entry.name for entry in build.iterdir() if entry.is_dir() and not entry.name.startswith((".", "__"))
    )
    if not variants:
        raise FileNotFoundError(f"{build} holds no variant folders")
    for variant in variants:
        if not variant.startswith("torch"):
            raise ValueError(
                f"{build / variant}: not a kernel variant name (expected torch<version>-... or torch-<kind>)"
            )
        for required in ("__init__.py", "metadata.json"):
            if not (build / variant / required).is_file():
                raise FileNotFoundError(f"{build / variant} lacks {required}")
        try:
            metadata = json.loads((build / variant / "metadata.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{build / variant / 'metadata.json'} is not valid JSON: {error}") from error
        absent = [key for key in ("id", "name") if key not in metadata]
        if absent:
            raise ValueError(f"{build / variant / 'metadata.json'} lacks {', '.join(absent)}")
    return variants


def push_kernel(
    build_dir: str | Path, repo_id: str, *, version: int = 1, revision: str | None = None, private: bool = False,
    commit_message: str | None = None, token: str | None = None, endpoint: str | None = None,
) -> PushResult:
    """Upload the ``build/<variant>/`` folders of ``build_dir`` to the kernel repo ``repo_id`` as version ``version``.

    The variants go to ``revision`` (default ``main``; each pushed variant folder is replaced as a whole, other
    variants already there stay, so CPU and CUDA builds made on different machines can be pushed one after the
    other), then to the ``v<version>`` branch: created at that new commit if missing, else brought to the same
    files. Other arguments as in :func:`push_model`. Returns the :class:`PushResult` of the ``v<version>``
    branch; ``changed`` is True when either branch moved.
    """
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    build_dir = Path(build_dir)
    variants = kernel_variants(build_dir)
    branch = f"v{version}"
    message = commit_message or f"Upload kernel build v{version}: {', '.join(variants)}"
    patterns = dict(
        allow_patterns=[f"build/{variant}/*" for variant in variants],
        ignore_patterns=list(IGNORE_PATTERNS),
        delete_patterns=[f"build/{variant}/*" for variant in variants],
    )
    api = _api(token, endpoint)
    with _Step("creating the repository", build_dir, repo_id):
        url = api.create_repo(repo_id, repo_type="kernel", private=private, exist_ok=True)
    revision = revision or "main"
    if revision == branch:
        raise ValueError(f"revision must differ from the version branch {branch}")
    _ensure_branch(api, repo_id, "kernel", revision, build_dir)
    base_oid, base_changed = _upload(api, build_dir, repo_id, "kernel", revision, message, **patterns)
    with _Step("listing the branches", build_dir, repo_id):
        branches = {ref.name for ref in api.list_repo_refs(repo_id, repo_type="kernel").branches}
    if branch not in branches:
        with _Step(f"creating branch {branch}", build_dir, repo_id):
            api.create_branch(repo_id, branch=branch, revision=base_oid, repo_type="kernel")
        return PushResult(repo_id, "kernel", branch, base_oid, str(url), True)
    oid, branch_changed = _upload(api, build_dir, repo_id, "kernel", branch, message, **patterns)
    return PushResult(repo_id, "kernel", branch, oid, str(url), base_changed or branch_changed)
