"""Publishing end to end against the local Hub-API server (tests/hub_server.py), with the real clients.

Converts the tiny reference checkpoint, pushes it with ``overlock_hf.hub.push_model``, and loads it back from the
server: in this process with the package (no ``trust_remote_code``), and in a child process where ``overlock_hf``
cannot be imported (``trust_remote_code=True``). Builds the CPU ContMix kernel, pushes it with ``push_kernel`` and
loads it with ``kernels``. Checks the model card and its usage snippets, and the failure behaviour (unreachable
endpoint, 401/403, a 500 during the LFS upload): a clear error, untouched local files, a working retry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, hf_hub_download
from PIL import Image
from safetensors.torch import load_file

from overlock_hf.cli import main as cli_main
from overlock_hf.hub import HubPublishError, check_hub_login, push_kernel, push_model

from conftest import REPO_ROOT, fixture_path

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

MODEL_REPO = "org/overlock-tiny"
KERNEL_REPO = "org/overlock-contmix"
TRUSTED_KERNEL_REPO = "trusted-org/overlock-contmix"
KERNEL_BUILD_DIR = REPO_ROOT / ".kernel-build"  # shared, gitignored cache: a build is reused while its sources match


def folder_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path (to prove that a push changed nothing locally)."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def python_blocks(markdown: str) -> list[str]:
    """The fenced ```python blocks of a Markdown document, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def sample_image() -> Image.Image:
    """A deterministic 200 x 168 RGB gradient (sizes chosen away from the processor's rounding corner case)."""
    x = torch.linspace(0, 255, 200).round().to(torch.uint8)
    y = torch.linspace(0, 255, 168).round().to(torch.uint8)
    red, green = x[None, :].expand(168, 200), y[:, None].expand(168, 200)
    array = torch.stack([red, green, red // 2 + green // 2], -1)
    return Image.fromarray(array.numpy(), mode="RGB")


@pytest.fixture(autouse=True)
def _no_leftover_failures(hub_server):
    hub_server.clear_failures()
    yield
    hub_server.clear_failures()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """The tiny reference checkpoint converted to a transformers folder (10 classes, no named variant)."""
    from overlock_hf.conversion import convert_checkpoint

    return convert_checkpoint(fixture_path("tiny_official.pth"), tmp_path_factory.mktemp("converted") / "overlock-tiny")


@pytest.fixture(scope="module")
def reference_inputs() -> torch.Tensor:
    return load_file(fixture_path("tiny_reference_outputs.safetensors"))["pixel_values"]


@pytest.fixture(scope="module")
def local_outputs(model_folder, reference_inputs) -> dict:
    """Outputs of the converted folder loaded locally: the values every Hub load must reproduce."""
    from transformers import pipeline

    from overlock_hf import OverLoCKForImageClassification, OverLoCKModel

    classifier = OverLoCKForImageClassification.from_pretrained(model_folder).eval()
    base = OverLoCKModel.from_pretrained(model_folder).eval()
    with torch.no_grad():
        outputs = {
            "logits": classifier(pixel_values=reference_inputs).logits,
            "pooler_output": base(pixel_values=reference_inputs).pooler_output,
        }
    outputs["pipeline"] = pipeline("image-classification", model=str(model_folder))(sample_image(), top_k=5)
    return outputs


@pytest.fixture(scope="module")
def pushed_model(hub_server, model_folder):
    """``org/overlock-tiny`` pushed once; returns the PushResult."""
    before = folder_hashes(model_folder)
    result = push_model(model_folder, MODEL_REPO, commit_message="Add the tiny OverLoCK")
    assert folder_hashes(model_folder) == before
    return result


def test_push_model_uploads_every_file_and_skips_a_repeated_push(hub_server, model_folder, pushed_model):
    api = HfApi()
    assert pushed_model.changed and pushed_model.revision == "main"
    remote = {entry.path: entry for entry in api.list_repo_tree(MODEL_REPO, recursive=True)}
    local = folder_hashes(model_folder)
    assert set(local) <= set(remote)
    assert remote["model.safetensors"].lfs.sha256 == local["model.safetensors"]  # went through LFS
    small_files = ("config.json", "configuration_overlock.py", "modeling_overlock.py", "contmix.py")
    for name in (*small_files, "preprocessor_config.json"):
        assert remote[name].lfs is None and remote[name].size == (model_folder / name).stat().st_size
    commits = len(api.list_repo_commits(MODEL_REPO))
    posted = sum(1 for method, path, _ in hub_server.requests if method == "POST" and "/commit/" in path)

    again = push_model(model_folder, MODEL_REPO)
    assert not again.changed and again.commit_oid == pushed_model.commit_oid
    assert len(api.list_repo_commits(MODEL_REPO)) == commits
    assert sum(1 for method, path, _ in hub_server.requests if method == "POST" and "/commit/" in path) == posted

    # Another branch: created from main, gets the same files without a new commit.
    branch = push_model(model_folder, MODEL_REPO, revision="tiny-v2")
    assert branch.revision == "tiny-v2" and not branch.changed
    assert "tiny-v2" in {ref.name for ref in api.list_repo_refs(MODEL_REPO).branches}


def test_load_from_hub_with_package(pushed_model, local_outputs, reference_inputs):
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, pipeline

    from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification

    assert isinstance(AutoConfig.from_pretrained(MODEL_REPO), OverLoCKConfig)
    model = AutoModelForImageClassification.from_pretrained(MODEL_REPO).eval()
    assert type(model) is OverLoCKForImageClassification  # the package's class, not Hub code
    base = AutoModel.from_pretrained(MODEL_REPO).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=reference_inputs).logits, local_outputs["logits"], rtol=0, atol=0)
        pooled = base(pixel_values=reference_inputs).pooler_output
        torch.testing.assert_close(pooled, local_outputs["pooler_output"], rtol=0, atol=0)
    predictions = pipeline("image-classification", model=MODEL_REPO)(sample_image(), top_k=5)
    assert [p["label"] for p in predictions] == [p["label"] for p in local_outputs["pipeline"]]


REMOTE_CODE_CHILD = textwrap.dedent('''
    import importlib.util, json, sys
    sys.path[:] = [p for p in sys.path if p.rstrip("/") != SOURCE_DIR]  # the editable install's entry
    assert importlib.util.find_spec("overlock_hf") is None, "overlock_hf must not be importable here"

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, pipeline
    from PIL import Image

    repo = sys.argv[1]
    pixel_values = load_file(sys.argv[2])["pixel_values"]
    config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
    model = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
        pooled = base(pixel_values=pixel_values).pooler_output
    save_file({"logits": logits, "pooler_output": pooled}, sys.argv[3] + "/outputs.safetensors")
    image = Image.open(sys.argv[3] + "/image.png")
    predictions = pipeline("image-classification", model=repo, trust_remote_code=True)(image, top_k=5)
    snippet_namespace = {}
    exec(open(sys.argv[3] + "/snippet.py").read(), snippet_namespace)  # the model card's remote-code snippet
    json.dump({
        "config_class": type(config).__name__, "config_module": type(config).__module__,
        "model_module": type(model).__module__, "predictions": predictions,
        "overlock_imported": any(name.startswith("overlock_hf") for name in sys.modules),
        "from_variant_labels": type(config).from_variant("overlock-xt").id2label[0],  # the Hub copy's labels
    }, open(sys.argv[3] + "/result.json", "w"))
''')


def test_load_from_hub_without_package(hub_server, pushed_model, local_outputs, fixtures_dir, tmp_path):
    card = Path(hf_hub_download(MODEL_REPO, "README.md")).read_text()
    remote_code_snippet = next(block for block in python_blocks(card) if "trust_remote_code=True" in block)
    (tmp_path / "snippet.py").write_text(remote_code_snippet)
    sample_image().save(tmp_path / "image.png")
    source_dir = str((REPO_ROOT / "src").resolve())
    script = f"SOURCE_DIR = {source_dir!r}\n" + REMOTE_CODE_CHILD
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    completed = subprocess.run(
        [sys.executable, "-I", "-c", script, MODEL_REPO, str(fixtures_dir / "tiny_reference_outputs.safetensors"),
         str(tmp_path)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["config_class"] == "OverLoCKConfig" and not result["overlock_imported"]
    assert result["from_variant_labels"] == "tench, Tinca tinca"
    assert result["config_module"].startswith("transformers_modules")  # the Hub copy of the code
    assert result["model_module"].startswith("transformers_modules")
    outputs = load_file(tmp_path / "outputs.safetensors")
    torch.testing.assert_close(outputs["logits"], local_outputs["logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs["pooler_output"], local_outputs["pooler_output"], rtol=0, atol=1e-5)
    assert [p["label"] for p in result["predictions"]] == [p["label"] for p in local_outputs["pipeline"]]
    scores = torch.tensor([p["score"] for p in result["predictions"]])
    torch.testing.assert_close(scores, torch.tensor([p["score"] for p in local_outputs["pipeline"]]), rtol=0, atol=1e-5)


def test_pushed_model_card_validates_and_its_snippet_runs(hub_server, pushed_model, model_folder, capsys):
    from hub_server import validate_card_metadata

    card = Path(hf_hub_download(MODEL_REPO, "README.md")).read_text()
    assert validate_card_metadata(card) == ([], [])
    HfApi()._validate_yaml(card)  # the server's /api/validate-yaml, as every README commit does
    assert "<org>" not in card and MODEL_REPO in card and KERNEL_REPO in card
    assert (model_folder / "README.md").read_text() != card  # the local card keeps its placeholders
    assert "@inproceedings{lou2025overlock" in card and "license: apache-2.0" in card
    assert "datasets:" not in card  # 10 classes: not an ImageNet-1K model

    with_package = python_blocks(card)[0]
    assert "import overlock_hf" in with_package and "trust_remote_code" not in with_package
    exec(compile(with_package, "README.md snippet", "exec"), {})
    printed = capsys.readouterr().out
    assert "score" in printed and "label" in printed


def test_model_card_of_released_variant():
    from hub_server import validate_card_metadata

    from overlock_hf import OverLoCKConfig
    from overlock_hf.model_card import render_model_card

    config = OverLoCKConfig.from_variant("overlock-t")
    card = render_model_card(config, repo_id="acme/overlock-t", checkpoint_name="overlock_t_in1k_224.pth")
    assert validate_card_metadata(card) == ([], [])
    assert "# OverLoCK-T (ImageNet-1K)" in card and "84.2 %" in card and "34.99 M" in card
    assert "- imagenet-1k" in card and "overlock_t_in1k_224.pth" in card
    assert 'overlock_hf.kernelize(model, "acme/overlock-contmix")' in card
    assert len(python_blocks(card)) == 3


@pytest.fixture(scope="module")
def kernel_build() -> Path:
    """The CPU ContMix kernel built for the installed torch (reused from .kernel-build when up to date)."""
    from overlock_hf.kernel_builder import build_kernel

    build_kernel(KERNEL_BUILD_DIR, backends=["cpu"])
    return KERNEL_BUILD_DIR


@pytest.fixture(scope="module")
def pushed_kernel(hub_server, kernel_build):
    before = folder_hashes(kernel_build / "build")
    results = [push_kernel(kernel_build, repo, version=1) for repo in (KERNEL_REPO, TRUSTED_KERNEL_REPO)]
    assert folder_hashes(kernel_build / "build") == before
    return results


def test_push_kernel_creates_the_version_branch(pushed_kernel, kernel_build):
    api = HfApi()
    result = pushed_kernel[0]
    assert result.revision == "v1" and result.changed
    refs = {ref.name: ref.target_commit for ref in api.list_repo_refs(KERNEL_REPO, repo_type="kernel").branches}
    assert refs["v1"] == refs["main"] == result.commit_oid
    variants = sorted(path.name for path in (kernel_build / "build").iterdir() if path.is_dir())
    tree = api.list_repo_tree(KERNEL_REPO, path_in_repo="build", repo_type="kernel", revision="v1")
    assert sorted(entry.path.split("/")[-1] for entry in tree) == variants

    again = push_kernel(kernel_build, KERNEL_REPO, version=1)
    assert not again.changed and again.commit_oid == result.commit_oid
    second = push_kernel(kernel_build, KERNEL_REPO, version=2)  # a new version branch at the same build
    assert second.revision == "v2" and second.commit_oid == result.commit_oid


def test_kernel_loads_from_hub(pushed_kernel):
    import kernels

    kernel = kernels.get_kernel(KERNEL_REPO, version=1, trust_remote_code=True)
    assert hasattr(kernel, "layers")
    with pytest.raises(ValueError, match="trusted publisher"):
        kernels.get_kernel(KERNEL_REPO, version=1)  # org is not a trusted kernel publisher on the test Hub
    assert hasattr(kernels.get_kernel(TRUSTED_KERNEL_REPO, version=1), "layers")  # trusted-org is


def _kernelized_contmix(model) -> list:
    return [m for m in model.modules() if type(m).__name__ == "ContMix" and "forward" in m.__dict__]


def test_kernelized_model_from_hub_matches_pytorch(pushed_model, pushed_kernel, local_outputs, reference_inputs):
    import warnings

    from transformers import AutoModelForImageClassification

    from overlock_hf.kernel_hub import kernelize

    tolerance = 1e-4 * local_outputs["logits"].abs().max().item()
    for repo, trust in ((KERNEL_REPO, True), (TRUSTED_KERNEL_REPO, False)):
        model = AutoModelForImageClassification.from_pretrained(MODEL_REPO).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # kernelize warns (and keeps PyTorch) when the kernel is not used
            kernelized = kernelize(model, repo, mode="inference", trust_remote_code=trust)
        assert _kernelized_contmix(kernelized)
        with torch.no_grad():
            logits = kernelized(pixel_values=reference_inputs).logits
        torch.testing.assert_close(logits, local_outputs["logits"], rtol=0, atol=tolerance)


def test_model_card_kernel_snippet_runs(hub_server, model_folder, pushed_kernel):
    """The card's kernel snippet, for a model pushed to the namespace of a trusted kernel publisher."""
    import warnings

    push_model(model_folder, "trusted-org/overlock-tiny")
    card = Path(hf_hub_download("trusted-org/overlock-tiny", "README.md")).read_text()
    snippet = next(block for block in python_blocks(card) if "kernelize" in block)
    assert TRUSTED_KERNEL_REPO in snippet
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(snippet, "README.md kernel snippet", "exec"), namespace)
    assert _kernelized_contmix(namespace["model"])


# ---- failures --------------------------------------------------------------------------------------------
def test_unreachable_endpoint(model_folder):
    before = folder_hashes(model_folder)
    with pytest.raises(HubPublishError, match="creating the repository") as error:
        push_model(model_folder, "org/unreachable", endpoint="http://127.0.0.1:9")  # discard port: refused
    assert "Nothing local was changed" in str(error.value)
    assert folder_hashes(model_folder) == before


def test_only_hub_failures_become_hub_errors(hub_server, model_folder, monkeypatch):
    """A bug or a bad argument inside a push surfaces as itself, not as "check the endpoint and token"."""
    def broken(*args, **kwargs):
        raise ValueError("a bug, not the network")

    monkeypatch.setattr(HfApi, "create_repo", broken)
    with pytest.raises(ValueError, match="a bug, not the network"):
        push_model(model_folder, "org/bug")
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        push_model(model_folder, "org/bug")


def test_check_hub_login(hub_server):
    assert check_hub_login() == "test-user"
    with pytest.raises(HubPublishError, match=r"(?s)cannot log in to the Hub at http://127\.0\.0\.1:9.*HF_TOKEN"):
        check_hub_login(endpoint="http://127.0.0.1:9")
    hub_server.inject_failure(r"whoami", 401, message="Invalid credentials")
    with pytest.raises(HubPublishError, match="(?s)cannot log in.*Invalid user token"):
        check_hub_login()


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_then_retry(hub_server, model_folder, status):
    repo = f"org/denied-{status}"
    before = folder_hashes(model_folder)
    hub_server.inject_failure(r"^/api/repos/create$", status, message="Invalid credentials in Authorization header")
    with pytest.raises(HubPublishError, match="(?s)creating the repository.*Invalid credentials") as error:
        push_model(model_folder, repo)
    assert "Nothing local was changed" in str(error.value)
    assert not HfApi().repo_exists(repo)

    hub_server.inject_failure(rf"^/api/models/{repo}/commit/", status, message="You have no write access")
    with pytest.raises(HubPublishError, match="(?s)uploading the files.*no write access"):
        push_model(model_folder, repo)
    assert HfApi().list_repo_files(repo) == [".gitattributes"]  # the repo exists, nothing was committed
    assert folder_hashes(model_folder) == before

    assert push_model(model_folder, repo).changed  # the retry goes through
    assert set(before) <= set(HfApi().list_repo_files(repo))


def test_server_error_during_lfs_upload_then_retry(hub_server, model_folder):
    repo = "org/lfs-failure"
    before = folder_hashes(model_folder)
    # Every attempt of the LFS PUT fails (the client retries 5 times, 1 s apart with Retry-After: 0).
    rule = hub_server.inject_failure(r"^/lfs-objects/", 500, count=100, method="PUT", retry_after=0,
                                     message="storage backend unavailable")
    with pytest.raises(HubPublishError, match="(?s)uploading the files.*500") as error:
        push_model(model_folder, repo)
    assert "Nothing local was changed" in str(error.value) and rule.count < 100
    assert HfApi().list_repo_files(repo) == [".gitattributes"]
    assert folder_hashes(model_folder) == before
    hub_server.clear_failures()

    result = push_model(model_folder, repo)
    assert result.changed
    sha = {entry.path: entry for entry in HfApi().list_repo_tree(repo, recursive=True)}["model.safetensors"].lfs.sha256
    assert sha == before["model.safetensors"]


def test_local_checks_run_before_any_request(hub_server, model_folder, tmp_path):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.json").write_text(json.dumps({"model_type": "overlock"}))
    requests = len(hub_server.requests)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        push_model(incomplete, "org/incomplete")
    for name in ("model.safetensors", "preprocessor_config.json", "README.md"):
        (incomplete / name).write_bytes((model_folder / name).read_bytes())
    with pytest.raises(ValueError, match="auto_map"):
        push_model(incomplete, "org/incomplete")
    with pytest.raises(FileNotFoundError, match="no build/ folder"):
        push_kernel(tmp_path, "org/no-kernel")
    assert len(hub_server.requests) == requests


def test_cli_push_and_push_kernel(hub_server, model_folder, pushed_kernel, kernel_build, capsys):
    assert cli_main(["push", str(model_folder), "org/cli-model", "--commit-message", "from the CLI", "--private"]) == 0
    assert "new commit" in capsys.readouterr().out
    api = HfApi()
    assert api.list_repo_commits("org/cli-model")[0].title == "from the CLI"
    assert api.model_info("org/cli-model").private
    assert cli_main(["push", str(model_folder), "org/cli-model"]) == 0
    assert "no new commit" in capsys.readouterr().out

    assert cli_main(["push-kernel", str(kernel_build), "org/cli-kernel", "--version", "3"]) == 0
    assert "v3" in {ref.name for ref in api.list_repo_refs("org/cli-kernel", repo_type="kernel").branches}

    hub_server.inject_failure(r"^/api/models/org/cli-model/", 403, message="forbidden")
    assert cli_main(["push", str(model_folder), "org/cli-model"]) == 1
    assert "Nothing local was changed" in capsys.readouterr().err
