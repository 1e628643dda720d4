"""The model-folder writer (overlock_hf.export): kill safety, permissions, --overwrite, provenance, the
pre-push check, `overlock-hf reparameterize`, and the released head of `OverLoCKConfig.from_variant`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from _full_size import random_official_state_dict, save_checkpoint
from _shared import converted_tiny_folder
from conftest import REPO_ROOT, fixture_path
from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification
from overlock_hf.cli import main as cli_main
from overlock_hf.configuration_overlock import normalize_variant_name
from overlock_hf.conversion import convert_checkpoint
from overlock_hf.export import check_model_folder


def folder_hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def hidden_siblings(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------------ kill safety
@pytest.fixture(scope="module")
def full_size_xt(tmp_path_factory):
    path = tmp_path_factory.mktemp("xt") / "overlock_xt_in1k_224.pth"
    save_checkpoint(random_official_state_dict("overlock_xt", "plain"), path)
    return path


@pytest.mark.parametrize("existing", [False, True], ids=["new-target", "overwrite-target"])
def test_killed_conversion_leaves_target_absent_or_intact(tmp_path, full_size_xt, existing):
    target = tmp_path / "out"
    before = None
    if existing:
        convert_checkpoint(fixture_path("tiny_official.pth"), target)
        before = folder_hashes(target)
    command = [sys.executable, "-m", "overlock_hf.cli", "convert", str(full_size_xt), str(target), "--overwrite"]
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), OMP_NUM_THREADS="1")
    child = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:  # kill once the staging folder holds the weights: mid-write or mid-verification
        while not any((p / "model.safetensors").exists() for p in tmp_path.glob(".out.staging-*")):
            assert child.poll() is None, f"conversion ended before it could be killed: {child.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no staging folder appeared"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert hidden_siblings(tmp_path), "the killed run should have left its staging folder (the test killed too late)"
    assert not target.exists() or folder_hashes(target) == before, "the killed run changed the target"

    convert_checkpoint(fixture_path("tiny_official.safetensors"), target, overwrite=True)
    assert hidden_siblings(tmp_path) == [], "staging folder of the killed run not removed"
    assert check_model_folder(target) == target


def test_stale_staging_of_a_dead_process_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.staging-{dead.pid}-0123abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    unrelated = tmp_path / ".other.staging-1-0123abcd"
    unrelated.mkdir()
    convert_checkpoint(fixture_path("tiny_official.pth"), tmp_path / "out")
    assert hidden_siblings(tmp_path) == [unrelated.name]  # another target's folder is not touched


# ------------------------------------------------------------------------------------------------ permissions
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_folder_and_files_get_umask_permissions(tmp_path, umask):
    previous = os.umask(umask)
    try:
        folder = convert_checkpoint(fixture_path("tiny_official.pth"), tmp_path / "shared" / "out")
    finally:
        os.umask(previous)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes and all(mode == 0o666 & ~umask for mode in modes.values()), modes


# ------------------------------------------------------------------------------------------------ --overwrite
def test_overwrite_replaces_a_model_folder_but_refuses_foreign_files(tmp_path):
    target = tmp_path / "out"
    convert_checkpoint(fixture_path("tiny_official.pth"), target)
    assert convert_checkpoint(fixture_path("tiny_official_reparam.safetensors"), target, overwrite=True) == target
    assert json.loads((target / "config.json").read_text())["reparameterized"] is True

    (target / "my_notes.txt").write_text("mine")
    (target / "runs").mkdir()
    before = folder_hashes(target)
    code = cli_main(["convert", str(fixture_path("tiny_official.pth")), str(target), "--overwrite"])
    assert code == 1
    with pytest.raises(FileExistsError, match=r"does not write: my_notes.txt, runs/"):
        convert_checkpoint(fixture_path("tiny_official.pth"), target, overwrite=True)
    assert folder_hashes(target) == before and (target / "runs").is_dir()
    assert hidden_siblings(tmp_path) == []


# ------------------------------------------------------------------------------------------------ model card
def test_card_states_the_input_file_and_its_checksum_only():
    card = (converted_tiny_folder() / "README.md").read_text()
    digest = hashlib.sha256(fixture_path("tiny_official.pth").read_bytes()).hexdigest()
    assert f"converted from the checkpoint `tiny_official.pth` (SHA-256 `{digest}`)" in card
    assert "This checksum was not compared with the files of the official" in card
    assert "official checkpoint" not in card and "checks the converted model against" not in card
    assert "bit for bit" in card  # the writer's measured reload check


# ------------------------------------------------------------------------------------------------ pre-push check
def test_check_model_folder_rejects_weights_that_do_not_fit_the_config(tmp_path):
    folder = convert_checkpoint(fixture_path("tiny_official.pth"), tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    config["projection_dim"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model.safetensors does not fit .*config.json.*classifier"):
        check_model_folder(folder)


# ------------------------------------------------------------------------------------------------ reparameterize
def test_reparameterize_cli_round_trip(tmp_path):
    plain_folder = converted_tiny_folder()
    out = tmp_path / "folded"
    assert cli_main(["reparameterize", str(plain_folder), str(out)]) == 0
    plain = OverLoCKForImageClassification.from_pretrained(plain_folder).eval()
    folded = OverLoCKForImageClassification.from_pretrained(out).eval()
    assert folded.config.reparameterized and not plain.config.reparameterized
    assert not any(".branches." in key for key in folded.state_dict())
    pixels = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = plain(pixel_values=pixels).logits, folded(pixel_values=pixels).logits
    assert float((expected - got).abs().max()) <= 1e-5 * float(expected.abs().max())
    card = (out / "README.md").read_text()
    assert f"`{plain_folder.name}/model.safetensors` (SHA-256 `" in card and "re-parameterized" in card
    assert cli_main(["reparameterize", str(out), str(tmp_path / "again")]) == 1  # already folded
    assert not (tmp_path / "again").exists()


# ------------------------------------------------------------------------------------------------ variants
def test_from_variant_builds_the_released_head_with_imagenet_labels():
    labels = json.loads(fixture_path("imagenet1k_id2label.json").read_text())
    config = OverLoCKConfig.from_variant("overlock-xt")
    assert config.num_labels == 1000 and config.variant == "overlock-xt" and config.crop_pct == 0.925
    assert config.id2label == {int(k): v for k, v in labels.items()}
    assert config.label2id["tench, Tinca tinca"] == 0
    with torch.device("meta"):
        assert OverLoCKForImageClassification(config).classifier.fc.out_features == 1000
    few = OverLoCKConfig.from_variant("t", num_labels=3)
    assert few.num_labels == 3 and few.id2label[0] != "tench, Tinca tinca"
    named = OverLoCKConfig.from_variant("s", id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    assert named.num_labels == 2 and named.id2label == {0: "cat", 1: "dog"}


@pytest.mark.parametrize("spelling", ["overlock-xt", "overlock_xt", "xt", "OverLoCK-XT", " XT "])
def test_variant_spellings(spelling):
    assert normalize_variant_name(spelling) == "overlock-xt"


def test_misspelled_variant_suggests_the_name():
    with pytest.raises(ValueError, match=r"did you mean 'overlock-xt'"):
        OverLoCKConfig.from_variant("overlok-xt")
    with pytest.raises(ValueError, match=r"Unknown OverLoCK variant 'resnet50': known variants: overlock-xt"):
        normalize_variant_name("resnet50")
    with pytest.raises(SystemExit):
        cli_main(["convert", "x.pth", "out", "--variant", "overlock-xx"])
