"""A converted folder loads with `trust_remote_code=True` in a Python where `overlock_hf` is NOT importable.

The child process runs with `python -I -S`: no user site, no PYTHONPATH and no `.pth` processing, so the editable
install's path hook (a `.pth` file in site-packages) never runs; the site-packages folders are put on `sys.path`
by hand. The child checks `importlib.util.find_spec("overlock_hf") is None`, loads the folder through the Auto
classes and `pipeline(..., trust_remote_code=True)` offline and writes its outputs; this process compares them
with the installed package's, which must match exactly (same code, same weights, same input).

This needs the editable install that `make setup` makes: a regular (wheel) install puts `overlock_hf` itself in
site-packages, and the child then fails on purpose (exit code 3) rather than test the wrong thing.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from _shared import converted_tiny_folder, random_images
from conftest import REPO_ROOT
from overlock_hf import OverLoCKBackbone, OverLoCKForImageClassification, OverLoCKModel

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

CHILD_SCRIPT = r'''
import json
import sys
from pathlib import Path

site_packages, folder, inputs_path, outputs_path = json.loads(sys.argv[1]), *sys.argv[2:5]
sys.path.extend(site_packages)

import importlib.util

report = {"overlock_hf_spec": repr(importlib.util.find_spec("overlock_hf")), "sys_path": sys.path}
if importlib.util.find_spec("overlock_hf") is not None:
    Path(outputs_path + ".json").write_text(json.dumps(report))
    sys.exit(3)

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification, pipeline
from transformers.dynamic_module_utils import get_class_from_dynamic_module

pixel_values = load_file(inputs_path)["pixel_values"]
tensors = {}

config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
report["config_class"] = f"{type(config).__module__}.{type(config).__name__}"
report["model_type"] = config.model_type

classifier = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
report["classifier_class"] = f"{type(classifier).__module__}.{type(classifier).__name__}"
report["base_class"] = f"{type(base).__module__}.{type(base).__name__}"
with torch.no_grad():
    tensors["logits"] = classifier(pixel_values).logits
    tensors["last_hidden_state"] = base(pixel_values).last_hidden_state

# transformers 5.x: AutoBackbone.from_pretrained(<local folder>) calls the Hub's `repo_exists` first and fails;
# resolving the class from the folder's auto_map and calling its own from_pretrained works on every version.
backbone_class = get_class_from_dynamic_module(config.auto_map["AutoBackbone"], folder)
backbone = backbone_class.from_pretrained(folder, out_indices=[1, 2, 3, 4]).eval()
report["backbone_class"] = f"{backbone_class.__module__}.{backbone_class.__name__}"
report["backbone_channels"] = list(backbone.channels)
from_config = AutoBackbone.from_config(AutoConfig.from_pretrained(folder, trust_remote_code=True, out_indices=[2, 4]),
                                       trust_remote_code=True)
report["from_config_out_features"] = list(from_config.out_features)
with torch.no_grad():
    for i, feature in enumerate(backbone(pixel_values).feature_maps):
        tensors[f"feature_map_{i}"] = feature
if int(transformers.__version__.split(".")[0]) < 5:
    auto_backbone = AutoBackbone.from_pretrained(folder, trust_remote_code=True, out_indices=[1, 2, 3, 4]).eval()
    with torch.no_grad():
        for i, feature in enumerate(auto_backbone(pixel_values).feature_maps):
            tensors[f"auto_feature_map_{i}"] = feature

classify = pipeline("image-classification", model=folder, trust_remote_code=True)
report["pipeline"] = classify(json.loads(sys.argv[5]), top_k=3)
report["pipeline_model_class"] = type(classify.model).__module__

save_file({k: v.contiguous() for k, v in tensors.items()}, outputs_path)
Path(outputs_path + ".json").write_text(json.dumps(report))
'''


def _plain_site_packages() -> list[str]:
    """The interpreter's site-packages folders (what `.pth` files would add on top is deliberately left out)."""
    return [path for path in site.getsitepackages() if os.path.isdir(path)]


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """Run the child once; returns (folder, inputs, child tensors, child report, image paths)."""
    folder = converted_tiny_folder()
    work = tmp_path_factory.mktemp("remote")
    pixel_values = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    save_file({"pixel_values": pixel_values}, work / "inputs.safetensors")
    image_paths = []
    for i, image in enumerate(random_images(2, seed=1)):
        image.save(work / f"image{i}.png")
        image_paths.append(str(work / f"image{i}.png"))
    script = work / "child.py"
    script.write_text(CHILD_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    outputs = work / "outputs.safetensors"
    command = [sys.executable, "-I", "-S", str(script), json.dumps(_plain_site_packages()), str(folder),
               str(work / "inputs.safetensors"), str(outputs), json.dumps(image_paths)]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    report_path = work / "outputs.safetensors.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    assert result.returncode == 0, (
        f"child failed (rc {result.returncode}); overlock_hf spec in child: {report.get('overlock_hf_spec')}\n"
        f"{result.stderr[-4000:]}"
    )
    return folder, pixel_values, load_file(outputs), report, image_paths


def test_child_cannot_import_the_package(remote):
    _, _, _, report, _ = remote
    assert report["overlock_hf_spec"] == "None"
    assert str(REPO_ROOT / "src") not in report["sys_path"]
    for key in ("config_class", "classifier_class", "base_class", "backbone_class"):
        assert report[key].startswith("transformers_modules."), (key, report[key])
    assert report["pipeline_model_class"].startswith("transformers_modules.")
    assert report["model_type"] == "overlock"


def test_remote_classifier_and_base_model_match_exactly(remote):
    folder, pixel_values, tensors, _, _ = remote
    classifier = OverLoCKForImageClassification.from_pretrained(folder).eval()
    base = OverLoCKModel.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(tensors["logits"], classifier(pixel_values).logits)
        assert torch.equal(tensors["last_hidden_state"], base(pixel_values).last_hidden_state)


def test_remote_backbone_matches_exactly(remote):
    folder, pixel_values, tensors, report, _ = remote
    backbone = OverLoCKBackbone.from_pretrained(folder, out_indices=[1, 2, 3, 4]).eval()
    assert report["backbone_channels"] == backbone.channels
    assert report["from_config_out_features"] == ["base_stride8", "focus_stride32"]
    with torch.no_grad():
        expected = backbone(pixel_values).feature_maps
    prefixes = ["feature_map"] + (["auto_feature_map"] if TRANSFORMERS_MAJOR < 5 else [])
    for prefix in prefixes:
        for i, feature in enumerate(expected):
            assert torch.equal(tensors[f"{prefix}_{i}"], feature), f"{prefix}_{i}"


def test_remote_pipeline_matches_the_installed_package(remote):
    folder, _, _, report, image_paths = remote
    classify = transformers.pipeline("image-classification", model=str(folder))
    assert report["pipeline"] == classify(image_paths, top_k=3)
