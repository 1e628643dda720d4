"""`overlock_hf.analysis.evaluate` on every benchmark layout: exact top-1 / top-5 from labels placed by the model's
own predictions (kind i % 3: right, third guess, wrong -> 40% / 70%)."""

import json
import re
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

from _evaluation_helpers import (
    CUSTOM_LABELS,
    EXPECTED_TOP1,
    EXPECTED_TOP5,
    encoded_images,
    expected_accuracy,
    model_logits,
    place_labels,
    scratch_dir,
    subset,
    tiny_model_folder,
    wnid_name,
    write_folder,
)
from conftest import REPO_ROOT
from overlock_hf import OverLoCKImageProcessor
from overlock_hf.analysis import evaluate
from overlock_hf.analysis.data import CenterCropTransform
from overlock_hf.analysis.labels import imagenet_wnids, subset_indices
from overlock_hf.cli import build_parser, main

RUN = dict(batch_size=4, num_workers=0, progress=False)


@pytest.fixture(scope="module")
def imagenet_model():
    return tiny_model_folder(1000)


@pytest.fixture(scope="module")
def png_images():
    return encoded_images()


@pytest.fixture(scope="module")
def png_logits(imagenet_model, png_images):
    return model_logits(imagenet_model, png_images)


def test_label_sets_are_the_public_lists():
    source = "/work/shared/data/imagenet"
    assert list(imagenet_wnids()) == open(f"{source}/imagenet_synsets.txt").read().split()
    for name in ("a", "r"):
        indices = [int(v) for v in open(f"{source}/imagenet_{name}_indices.txt").read().split()]
        assert list(subset_indices(f"imagenet-{name}")) == indices
        assert [imagenet_wnids()[i] for i in indices] == open(f"{source}/imagenet_{name}_synsets.txt").read().split()


@pytest.mark.parametrize("benchmark", ["imagenet", "imagenet-sketch"])
def test_wnid_folders(imagenet_model, png_images, png_logits, benchmark, tmp_path):
    labels = place_labels(png_logits)
    write_folder(tmp_path, png_images, labels, wnid_name)
    output = tmp_path / "result.json"
    result = evaluate(imagenet_model, tmp_path, benchmark, output=output, **RUN)
    assert (result["top1"], result["top5"], result["num_images"]) == (EXPECTED_TOP1, EXPECTED_TOP5, 10)
    written = json.loads(output.read_text())
    assert {k: written[k] for k in ("top1", "top5", "num_images", "benchmark", "image_size", "model")} == {
        "top1": EXPECTED_TOP1, "top5": EXPECTED_TOP5, "num_images": 10, "benchmark": benchmark,
        "image_size": 224, "model": str(imagenet_model)}


def test_sketch_jpeg_files_with_upper_case_suffix(imagenet_model, tmp_path):
    images = encoded_images(seed=3, fmt="JPEG")
    labels = place_labels(model_logits(imagenet_model, images))
    write_folder(tmp_path, images, labels, wnid_name, suffix=".JPEG")
    result = evaluate(imagenet_model, tmp_path, "imagenet-sketch", **RUN)
    assert (result["top1"], result["top5"]) == (EXPECTED_TOP1, EXPECTED_TOP5)


def test_v2_folders_are_mapped_by_integer_value(imagenet_model, png_images, png_logits, tmp_path):
    labels = place_labels(png_logits)
    assert max(labels) >= 100  # string order ('100' < '2') would mislabel these
    write_folder(tmp_path, png_images, labels, str)
    result = evaluate(imagenet_model, tmp_path, "imagenet-v2", **RUN)
    assert (result["top1"], result["top5"]) == (EXPECTED_TOP1, EXPECTED_TOP5)


@pytest.mark.parametrize("benchmark", ["imagenet-a", "imagenet-r"])
def test_subset_masking(imagenet_model, png_images, png_logits, benchmark, tmp_path):
    allowed = subset(benchmark)
    labels = place_labels(png_logits, allowed)
    write_folder(tmp_path, png_images, labels, wnid_name)
    masked = evaluate(imagenet_model, tmp_path, benchmark, **RUN)
    assert (masked["top1"], masked["top5"]) == (EXPECTED_TOP1, EXPECTED_TOP5)
    assert masked["logit_mask"] == f"200 classes of {benchmark}"
    unmasked = evaluate(imagenet_model, tmp_path, benchmark, mask_subset=False, **RUN)
    assert (unmasked["top1"], unmasked["top5"]) == expected_accuracy(png_logits, labels)
    assert (unmasked["top1"], unmasked["top5"]) != (masked["top1"], masked["top5"])


def test_custom_folder_by_label2id(png_images, tmp_path):
    model = tiny_model_folder(10)
    labels = place_labels(model_logits(model, png_images))
    write_folder(tmp_path, png_images, labels, lambda index: CUSTOM_LABELS[index])
    result = main(["evaluate", str(model), str(tmp_path), "--benchmark", "folder", "--num-workers", "1",
                   "--batch-size", "3", "--no-progress", "--output", str(tmp_path / "r.json")])
    assert result == 0
    written = json.loads((tmp_path / "r.json").read_text())
    assert (written["top1"], written["top5"], written["num_classes"]) == (EXPECTED_TOP1, EXPECTED_TOP5, 10)


@pytest.mark.parametrize("layout", ["wnid-classlabel", "v2-imagefolder-classlabel", "a-integer"])
def test_datasets_folders(imagenet_model, png_images, png_logits, layout, tmp_path):
    datasets = pytest.importorskip("datasets")
    benchmark = {"wnid-classlabel": "imagenet-r", "v2-imagefolder-classlabel": "imagenet-v2",
                 "a-integer": "imagenet-a"}[layout]
    allowed = subset(benchmark) if benchmark != "imagenet-v2" else None
    labels = place_labels(png_logits, allowed)
    if layout == "wnid-classlabel":
        names = [wnid_name(i) for i in allowed]
        feature, values = datasets.ClassLabel(names=names), [names.index(wnid_name(label)) for label in labels]
    elif layout == "v2-imagefolder-classlabel":  # `imagefolder` sorts the folder names as strings
        names = sorted(str(i) for i in range(1000))
        feature, values = datasets.ClassLabel(names=names), [names.index(str(label)) for label in labels]
    else:
        feature, values = datasets.Value("int64"), [allowed.index(label) for label in labels]
    features = datasets.Features({"image": datasets.Image(), "label": feature})
    rows = {"image": [{"bytes": data, "path": None} for data in png_images], "label": values}
    dataset = datasets.Dataset.from_dict(rows, features=features)
    if layout == "a-integer":  # a Parquet folder, as a Hub repo clone has it
        (tmp_path / "ds" / "data").mkdir(parents=True)
        dataset.to_parquet(str(tmp_path / "ds" / "data" / "test-00000-of-00001.parquet"))
    else:
        dataset.save_to_disk(str(tmp_path / "ds"))
    result = evaluate(imagenet_model, tmp_path / "ds", benchmark, **RUN)
    assert (result["top1"], result["top5"]) == (EXPECTED_TOP1, EXPECTED_TOP5)


def test_limit_spreads_over_the_set(imagenet_model, png_images, png_logits, tmp_path):
    labels = place_labels(png_logits)
    write_folder(tmp_path, png_images, labels, wnid_name)
    result = evaluate(imagenet_model, tmp_path, "imagenet", limit=5, **RUN)
    # images 0, 2, 4, 6, 8 (sorted by class folder, then name): recount from their placement
    order = sorted(range(10), key=lambda i: (wnid_name(labels[i]), i))
    chosen = [order[k * 10 // 5] for k in range(5)]
    expected = expected_accuracy(png_logits[chosen], [labels[i] for i in chosen])
    assert (result["num_images"], result["top1"], result["top5"]) == (5, *expected)


def test_center_crop_transform_equals_the_exact_processor():
    processor = OverLoCKImageProcessor(size={"shortest_edge": 224}, crop_pct=0.925)
    transform = CenterCropTransform(224, 0.925)
    rng = np.random.default_rng(1)
    for shape in [(100, 130, 3), (131, 97, 3), (256, 256, 3)]:
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        ours = (transform(image).float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
            / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        reference = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert ours.shape == (3, 224, 224)
        assert torch.allclose(ours, reference, atol=1e-5)


def _pixels_384(image: Image.Image) -> torch.Tensor:
    """Reference 384 transform (crop_pct 1.0): shorter side to 384 (bicubic), center crop, ImageNet normalize."""
    width, height = image.size
    size = (384, int(384 * height / width)) if width <= height else (int(384 * width / height), 384)
    image = image.resize(size, Image.BICUBIC)
    left, top = round((size[0] - 384) / 2), round((size[1] - 384) / 2)
    array = np.asarray(image.crop((left, top, left + 384, top + 384)), dtype=np.float32) / 255
    array = (array - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)


def test_384_resolution(imagenet_model, png_images):
    logits = model_logits(imagenet_model, png_images, pixel_fn=_pixels_384)
    labels = place_labels(logits)
    root = write_folder(scratch_dir("384"), png_images, labels, wnid_name)
    result = evaluate(imagenet_model, root, "imagenet", image_size=384, **RUN)
    assert (result["image_size"], result["crop_pct"]) == (384, 1.0)
    assert (result["top1"], result["top5"]) == (EXPECTED_TOP1, EXPECTED_TOP5)


def test_documented_commands_parse():
    """Every `overlock-hf evaluate|robustness` command in docs/evaluation.md and the README uses existing flags."""
    commands = []
    for page in (REPO_ROOT / "docs" / "evaluation.md", REPO_ROOT / "README.md"):
        text = page.read_text().replace("\\\n", " ")
        commands += re.findall(r"(?:overlock-hf|overlock_hf\.cli) ((?:evaluate|robustness) [^`\n|#]*)", text)
    commands = [c for c in commands if "MODEL" not in c and ("--benchmark" in c or c.startswith("robustness"))]
    assert len(commands) >= 12
    for command in commands:
        build_parser().parse_args(shlex.split(command))


def test_hub_imagenet_names_are_read_by_integer_label(tmp_path):
    """The Hub's ImageNet-1K / -Sketch label names are human-readable, not wnids: read by integer value."""
    datasets = pytest.importorskip("datasets")
    from types import SimpleNamespace

    from overlock_hf.analysis.data import load_samples
    from overlock_hf.analysis.evaluation import sample_labels
    from overlock_hf.configuration_overlock import imagenet1k_id2label

    names = list(imagenet1k_id2label().values())
    names[517] = "crane (machine)"  # `datasets` wants unique names; the official list has "crane" twice
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    rows = {"image": [{"bytes": data, "path": None} for data in encoded_images(3)], "label": [517, 134, 0]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    config = SimpleNamespace(num_labels=1000, label2id={})
    assert sample_labels(load_samples(tmp_path / "ds"), "imagenet-sketch", config) == ([517, 134, 0],
                                                                                       "integer labels")
