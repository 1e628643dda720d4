"""Ablation presets (OverLoCK supplement, Tables A-F): each builds, trains, round-trips and runs as Hub code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from overlock_hf import OverLoCKBackbone, OverLoCKConfig, OverLoCKForImageClassification
from overlock_hf.analysis import ablation_rows, ablations_to_markdown
from overlock_hf.configuration_overlock import ABLATIONS
from overlock_hf.contmix import ContMix
from overlock_hf.training.models import build_model
from overlock_hf.modeling_overlock import (
    OverLoCKContMixer,
    OverLoCKContMixLinear,
    OverLoCKDynamicConvBlock,
    OverLoCKRepConvBlock,
    OverLoCKStaticMixer,
)
from test_remote_code import _plain_site_packages

# Small sizes for every preset; a preset's own fields win (except the hierarchical preset's full widths).
TINY = dict(depths=[1, 1, 1, 1], focus_depths=[1, 1], hidden_sizes=[16, 24, 32, 48], focus_num_heads=[1, 2],
            projection_dim=32, kernel_sizes=[7, 7, 7, 7], context_pool_size=3, num_labels=3)


def tiny_ablation(name: str) -> OverLoCKConfig:
    keep = set(ABLATIONS[name]["fields"]) - {"hidden_sizes"}
    return OverLoCKConfig.from_ablation(name, **{k: v for k, v in TINY.items() if k not in keep})


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_preset_trains_and_round_trips(name, tmp_path):
    torch.manual_seed(0)
    model = OverLoCKForImageClassification(tiny_ablation(name)).train()
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    outputs = model(pixel_values, labels=labels)
    outputs.loss.backward()
    without_grad = {n for n, p in model.named_parameters() if p.grad is None}
    expected = {n for n, _ in model.named_parameters() if n.startswith("aux_classifier.")} if name == "aux-0" else set()
    assert without_grad == expected
    assert model.config.ablation == name and model.config.matching_variant() is None
    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = OverLoCKForImageClassification.from_pretrained(tmp_path).eval()
    assert {k: getattr(reloaded.config, k) for k in ABLATIONS[name]["fields"]} == {
        k: getattr(model.config, k) for k in ABLATIONS[name]["fields"]}
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values).logits, model(pixel_values).logits)


CHILD = r'''
import json, sys
sys.path.extend(json.loads(sys.argv[1]))
import importlib.util
if importlib.util.find_spec("overlock_hf") is not None:
    sys.exit(3)
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification
pixel_values = load_file(sys.argv[3])["pixel_values"]
logits = {}
for name, folder in json.loads(sys.argv[2]).items():
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        logits[name] = model(pixel_values).logits
save_file(logits, sys.argv[4])
'''


def test_every_preset_loads_as_hub_code_without_the_package(tmp_path):
    pixel_values = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    folders, expected = {}, {}
    for name in ABLATIONS:
        model = OverLoCKForImageClassification(tiny_ablation(name)).eval()
        model.save_pretrained(tmp_path / name)
        folders[name] = str(tmp_path / name)
        with torch.no_grad():
            expected[name] = model(pixel_values).logits
    save_file({"pixel_values": pixel_values}, tmp_path / "inputs.safetensors")
    (tmp_path / "child.py").write_text(CHILD)
    command = [sys.executable, "-I", "-S", str(tmp_path / "child.py"), json.dumps(_plain_site_packages()),
               json.dumps(folders), str(tmp_path / "inputs.safetensors"), str(tmp_path / "out.safetensors")]
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    logits = load_file(tmp_path / "out.safetensors")
    for name in ABLATIONS:
        assert torch.equal(logits[name], expected[name]), name


def _modules(name, kind):
    config = OverLoCKConfig.from_ablation(name, reparameterized=True, num_labels=1000)
    with torch.device("meta"):
        model = OverLoCKForImageClassification(config)
    return [m for m in model.modules() if isinstance(m, kind)], model


def test_presets_change_what_they_say():
    blocks, model = _modules("hierarchical", (OverLoCKRepConvBlock, OverLoCKDynamicConvBlock))
    per_stage = [len(stage.blocks) + len(stage.dynamic_blocks) for stage in model.overlock.stages]
    assert per_stage == [2, 2, 9, 4] and model.aux_classifier is None and model.config.context_dim == 0
    with pytest.raises(ValueError, match="hierarchical"):
        OverLoCKBackbone(tiny_ablation("hierarchical"))
    assert not _modules("static-baseline", ContMix)[0] and len(_modules("static-baseline", OverLoCKStaticMixer)[0]) == 8
    assert all(b.lepe is None for b in _modules("no-repconv", OverLoCKDynamicConvBlock)[0])
    assert len(_modules("no-softmax", OverLoCKContMixLinear)[0]) == 8
    mixers = _modules("reverse-qk", OverLoCKContMixer)[0]
    assert mixers[0].query[0].in_channels == 84 and mixers[0].key[0].in_channels == 256
    assert all(m.small_kernel_size == m.kernel_size for m in _modules("no-small-kernel", OverLoCKContMixer)[0])
    with pytest.raises(ValueError, match="Unknown OverLoCK ablation preset 'nope'"):
        OverLoCKConfig.from_ablation("nope")


def test_finetuning_model_option_accepts_presets():
    model = build_model("kernels-7-7-7", ["a", "b"])
    assert model.config.ablation == "kernels-7-7-7" and model.config.kernel_sizes == [7, 7, 7, 7]
    assert model.config.num_labels == 2


def test_preset_table_against_the_paper():
    """Table A and F rows within 0.2 M params and 0.15 GMACs of the paper wherever the package data has the
    paper's figure (the reference row, OverLoCK-XT, always has)."""
    rows = ablation_rows(progress=False, tables="AF")
    assert [r["model"] for r in rows] == ["overlock-xt", *(n for n, s in ABLATIONS.items() if s["table"] in "AF")]
    checked = [r for r in rows if r["paper_params_m"] is not None]
    assert checked and checked[0]["model"] == "overlock-xt"
    for row in checked:
        assert abs(row["diff_params_m"]) <= 0.2, row
        assert abs(row["diff_gmacs"]) <= 0.15, row
    assert "| A | kernels-19-17-15 |" in ablations_to_markdown(rows)
