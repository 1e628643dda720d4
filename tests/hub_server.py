"""A small Hugging Face Hub API server for the test suite (standard library + PyYAML, no network beyond 127.0.0.1).

It speaks the subset of the Hub's HTTP API that ``huggingface_hub``, ``transformers`` and ``kernels`` use to
create repositories, commit (regular and LFS uploads), list trees / refs / commits, manage branches and tags,
download files (``resolve``) and validate model-card YAML, so that publishing code can be tested end to end with
the real clients. Everything lives in memory; a repository is a set of branches and tags pointing at immutable
commits, each commit a full ``{path: FileEntry}`` snapshot.

Test hooks:

* :meth:`HubServer.inject_failure` makes the next ``count`` requests whose path matches a regular expression fail
  with a given status (401, 403, 500, ...), e.g. the LFS ``PUT`` of an upload.
* :attr:`HubServer.requests` logs ``(method, path, status)`` of every request, so a test can check that no commit
  was posted.
* :attr:`HubServer.trusted_publishers` lists the organizations reported as trusted kernel publishers.

Not implemented (not needed by the clients here): Xet storage, multipart LFS, pull requests, pagination,
git over HTTP, gitignore handling.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = ("model", "dataset", "space", "kernel")
# URL prefix of each repo type in download / git URLs ("" for models).
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
PLURAL_TO_TYPE = {f"{repo_type}s": repo_type for repo_type in REPO_TYPES}
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gz", "*.h5", "*.joblib", "*.msgpack", "*.npy",
        "*.npz", "*.onnx", "*.parquet", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.safetensors", "*.tar",
        "*.zip", "*.zst", "*tfevents*",
    )
)
USER = "test-user"

# Model-card metadata the validator checks: field -> (accepted Python types, description used in messages).
_STRING = (str,)
_LIST = (list,)
CARD_FIELD_TYPES = {
    "license": (_STRING, "a string"),
    "license_name": (_STRING, "a string"),
    "license_link": (_STRING, "a string"),
    "library_name": (_STRING, "a string"),
    "pipeline_tag": (_STRING, "a string"),
    "thumbnail": (_STRING, "a string"),
    "tags": (_LIST, "a list of strings"),
    "datasets": (_LIST, "a list of strings"),
    "metrics": (_LIST, "a list of strings"),
    "language": ((str, list), "a string or a list of strings"),
    "base_model": ((str, list), "a string or a list of strings"),
    "model-index": (_LIST, "a list"),
    "widget": (_LIST, "a list"),
}
KNOWN_LICENSES = frozenset(
    "apache-2.0 mit openrail openrail++ bigscience-openrail-m creativeml-openrail-m bsd bsd-2-clause "
    "bsd-3-clause cc0-1.0 cc-by-4.0 cc-by-sa-4.0 cc-by-nc-4.0 cc-by-nc-sa-4.0 gpl-3.0 lgpl-3.0 agpl-3.0 "
    "mpl-2.0 llama2 llama3 gemma unlicense other unknown".split()
)
KNOWN_PIPELINE_TAGS = frozenset(
    "image-classification image-feature-extraction object-detection image-segmentation depth-estimation "
    "zero-shot-image-classification feature-extraction text-classification text-generation "
    "token-classification fill-mask image-to-text audio-classification other".split()
)


def git_blob_oid(data: bytes) -> str:
    """The git object id (sha1 of ``"blob <size>\\0" + data``) of a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file stored in git in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def validate_card_metadata(content: str, repo_type: str = "model") -> tuple[list[dict], list[dict]]:
    """Validate the YAML front matter of a repository card like the Hub does.

    Returns ``(errors, warnings)``, each a list of ``{"message": str}``. A card without front matter is valid
    with a warning; invalid YAML, a non-mapping front matter or a field of the wrong type is an error.
    """
    errors: list[dict] = []
    warnings: list[dict] = []
    match = re.match(r"\A\s*---\r?\n(.*?)\r?\n---\s*(\r?\n|\Z)", content, flags=re.DOTALL)
    if match is None:
        return errors, [{"message": "Empty or missing yaml metadata in repo card"}]
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError as error:
        return [{"message": f"Invalid YAML in the card metadata: {error}"}], warnings
    if metadata is None:
        return errors, [{"message": "Empty or missing yaml metadata in repo card"}]
    if not isinstance(metadata, dict):
        return [{"message": "The card metadata must be a YAML mapping"}], warnings
    for name, value in metadata.items():
        if name not in CARD_FIELD_TYPES:
            continue
        types, description = CARD_FIELD_TYPES[name]
        if not isinstance(value, types):
            errors.append({"message": f'"{name}" must be {description}, got {type(value).__name__}'})
        elif isinstance(value, list) and "strings" in description and not all(isinstance(v, str) for v in value):
            errors.append({"message": f'"{name}" must be {description}'})
    license_id = metadata.get("license")
    if isinstance(license_id, str) and license_id not in KNOWN_LICENSES:
        errors.append({"message": f'"license" must be a known license identifier, got "{license_id}"'})
    if license_id == "other" and not isinstance(metadata.get("license_name"), str):
        errors.append({"message": '"license_name" is required when "license" is "other"'})
    pipeline_tag = metadata.get("pipeline_tag")
    if repo_type == "model" and isinstance(pipeline_tag, str) and pipeline_tag not in KNOWN_PIPELINE_TAGS:
        errors.append({"message": f'"pipeline_tag" must be a known task, got "{pipeline_tag}"'})
    return errors, warnings


def card_data(content: bytes) -> dict | None:
    """The parsed front matter of a README.md, or None when it has none or it does not parse."""
    match = re.match(rb"\A\s*---\r?\n(.*?)\r?\n---", content, flags=re.DOTALL)
    if match is None:
        return None
    try:
        metadata = yaml.safe_load(match.group(1).decode())
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return metadata if isinstance(metadata, dict) else None


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit: ``size`` is the content size, ``sha256`` is set for LFS files."""

    size: int
    git_oid: str
    sha256: str | None = None
    pointer_size: int = 0


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to this repo (storage is per repo)

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch, tag, ``refs/heads/...`` / ``refs/tags/...`` name or full commit id points at."""
        revision = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and revision in self.commits:
            oid = revision
        return self.commits.get(oid) if oid else None


@dataclass
class Failure:
    """An injected failure: the next ``count`` requests matching ``pattern`` (and ``method``) get ``status``."""

    pattern: re.Pattern
    status: int
    count: int
    method: str | None
    message: str
    retry_after: int | None

    def matches(self, method: str, path: str) -> bool:
        return self.count > 0 and (self.method is None or self.method == method) and bool(self.pattern.search(path))


class HubError(Exception):
    """Ends a request with an HTTP error: ``status``, a message and the Hub's ``X-Error-Code`` if any."""

    def __init__(self, status: int, message: str, error_code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.extra = extra or {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubServer:
    """The in-memory Hub and its HTTP server; :meth:`start` serves it from a background thread.

    ``trusted_publishers`` holds the organizations reported as trusted kernel publishers.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, trusted_publishers: tuple[str, ...] = ()):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}  # git oid -> content of regular files
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content of LFS files (each repo lists its own)
        self.trusted_publishers = set(trusted_publishers)
        self.requests: list[tuple[str, str, int]] = []
        self._failures: list[Failure] = []
        self._lock = threading.RLock()
        self._commit_counter = 0
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    # ---- test hooks -------------------------------------------------------------------------------------
    def inject_failure(
        self,
        path_pattern: str,
        status: int = 500,
        *,
        count: int = 1,
        method: str | None = None,
        message: str = "injected failure",
        retry_after: int | None = None,
    ) -> Failure:
        """Fail the next ``count`` requests whose URL path matches the regex ``path_pattern`` with ``status``.

        The request body is read first, so a failing upload has been fully sent and then rejected (nothing is
        stored). ``retry_after`` adds a ``Retry-After`` header (``huggingface_hub`` then waits that many seconds
        plus one before retrying a 5xx). Returns the rule; its ``count`` drops as requests hit it.
        """
        failure = Failure(re.compile(path_pattern), status, count, method, message, retry_after)
        with self._lock:
            self._failures.append(failure)
        return failure

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def _take_failure(self, method: str, path: str) -> Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.matches(method, path):
                    failure.count -= 1
                    return failure
        return None

    # ---- repository model -------------------------------------------------------------------------------
    def repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                url = self.repo_url(repo_type, repo_id)
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            repo = Repo(repo_type, repo_id, private, _now())
            self.repos[(repo_type, repo_id)] = repo
            content = DEFAULT_GITATTRIBUTES.encode()
            self.blobs[git_blob_oid(content)] = content
            entry = FileEntry(len(content), git_blob_oid(content))
            self._add_commit(repo, "main", None, "initial commit", "", {".gitattributes": entry})
            return repo

    def _add_commit(self, repo: Repo, branch: str, parent: str | None, title: str, message: str, files: dict) -> Commit:
        self._commit_counter += 1
        tree = json.dumps({path: entry.git_oid for path, entry in sorted(files.items())})
        seed = f"{repo.repo_type}\0{repo.repo_id}\0{parent}\0{title}\0{self._commit_counter}\0{tree}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, message, _now(), dict(files))
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def read_file(self, entry: FileEntry) -> bytes:
        return self.lfs_objects[entry.sha256] if entry.sha256 else self.blobs[entry.git_oid]

    def is_lfs(self, files: dict[str, FileEntry], path: str, size: int, sample: bytes) -> bool:
        """Upload mode rule of the Hub: LFS for large or binary files and for ``.gitattributes`` LFS patterns."""
        if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return True
        attributes = files.get(".gitattributes")
        if attributes is None:
            return False
        for line in self.read_file(attributes).decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) > 1 and "filter=lfs" in parts[1:]:
                pattern = parts[0]
                target = path if "/" in pattern else path.rsplit("/", 1)[-1]
                if fnmatch.fnmatchcase(target, pattern):
                    return True
        return False

    def commit(self, repo: Repo, revision: str, lines: list[dict], create_pr: bool) -> Commit:
        """Apply an NDJSON commit payload (header, file, lfsFile, deletedFile, deletedFolder) to a branch."""
        if create_pr:
            raise HubError(400, "Pull requests are not supported by the test server")
        with self._lock:
            branch = revision.removeprefix("refs/heads/")
            if branch not in repo.branches:
                if repo.resolve(revision) is not None:
                    raise HubError(400, f"Invalid rev id: {revision} is not a branch", "RevisionNotFound")
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if not lines or lines[0].get("key") != "header":
                raise HubError(400, "The commit payload must start with a header line")
            header = lines[0]["value"]
            parent = header.get("parentCommit")
            if parent is not None and parent != head.oid:
                raise HubError(412, f"Parent commit {parent} is not the head of {branch} ({head.oid})")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    encoded = value["content"]
                    content = base64.b64decode(encoded) if value.get("encoding") == "base64" else encoded.encode()
                    oid = git_blob_oid(content)
                    self.blobs[oid] = content
                    files[path] = FileEntry(len(content), oid)
                elif key == "lfsFile":
                    sha256 = value["oid"]
                    if sha256 not in repo.lfs_oids:
                        raise HubError(422, f"LFS object {sha256} of {path} has not been uploaded")
                    size = len(self.lfs_objects[sha256])
                    pointer = lfs_pointer(sha256, size)
                    files[path] = FileEntry(size, git_blob_oid(pointer), sha256, len(pointer))
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    files = {name: entry for name, entry in files.items() if not name.startswith(prefix)}
                else:
                    raise HubError(400, f"Unsupported commit operation {key!r}")
            title, message = header.get("summary", ""), header.get("description", "")
            return self._add_commit(repo, branch, head.oid, title, message, files)


def _tree_entries(commit: Commit, path: str, recursive: bool) -> list[dict] | None:
    """Tree listing of ``path`` ('' = root) in ``commit``: files and directories, None if ``path`` is absent."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    directories: set[str] = set()
    files: list[str] = []
    for name in commit.files:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):].split("/")
        if not recursive and len(rest) > 1:
            directories.add(prefix + rest[0])
            continue
        files.append(name)
        for depth in range(1, len(rest)):
            directories.add(prefix + "/".join(rest[:depth]))
    if prefix and not files and not directories:
        return None
    entries = [_directory_entry(commit, name) for name in sorted(directories)]
    return entries + [_file_entry(name, commit.files[name]) for name in sorted(files)]


def _file_entry(path: str, entry: FileEntry) -> dict:
    info = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
    if entry.sha256:
        info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return info


def _directory_entry(commit: Commit, path: str) -> dict:
    members = sorted((name, entry.git_oid) for name, entry in commit.files.items() if name.startswith(path + "/"))
    return {"type": "directory", "oid": hashlib.sha1(json.dumps(members).encode()).hexdigest(), "size": 0, "path": path}


class _Handler(BaseHTTPRequestHandler):
    """Routes one HTTP request to the in-memory Hub (``self.server.hub``)."""

    protocol_version = "HTTP/1.1"
    server_version = "OverLoCKTestHub/1.0"

    # ---- plumbing ----------------------------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # silence the default stderr access log
        return

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from error

    def _send(
        self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.hub.requests.append((self.command, self.url_path, status))

    def _send_json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.error_code:
            headers["X-Error-Code"] = error.error_code
        self._send_json({"error": error.message, **error.extra}, error.status, headers)

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.url_path = split.path
        self.query = parse_qs(split.query)
        self.body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
        failure = self.hub._take_failure(method, self.url_path)
        if failure is not None:
            headers = {"X-Error-Message": failure.message}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            self._send_json({"error": failure.message}, failure.status, headers)
            return
        stripped = self.url_path.strip("/")
        segments = [unquote(segment) for segment in stripped.split("/")] if stripped else []
        try:
            self._route(method, segments)
        except HubError as error:
            self._send_error(error)
        except Exception as error:  # a server bug: report it to the client as a 500 rather than hang up
            self._send_error(HubError(500, f"test hub server error: {type(error).__name__}: {error}"))

    def _require_token(self) -> None:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _route(self, method: str, segments: list[str]) -> None:
        if segments[:1] == ["api"]:
            self._route_api(method, segments[1:])
        elif segments[:1] == ["lfs-objects"] and len(segments) == 5 and segments[1] in REPO_TYPES:
            repo = self.hub.repo(segments[1], f"{segments[2]}/{segments[3]}")
            self._lfs_object(method, repo, segments[4])
        else:
            self._route_repo_url(method, segments)

    # ---- /api/... ----------------------------------------------------------------------------------------
    def _route_api(self, method: str, rest: list[str]) -> None:
        if rest == ["whoami-v2"] and method == "GET":
            self._require_token()
            org_names = sorted({repo_id.split("/")[0] for _, repo_id in self.hub.repos} - {USER})
            self._send_json({
                "type": "user", "name": USER, "fullname": "Test User", "email": "test@example.com",
                "orgs": [{"type": "org", "name": org} for org in org_names],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            })
        elif rest == ["validate-yaml"] and method == "POST":
            body = self._json_body()
            errors, warnings = validate_card_metadata(body.get("content", ""), body.get("repoType") or "model")
            self._send_json({"errors": errors, "warnings": warnings}, 400 if errors else 200)
        elif rest[:2] == ["repos", "create"] and method == "POST":
            self._create_repo()
        elif rest[:2] == ["repos", "delete"] and method == "DELETE":
            self._delete_repo()
        elif len(rest) == 3 and rest[0] == "organizations" and rest[2] == "overview" and method == "GET":
            org = rest[1]
            trusted = org in self.hub.trusted_publishers
            self._send_json({"name": org, "fullname": org, "trustedKernelPublisher": trusted})
        elif len(rest) >= 3 and rest[0] in PLURAL_TO_TYPE:
            repo_type, repo_id = PLURAL_TO_TYPE[rest[0]], f"{rest[1]}/{rest[2]}"
            self._route_repo_api(method, repo_type, repo_id, rest[3:])
        else:
            raise HubError(404, f"No route for {method} /api/{'/'.join(rest)}")

    def _repo_type_and_id(self, body: dict) -> tuple[str, str]:
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        name = body.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name):
            raise HubError(400, f"Invalid repo name {name!r}")
        return repo_type, f"{body.get('organization') or USER}/{name}"

    def _create_repo(self) -> None:
        self._require_token()
        body = self._json_body()
        repo_type, repo_id = self._repo_type_and_id(body)
        private = bool(body.get("private")) or body.get("visibility") == "private"
        self.hub.create_repo(repo_type, repo_id, private)
        self._send_json({"url": self.hub.repo_url(repo_type, repo_id), "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        self._require_token()
        repo_type, repo_id = self._repo_type_and_id(self._json_body())
        with self.hub._lock:
            self.hub.repo(repo_type, repo_id)
            del self.hub.repos[(repo_type, repo_id)]
        self._send_json({})

    def _commit_for(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _route_repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str]) -> None:
        repo = self.hub.repo(repo_type, repo_id)
        if repo.private:
            self._require_token()
        action = rest[0] if rest else None
        if method == "GET" and (action is None or (action == "revision" and len(rest) >= 2)):
            self._repo_info(repo, "/".join(rest[1:]) if action else "main")
        elif method == "GET" and action == "tree" and len(rest) >= 2:
            commit = self._commit_for(repo, rest[1])
            recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries = _tree_entries(commit, "/".join(rest[2:]), recursive)
            if entries is None:
                raise HubError(404, f"Entry not found: {'/'.join(rest[2:])}", "EntryNotFound")
            self._send_json(entries)
        elif method == "POST" and action == "paths-info" and len(rest) == 2:
            commit = self._commit_for(repo, rest[1])
            form = parse_qs(self.body.decode()) if self.body else {}
            entries = []
            for path in form.get("paths", []):
                path = path.strip("/")
                if path in commit.files:
                    entries.append(_file_entry(path, commit.files[path]))
                elif any(name.startswith(path + "/") for name in commit.files):
                    entries.append(_directory_entry(commit, path))
            self._send_json(entries)
        elif method == "GET" and action == "refs":
            self._send_json(self._refs(repo))
        elif method == "GET" and action == "commits" and len(rest) == 2:
            self._send_json(self._commits(repo, self._commit_for(repo, rest[1])))
        elif action == "branch" and len(rest) == 2 and method in ("POST", "DELETE"):
            self._require_token()
            self._branch(repo, method, rest[1])
        elif action == "tag" and len(rest) == 2 and method in ("POST", "DELETE"):
            self._require_token()
            self._tag(repo, method, rest[1])
        elif method == "POST" and action == "preupload" and len(rest) == 2:
            self._require_token()
            self._preupload(repo, rest[1])
        elif method == "POST" and action == "commit" and len(rest) == 2:
            self._require_token()
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            commit = self.hub.commit(repo, rest[1], lines, self.query.get("create_pr", ["0"])[0] == "1")
            self._send_json({
                "commitOid": commit.oid, "commitUrl": f"{self.hub.repo_url(repo_type, repo_id)}/commit/{commit.oid}",
                "pullRequestUrl": None, "success": True,
            })
        elif method == "PUT" and action == "settings":
            self._require_token()
            body = self._json_body()
            if "visibility" in body:
                repo.private = body["visibility"] == "private"
            self._send_json({})
        else:
            raise HubError(404, f"No route for {method} {self.url_path}")

    def _repo_info(self, repo: Repo, revision: str) -> None:
        commit = self._commit_for(repo, revision)
        readme = commit.files.get("README.md")
        metadata = card_data(self.hub.read_file(readme)) if readme else None
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling = {"rfilename": path, "size": entry.size, "blobId": entry.git_oid}
            if entry.sha256:
                sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": commit.oid, "private": repo.private, "gated": False,
            "disabled": False, "downloads": 0, "likes": 0, "lastModified": commit.date, "createdAt": repo.created_at,
            "tags": list((metadata or {}).get("tags") or []), "siblings": siblings,
        }
        if metadata is not None:
            info["cardData"] = metadata
        if repo.repo_type == "model":
            info.update(modelId=repo.repo_id, pipeline_tag=(metadata or {}).get("pipeline_tag"),
                        library_name=(metadata or {}).get("library_name"))
        if repo.repo_type == "space":
            info["sdk"] = (metadata or {}).get("sdk", "static")
        self._send_json(info)

    def _refs(self, repo: Repo) -> dict:
        def ref(name: str, kind: str, oid: str) -> dict:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

        refs = {
            "branches": [ref(name, "heads", oid) for name, oid in sorted(repo.branches.items())],
            "tags": [ref(name, "tags", oid) for name, oid in sorted(repo.tags.items())],
            "converts": [],
        }
        if self.query.get("include_prs"):
            refs["pullRequests"] = []
        return refs

    def _commits(self, repo: Repo, commit: Commit) -> list[dict]:
        history = []
        while commit is not None:
            history.append({
                "id": commit.oid, "title": commit.title, "message": commit.message, "date": commit.date,
                "authors": [{"user": USER}],
            })
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return history

    def _branch(self, repo: Repo, method: str, branch: str) -> None:
        with self.hub._lock:
            if method == "DELETE":
                if branch not in repo.branches:
                    raise HubError(404, f"Branch {branch} not found", "RevisionNotFound")
                if branch == "main":
                    raise HubError(403, "Cannot delete the main branch")
                del repo.branches[branch]
                self._send_json({})
                return
            if branch in repo.branches or branch in repo.tags:
                raise HubError(409, f"Reference {branch} already exists")
            if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", branch):
                raise HubError(400, f"Invalid branch name {branch!r}")
            start = self._json_body().get("startingPoint") or "main"
            repo.branches[branch] = self._commit_for(repo, start).oid
        self._send_json({})

    def _tag(self, repo: Repo, method: str, name: str) -> None:
        with self.hub._lock:
            if method == "DELETE":
                if name not in repo.tags:
                    raise HubError(404, f"Tag {name} not found", "RevisionNotFound")
                del repo.tags[name]
                self._send_json({})
                return
            tag = self._json_body().get("tag", "")
            if not tag or tag in repo.tags or tag in repo.branches:
                raise HubError(409, f"Reference {tag!r} already exists or is invalid")
            repo.tags[tag] = self._commit_for(repo, name).oid
        self._send_json({})

    def _preupload(self, repo: Repo, revision: str) -> None:
        commit = self._commit_for(repo, revision)
        answers = []
        for item in self._json_body().get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            existing = commit.files.get(path)
            answers.append({
                "path": path,
                "uploadMode": "lfs" if self.hub.is_lfs(commit.files, path, size, sample) else "regular",
                "shouldIgnore": False,
                "oid": (existing.sha256 or existing.git_oid) if existing else None,
            })
        self._send_json({"files": answers, "commitOid": commit.oid})

    # ---- LFS ---------------------------------------------------------------------------------------------
    def _lfs_batch(self, repo: Repo) -> None:
        self._require_token()
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "Only LFS uploads are supported by the test server")
        objects = []
        for item in body.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            answer = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_oids:
                href = f"{self.hub.url}/lfs-objects/{repo.repo_type}/{repo.repo_id}/{oid}"
                answer["actions"] = {"upload": {"href": href, "header": {}}, "verify": {"href": href, "header": {}}}
            objects.append(answer)
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_object(self, method: str, repo: Repo, oid: str) -> None:
        if method == "PUT":
            if hashlib.sha256(self.body).hexdigest() != oid:
                raise HubError(400, f"Uploaded content does not match LFS oid {oid}")
            with self.hub._lock:
                self.hub.lfs_objects[oid] = self.body
                repo.lfs_oids.add(oid)
            self._send_json({})
        elif method == "POST":
            body = self._json_body()
            stored = self.hub.lfs_objects.get(oid) if oid in repo.lfs_oids else None
            if stored is None or len(stored) != int(body.get("size", -1)):
                raise HubError(404, f"LFS object {oid} was not uploaded completely")
            self._send_json({})
        else:
            raise HubError(405, f"{method} not allowed on LFS objects")

    # ---- /{prefix}{ns}/{name}/resolve/... and .git/info/lfs ------------------------------------------------
    def _route_repo_url(self, method: str, segments: list[str]) -> None:
        repo_type = "model"
        if segments and segments[0] in ("datasets", "spaces", "kernels") and len(segments) > 3 and (
            segments[3] == "resolve" or segments[2].endswith(".git")
        ):
            repo_type, segments = PLURAL_TO_TYPE[segments[0]], segments[1:]
        if len(segments) == 6 and segments[1].endswith(".git") and segments[2:] == ["info", "lfs", "objects", "batch"]:
            repo = self.hub.repo(repo_type, f"{segments[0]}/{segments[1][:-4]}")
            if method == "POST":
                self._lfs_batch(repo)
                return
        if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self.hub.repo(repo_type, f"{segments[0]}/{segments[1]}")
            self._resolve(method, repo, segments[3], "/".join(segments[4:]))
            return
        raise HubError(404, f"No route for {method} {self.url_path}")

    def _resolve(self, method: str, repo: Repo, revision: str, path: str) -> None:
        if repo.private:
            self._require_token()
        commit = self._commit_for(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        content = self.hub.read_file(entry)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if entry.sha256:
            etag = f'"{entry.sha256}"'
            headers.update({"ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(entry.size)})
        else:
            headers["ETag"] = f'"{entry.git_oid}"'
        status = 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and content:
            start = int(match.group(1)) if match.group(1) else max(0, len(content) - int(match.group(2) or 0))
            end = int(match.group(2)) if match.group(1) and match.group(2) else len(content) - 1
            if start >= len(content):
                raise HubError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "Requested range not satisfiable")
            end = min(end, len(content) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start:end + 1], 206
        self._send(status, content, headers, "application/octet-stream")
