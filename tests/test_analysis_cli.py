"""`overlock-hf cam` and `overlock-hf erf` on tiny models: the PNGs are readable, of the expected size and not
blank; the raw maps and tables are complete."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from _shared import random_images, tiny_config
from overlock_hf import OverLoCKForImageClassification
from overlock_hf.cli import main
from overlock_hf.image_processing_overlock import save_image_processor


def assert_picture(path, size):
    """A readable PNG of `size` (width, height) pixels with real content (many colours, not one flat tone)."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size, (path, image.size)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10, f"{path} looks blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100, f"{path} has too few colours"


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "overlock-tiny"
    torch.manual_seed(0)
    config = tiny_config(id2label={i: f"class_{i}" for i in range(10)}, label2id={f"class_{i}": i for i in range(10)})
    OverLoCKForImageClassification(config).save_pretrained(folder)
    save_image_processor(folder, crop_pct=0.875, image_size=64)
    return folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i, image in enumerate(random_images(12, seed=3)):
        sub = root / f"class_{i % 3}"
        sub.mkdir(exist_ok=True)
        image.save(sub / f"image_{i}.png")
    return root


def test_cam_command(tiny_classifier, image_folder, tmp_path):
    single = next((image_folder / "class_0").iterdir())
    out = tmp_path / "cam"
    argv = ["cam", str(tiny_classifier), str(single), str(image_folder / "class_1"), "--output", str(out),
            "--image-size", "64", "--batch-size", "3"]
    assert main(argv) == 0
    summary = json.loads((out / "cam_maps.json").read_text())
    assert len(summary["images"]) == 5  # one file and a folder of four
    for entry in summary["images"]:
        assert_picture(out / entry["figure"], (900, 340))
        assert entry["label"] == f"class_{entry['target']}" and 0 < entry["probability"] < 1
    assert_picture(out / "cam_grid.png", (900, 310 * 5))
    maps = load_file(out / "cam_maps.safetensors")
    assert maps["focus"].shape == maps["overview"].shape == (5, 64, 64)
    assert float(maps["focus"].amax()) == pytest.approx(1.0) and float(maps["focus"].amin()) >= 0
    assert main(argv + ["--target", "class_7", "--output", str(tmp_path / "cam7")]) == 0
    chosen = json.loads((tmp_path / "cam7" / "cam_maps.json").read_text())["images"]
    assert {entry["target"] for entry in chosen} == {7}


def test_cam_command_errors(tiny_classifier, tmp_path, capsys):
    assert main(["cam", str(tiny_classifier), str(tmp_path / "missing.png"), "--output", str(tmp_path)]) == 1
    assert "no such image or folder" in capsys.readouterr().err


def test_erf_command(tiny_classifier, image_folder, tmp_path):
    from transformers import AutoModel, ConvNextConfig

    peer = tmp_path / "convnext-tiny-random"
    torch.manual_seed(0)
    AutoModel.from_config(ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])).save_pretrained(peer)
    out = tmp_path / "erf"
    argv = ["erf", str(tiny_classifier), str(peer), str(image_folder), "--num-images", "6", "--image-size", "64",
            "--output", str(out)]
    assert main(argv) == 0
    for name in ("overlock-tiny", "convnext-tiny-random"):
        assert_picture(out / f"{name}_erf.png", (440, 380))
    assert_picture(out / "erf_all.png", (800, 380))
    maps = load_file(out / "erf_maps.safetensors")
    assert set(maps) == {"overlock-tiny", "convnext-tiny-random"}
    assert all(m.shape == (64, 64) and float(m.sum()) > 0 for m in maps.values())
    table = json.loads((out / "erf_area_ratios.json").read_text())
    assert table["num_images"] == 6 and table["thresholds"] == [0.2, 0.3, 0.5, 0.99]
    for ratios in table["area_ratios"].values():
        values = [ratios[str(t)] for t in table["thresholds"]]
        assert all(0 < v <= 1 for v in values) and values == sorted(values)
    markdown = (out / "erf_area_ratios.md").read_text()
    assert "| overlock-tiny |" in markdown and "| convnext-tiny-random |" in markdown
    assert main(argv[:4] + ["--num-images", "50", "--output", str(tmp_path / "e2")]) == 1  # only 12 images


def test_erf_samples_at_random_with_a_seed(tiny_classifier, image_folder, tmp_path):
    """The sample spreads over the class folders (not the first folder's images) and the seed fixes it."""
    samples = []
    for run, seed in enumerate((0, 0, 1)):
        out = tmp_path / f"erf{run}"
        argv = ["erf", str(tiny_classifier), str(image_folder), "--num-images", "6", "--image-size", "32",
                "--seed", str(seed), "--output", str(out)]
        assert main(argv) == 0
        samples.append(json.loads((out / "erf_area_ratios.json").read_text())["sample"])
    assert len(set(samples[0])) == 6 and len({i // 4 for i in samples[0]}) > 1  # sorted files: four per class
    assert samples[0] == samples[1] and samples[0] != samples[2]


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    import sys

    from overlock_hf.analysis._optional import require

    for name in ("captum", "captum.attr"):  # None in sys.modules makes the import raise ImportError,
        monkeypatch.setitem(sys.modules, name, None)  # also when an earlier test imported it already
    with pytest.raises(ImportError, match=r"overlock-hf\[analysis\]"):
        require("captum.attr")


def test_erf_on_a_saved_dataset(tiny_classifier, tmp_path):
    import datasets

    images = random_images(5, seed=4)
    dataset = datasets.Dataset.from_dict({"image": images, "label": list(range(5))},
                                         features=datasets.Features(image=datasets.Image(),
                                                                    label=datasets.Value("int64")))
    dataset.save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "erf"
    assert main(["erf", str(tiny_classifier), str(tmp_path / "data"), "--num-images", "4", "--image-size", "32",
                 "--output", str(out)]) == 0
    assert load_file(out / "erf_maps.safetensors")["overlock-tiny"].shape == (32, 32)
