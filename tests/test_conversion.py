"""Conversion of official checkpoints: key-mapping bijection for every released layout, folders, error paths."""

import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import fixture_path
from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification
from overlock_hf.checkpoint_mapping import (
    CheckpointError,
    config_from_official_state_dict,
    convert_official_state_dict,
    unwrap_state_dict,
)
from overlock_hf.conversion import convert_checkpoint

# ARCHITECTURE.md section 2: parameters in millions (plain / reparam)
SPEC_PARAMS = {
    "overlock_xt": (17.31, 16.79),
    "overlock_t": (34.99, 33.98),
    "overlock_s": (58.31, 56.67),
    "overlock_b": (98.01, 95.52),
}


@pytest.fixture(scope="module")
def official_shapes():
    return json.loads(fixture_path("official_state_dict_shapes.json").read_text())


@pytest.mark.parametrize("variant", sorted(SPEC_PARAMS))
@pytest.mark.parametrize("layout", ["plain", "reparam"])
def test_key_mapping_is_a_bijection(official_shapes, variant, layout):
    shapes = official_shapes[variant][layout]
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    config = config_from_official_state_dict(state)
    assert config.matching_variant() == variant.replace("_", "-")
    assert config.reparameterized == (layout == "reparam")
    with torch.device("meta"):
        model = OverLoCKForImageClassification(config)
    expected = model.state_dict()
    converted = convert_official_state_dict(state, config, expected)  # raises on any missing/extra/mis-shaped key
    assert set(converted) == set(expected)
    assert len(converted) == len(state)  # nothing dropped, nothing invented (num_batches_tracked included)
    n_params = sum(p.numel() for p in model.parameters())
    official = sum(math.prod(s) for k, s in shapes.items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n_params == official
    assert round(n_params / 1e6, 2) == SPEC_PARAMS[variant][layout == "reparam"]


def test_variant_configs_build_the_released_architectures(official_shapes):
    for variant in SPEC_PARAMS:
        config = OverLoCKConfig.from_variant(variant.replace("_", "-"), num_labels=1000)
        with torch.device("meta"):
            model = OverLoCKForImageClassification(config)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == SPEC_PARAMS[variant][0]


# ------------------------------------------------------------------------------------------------ folders
@pytest.fixture(scope="module")
def converted_tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "overlock-tiny"
    convert_checkpoint(fixture_path("tiny_official.pth"), out)
    return out


def test_converted_folder_contents(converted_tiny):
    names = {p.name for p in converted_tiny.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md",
            "modeling_overlock.py", "configuration_overlock.py", "contmix.py"} <= names
    weights = load_file(converted_tiny / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    config = json.loads((converted_tiny / "config.json").read_text())
    assert config["model_type"] == "overlock"
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoBackbone"}
    assert config["variant"] is None  # the tiny architecture is not a released variant
    processor = json.loads((converted_tiny / "preprocessor_config.json").read_text())
    assert processor["crop_pct"] == pytest.approx(config["crop_pct"])
    assert processor["image_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert not [p for p in converted_tiny.parent.iterdir() if p.name.startswith(".")], "temp folder left behind"


def test_converted_folder_reproduces_reference(converted_tiny):
    reference = load_file(fixture_path("tiny_reference_outputs.safetensors"))
    model = OverLoCKForImageClassification.from_pretrained(converted_tiny).eval()
    with torch.no_grad():
        logits = model(reference["pixel_values"]).logits
    assert float((logits - reference["logits"]).abs().max()) <= 1e-4 * float(reference["logits"].abs().max())


@pytest.mark.parametrize("reparameterize", [False, True])
def test_save_pretrained_round_trip(converted_tiny, tmp_path, reparameterize):
    model = OverLoCKForImageClassification.from_pretrained(converted_tiny).eval()
    if reparameterize:
        model.reparameterize()
    model.save_pretrained(tmp_path)
    reloaded = OverLoCKForImageClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.reparameterized == reparameterize
    pixels = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, reloaded(pixels).logits)


def test_wrapped_prefixed_and_ema_checkpoints(tmp_path):
    state = torch.load(fixture_path("tiny_official.pth"), weights_only=True)
    ema = {k: v * 1.001 if v.is_floating_point() else v for k, v in state.items()}
    wrapped = {"model": {f"module.{k}": v for k, v in state.items()}, "state_dict_ema": ema, "epoch": 3}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    plain = convert_checkpoint(tmp_path / "wrapped.pth", tmp_path / "plain")
    with_ema = convert_checkpoint(tmp_path / "wrapped.pth", tmp_path / "ema", use_ema=True)
    w_plain, w_ema = load_file(plain / "model.safetensors"), load_file(with_ema / "model.safetensors")
    key = "overlock.embeddings.conv1.0.weight"
    assert torch.equal(w_plain[key], state["patch_embed1.0.weight"])
    assert torch.equal(w_ema[key], ema["patch_embed1.0.weight"])


# ------------------------------------------------------------------------------------------------ error paths
def _write_broken(tmp_path, edit):
    state = load_file(fixture_path("tiny_official.safetensors"))
    edit(state)
    path = tmp_path / "broken.safetensors"
    save_file(state, path)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("blocks2.0.proj.8.bias"), "missing keys.*blocks.0.fc2.bias"),
        (lambda s: s.__setitem__("blocks2.0.extra.weight", torch.zeros(3)), "unexpected keys.*blocks2.0.extra.weight"),
        (lambda s: s.__setitem__("head.1.weight", torch.zeros(7)), "mis-shaped keys.*head.1.weight"),
        (lambda s: s.pop("patch_embed2.0.weight"), "patch_embed2.0.weight"),
    ],
    ids=["missing", "unexpected", "mis-shaped", "not-overlock"],
)
def test_bad_checkpoints_fail_clearly_and_leave_nothing(tmp_path, edit, message):
    path = _write_broken(tmp_path, edit)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=message):
        convert_checkpoint(path, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.safetensors"]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        convert_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_and_mismatched_variant(tmp_path):
    with pytest.raises(CheckpointError, match="Unknown OverLoCK variant .overlock-z."):
        convert_checkpoint(fixture_path("tiny_official.pth"), tmp_path / "a", variant="overlock-z")
    with pytest.raises(CheckpointError, match="not overlock-t"):
        convert_checkpoint(fixture_path("tiny_official.pth"), tmp_path / "b", variant="overlock-t")
    with pytest.raises(ValueError, match="Unknown OverLoCK variant"):
        OverLoCKConfig.from_variant("overlock-xxl")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        convert_checkpoint(fixture_path("tiny_official.pth"), out)
    assert (out / "keep.txt").read_text() == "mine"


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        convert_checkpoint(tmp_path / "list.pth", tmp_path / "out")


def test_cli_convert_and_error(tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "overlock_hf.cli", "convert",
                           str(fixture_path("tiny_official_reparam.safetensors")), str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["reparameterized"] is True
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    failed = subprocess.run([sys.executable, "-m", "overlock_hf.cli", "convert", str(bad), str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert failed.returncode == 1
    assert "cannot read checkpoint" in failed.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("extra, crop_pct", [(["--image-size", "384"], 1.0),
                                             (["--image-size", "384", "--crop-pct", "0.9"], 0.9)])
def test_cli_convert_for_384_inputs(tmp_path, extra, crop_pct):
    """`convert --image-size 384` writes a processor that resizes and crops to 384 (Table G: crop_pct 1.0 default)."""
    from PIL import Image
    from transformers import AutoImageProcessor

    from overlock_hf.cli import main as cli_main

    out = tmp_path / "tiny-384"
    assert cli_main(["convert", str(fixture_path("tiny_official.pth")), str(out), *extra]) == 0
    assert OverLoCKConfig.from_pretrained(out).crop_pct == crop_pct
    processor = AutoImageProcessor.from_pretrained(out)
    pixels = processor(Image.new("RGB", (500, 375), (120, 30, 200)), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 384, 384)
    with torch.no_grad():
        assert OverLoCKForImageClassification.from_pretrained(out)(pixels).logits.isfinite().all()


def test_cli_convert_rejects_a_bad_crop_pct(tmp_path, capsys):
    from overlock_hf.cli import main as cli_main

    out = tmp_path / "never"
    assert cli_main(["convert", str(fixture_path("tiny_official.pth")), str(out), "--crop-pct", "1.5"]) == 1
    assert "crop_pct" in capsys.readouterr().err and not out.exists()
