"""The local Hub-API test server, driven by the real huggingface_hub client over HTTP."""

from __future__ import annotations

import hashlib
import os

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

# huggingface_hub's LFS upload passes a file object as `data=`, which httpx2 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")


@pytest.fixture
def api(hub_server) -> HfApi:
    hub_server.clear_failures()
    yield HfApi()
    hub_server.clear_failures()


def test_endpoint_and_whoami(hub_server, api):
    assert os.environ["HF_ENDPOINT"] == hub_server.url
    assert api.whoami()["name"] == "test-user"


def test_create_upload_download_roundtrip(hub_server, api, tmp_path):
    url = api.create_repo("server-org/roundtrip")
    assert url.repo_id == "server-org/roundtrip"
    assert api.create_repo("server-org/roundtrip", exist_ok=True).repo_id == "server-org/roundtrip"
    with pytest.raises(HfHubHTTPError):
        api.create_repo("server-org/roundtrip")

    big = os.urandom(11 * 1024 * 1024)  # > 10 MB: LFS
    (tmp_path / "weights.bin").write_bytes(big)
    (tmp_path / "notes.txt").write_text("hello hub\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text('{"a": 1}')
    info = api.upload_folder(folder_path=tmp_path, repo_id="server-org/roundtrip", commit_message="add files")
    assert len(hub_server.lfs_objects) >= 1
    lfs_put = ("PUT", f"/lfs-objects/model/server-org/roundtrip/{hashlib.sha256(big).hexdigest()}", 200)
    assert lfs_put in hub_server.requests

    files = {entry.path: entry for entry in api.list_repo_tree("server-org/roundtrip", recursive=True)}
    assert files["weights.bin"].lfs.sha256 == hashlib.sha256(big).hexdigest()
    assert files["notes.txt"].lfs is None and files["sub/a.json"].size == 8
    assert api.repo_info("server-org/roundtrip").sha == info.oid

    path = hf_hub_download("server-org/roundtrip", "weights.bin")
    assert hashlib.sha256(open(path, "rb").read()).digest() == hashlib.sha256(big).digest()
    snapshot = snapshot_download("server-org/roundtrip")
    assert open(os.path.join(snapshot, "sub", "a.json")).read() == '{"a": 1}'
    assert open(os.path.join(snapshot, "notes.txt")).read() == "hello hub\n"

    with pytest.raises(EntryNotFoundError):
        hf_hub_download("server-org/roundtrip", "missing.txt")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("server-org/absent", "config.json")

    # The same content again: upload_folder skips unchanged files and makes no commit.
    commits_before = len(api.list_repo_commits("server-org/roundtrip"))
    again = api.upload_folder(folder_path=tmp_path, repo_id="server-org/roundtrip")
    assert again.oid == info.oid
    assert len(api.list_repo_commits("server-org/roundtrip")) == commits_before

    api.delete_file("notes.txt", "server-org/roundtrip")
    assert "notes.txt" not in api.list_repo_files("server-org/roundtrip")
    api.delete_repo("server-org/roundtrip")
    assert not api.repo_exists("server-org/roundtrip")


def test_branches_tags_and_refs(api):
    api.create_repo("server-org/refs", repo_type="kernel")
    api.upload_file(path_or_fileobj=b"print(1)\n", path_in_repo="build/torch-universal/x.py",
                    repo_id="server-org/refs", repo_type="kernel")
    api.create_branch("server-org/refs", branch="v1", repo_type="kernel")
    api.create_tag("server-org/refs", tag="release", repo_type="kernel")
    refs = api.list_repo_refs("server-org/refs", repo_type="kernel")
    heads = {ref.name: ref.target_commit for ref in refs.branches}
    assert set(heads) == {"main", "v1"} and heads["main"] == heads["v1"]
    assert [tag.name for tag in refs.tags] == ["release"]
    with pytest.raises(HfHubHTTPError):
        api.create_branch("server-org/refs", branch="v1", repo_type="kernel")
    api.create_branch("server-org/refs", branch="v1", repo_type="kernel", exist_ok=True)

    api.upload_file(path_or_fileobj=b"print(2)\n", path_in_repo="build/torch-universal/x.py",
                    repo_id="server-org/refs", repo_type="kernel", revision="v1")
    refs = api.list_repo_refs("server-org/refs", repo_type="kernel")
    new_heads = {ref.name: ref.target_commit for ref in refs.branches}
    assert new_heads["main"] == heads["main"] and new_heads["v1"] != heads["v1"]
    tree = api.list_repo_tree("server-org/refs", path_in_repo="build", repo_type="kernel", revision="v1")
    assert [item.path for item in tree] == ["build/torch-universal"]
    path = hf_hub_download("server-org/refs", "build/torch-universal/x.py", repo_type="kernel", revision="v1")
    assert open(path).read() == "print(2)\n"
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("server-org/refs", "build/torch-universal/x.py", repo_type="kernel", revision="v9")
    info = api.get_paths_info("server-org/refs", ["build", "build/torch-universal/x.py"], repo_type="kernel")
    assert [type(item).__name__ for item in info] == ["RepoFolder", "RepoFile"]


def test_dataset_and_space_repos(api):
    api.create_repo("server-org/data", repo_type="dataset")
    api.upload_file(
        path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id="server-org/data", repo_type="dataset"
    )
    snapshot = snapshot_download("server-org/data", repo_type="dataset")
    assert open(os.path.join(snapshot, "train.csv")).read() == "a,b\n1,2\n"
    api.create_repo("server-org/app", repo_type="space", space_sdk="static")
    assert api.space_info("server-org/app").id == "server-org/app"


def test_validate_yaml(api):
    api._validate_yaml("---\nlicense: apache-2.0\ntags: [a, b]\nlibrary_name: transformers\n---\n# Card\n")
    with pytest.raises(ValueError, match="tags"):
        api._validate_yaml("---\nlicense: apache-2.0\ntags: vision\n---\n")
    with pytest.raises(ValueError, match="license"):
        api._validate_yaml("---\nlicense: [apache-2.0]\n---\n")
    with pytest.raises(ValueError, match="license"):
        api._validate_yaml("---\nlicense: not-a-license\n---\n")
    with pytest.raises(ValueError, match="YAML"):
        api._validate_yaml("---\nlicense: apache-2.0\ntags: [a\n---\n")
    with pytest.warns(UserWarning, match="metadata"):
        api._validate_yaml("# No metadata\n")
    # Every commit that adds a README.md is validated first: a bad card is refused before any upload.
    api.create_repo("server-org/card")
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(
            path_or_fileobj=b"---\ndatasets: imagenet\n---\n", path_in_repo="README.md", repo_id="server-org/card"
        )
    assert api.list_repo_files("server-org/card") == [".gitattributes"]


def test_injected_failures(hub_server, api):
    api.create_repo("server-org/faults")
    hub_server.inject_failure(r"/api/models/server-org/faults/commit/", 403, message="forbidden by test")
    with pytest.raises(HfHubHTTPError, match="forbidden by test"):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="server-org/faults")
    # A transient 500 on the LFS PUT is retried by the client and the upload goes through.
    hub_server.inject_failure(r"^/lfs-objects/", 500, count=1, method="PUT", retry_after=0)
    api.upload_file(path_or_fileobj=b"\0binary", path_in_repo="x.bin", repo_id="server-org/faults")
    assert api.list_repo_files("server-org/faults") == [".gitattributes", "x.bin"]
