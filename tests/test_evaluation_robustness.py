"""`overlock-hf robustness`: Table H's shape, one row per model (OverLoCK next to a transformers peer), the same
numbers as `evaluate`; MAC counting; bf16 autocast."""

import json

import pytest
import torch
from transformers import ConvNextConfig, ConvNextForImageClassification

from _evaluation_helpers import (
    EXPECTED_TOP1,
    EXPECTED_TOP5,
    encoded_images,
    model_logits,
    place_labels,
    scratch_dir,
    subset,
    tiny_model_folder,
    wnid_name,
    write_folder,
)
from overlock_hf.analysis import evaluate
from overlock_hf.analysis.robustness import count_gmacs
from overlock_hf.cli import main


@pytest.fixture(scope="module")
def peer_folder():
    """A tiny random ConvNeXt with 1000 classes and no image processor (the fallback transform)."""
    torch.manual_seed(0)
    config = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=1000)
    folder = scratch_dir("peer") / "convnext-tiny-random"
    ConvNextForImageClassification(config).save_pretrained(folder)
    return folder


def test_robustness_table(tmp_path, peer_folder):
    overlock = tiny_model_folder(1000)
    images = encoded_images(seed=7)
    logits = model_logits(overlock, images)
    imagenet = write_folder(tmp_path / "val", images, place_labels(logits), wnid_name)
    rendition = write_folder(tmp_path / "r", images, place_labels(logits, subset("imagenet-r")), wnid_name)
    output, markdown = tmp_path / "table.json", tmp_path / "table.md"
    code = main(["robustness", str(overlock), str(peer_folder), "--imagenet", str(imagenet), "--imagenet-r",
                 str(rendition), "--num-workers", "0", "--no-progress", "--output", str(output),
                 "--markdown", str(markdown)])
    assert code == 0
    document = json.loads(output.read_text())
    assert document["benchmarks"] == ["imagenet", "imagenet-r"]
    first, second = document["rows"]
    assert [row["model"] for row in document["rows"]] == [str(overlock), str(peer_folder)]
    for name in ("imagenet", "imagenet-r"):
        assert (first["results"][name]["top1"], first["results"][name]["top5"]) == (EXPECTED_TOP1, EXPECTED_TOP5)
    peer = evaluate(peer_folder, rendition, "imagenet-r", num_workers=0, progress=False)
    assert second["results"]["imagenet-r"]["top1"] == peer["top1"]
    assert "no image processor" in peer["preprocessing"]
    assert first["gflops"] > 0 and first["params_m"] > 0
    lines = markdown.read_text().splitlines()
    assert lines[0] == "| Model | Params (M) | GFLOPs | 1K | R |"
    assert lines[2].startswith(f"| {overlock} | {first['params_m']:.1f} | {first['gflops']:.2f} | 40.0 | 40.0 |")
    assert len(lines) == 4


def test_robustness_checks_every_set_before_running(tmp_path, capsys):
    overlock = tiny_model_folder(1000)
    good = write_folder(tmp_path / "val", encoded_images(2), [0, 1], wnid_name)
    bad = write_folder(tmp_path / "v2", encoded_images(2), [0, 1], wnid_name)  # wnid folders given as V2
    code = main(["robustness", str(overlock), "--imagenet", str(good), "--imagenet-v2", str(bad), "--no-progress",
                 "--output", str(tmp_path / "t.json")])
    assert code == 1 and "class indices 0..999" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, pixel_values):
        return self.conv(pixel_values)


def test_gmacs_count_multiply_accumulates():
    assert count_gmacs(_Conv(), 32) == pytest.approx(8 * 3 * 9 * 32 * 32 / 1e9)


def test_bf16_autocast_on_cpu(tmp_path):
    model = tiny_model_folder(1000)
    root = write_folder(tmp_path, encoded_images(3), [0, 1, 2], wnid_name)
    result = evaluate(model, root, "imagenet", bf16=True, device="cpu", num_workers=0, progress=False)
    assert (result["precision"], result["num_images"]) == ("bf16 autocast", 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_matches_float32(tmp_path):
    model = tiny_model_folder(1000)
    images = encoded_images()
    root = write_folder(tmp_path, images, place_labels(model_logits(model, images)), wnid_name)
    result = evaluate(model, root, "imagenet", device="cuda", num_workers=2, progress=False)
    assert (result["top1"], result["top5"], result["device"]) == (EXPECTED_TOP1, EXPECTED_TOP5, "cuda")
    half = evaluate(model, root, "imagenet", device="cuda", bf16=True, num_workers=2, progress=False)
    assert half["num_images"] == 10 and abs(half["top1"] - result["top1"]) <= 20.0
