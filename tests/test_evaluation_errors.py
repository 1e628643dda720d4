"""Every error case of `overlock-hf evaluate`: a clear message naming the cause, exit code 1, and no JSON."""

import json

import pytest

from _evaluation_helpers import encoded_images, scratch_dir, tiny_model_folder, wnid_name, write_folder
from overlock_hf.analysis import EvaluationError, evaluate
from overlock_hf.cli import main


@pytest.fixture(scope="module")
def imagenet_model():
    return tiny_model_folder(1000)


@pytest.fixture(scope="module")
def wnid_folder():
    """Four PNG images in the folders of ImageNet classes 0 and 500."""
    return write_folder(scratch_dir("wnid"), encoded_images(4), [0, 0, 500, 500], wnid_name)


def _fails(capsys, tmp_path, model, data, benchmark, *extra) -> str:
    output = tmp_path / "out" / "result.json"
    code = main(["evaluate", str(model), str(data), "--benchmark", benchmark, "--num-workers", "0", "--no-progress",
                 "--output", str(output), *extra])
    assert code == 1
    assert not output.exists() and not list(output.parent.glob("*"))  # no JSON, no temporary file
    return capsys.readouterr().err


def test_names_matching_no_class(capsys, tmp_path, imagenet_model, wnid_folder):
    error = _fails(capsys, tmp_path, imagenet_model, wnid_folder, "imagenet-v2")
    assert "none of the class names match class indices 0..999" in error
    assert "'n01440764'" in error and "--benchmark imagenet" in error


def test_v2_folders_under_a_wnid_benchmark(capsys, tmp_path, imagenet_model):
    root = write_folder(tmp_path / "v2", encoded_images(2), [7, 123], str)
    error = _fails(capsys, tmp_path, imagenet_model, root, "imagenet")
    assert "'123'" in error and "--benchmark imagenet-v2" in error


def test_wnid_outside_the_200_subset(capsys, tmp_path, imagenet_model, wnid_folder):
    error = _fails(capsys, tmp_path, imagenet_model, wnid_folder, "imagenet-a")
    assert "of the class names match the 200 wnids of ImageNet-A" in error and wnid_name(0) in error


def test_custom_names_not_in_label2id(capsys, tmp_path):
    root = write_folder(tmp_path / "custom", encoded_images(3), [0, 1, 2],
                        lambda i: ["apple", "zebra", "bee"][i])
    error = _fails(capsys, tmp_path, tiny_model_folder(10), root, "folder")
    assert "1 of 3 of the class names match the model's labels" in error and "'zebra'" in error


def test_empty_data_sets(capsys, tmp_path, imagenet_model):
    (tmp_path / "empty" / wnid_name(0)).mkdir(parents=True)
    (tmp_path / "empty" / wnid_name(0) / "notes.txt").write_text("not an image")
    assert "empty data set: no images" in _fails(capsys, tmp_path, imagenet_model, tmp_path / "empty", "imagenet")
    (tmp_path / "flat").mkdir()
    write_folder(tmp_path / "flat", encoded_images(1), [0], lambda i: ".")
    error = _fails(capsys, tmp_path, imagenet_model, tmp_path / "flat", "imagenet")
    assert "flat" in error  # images without class folders are no data set either


def test_missing_data_folder(capsys, tmp_path, imagenet_model):
    assert "data not found" in _fails(capsys, tmp_path, imagenet_model, tmp_path / "nowhere", "imagenet")


def test_model_without_1000_classes(capsys, tmp_path, wnid_folder):
    error = _fails(capsys, tmp_path, tiny_model_folder(10), wnid_folder, "imagenet")
    assert "needs a model with the 1000 ImageNet-1K classes; this model has 10" in error


def test_output_is_a_folder_fails_before_the_run(capsys, tmp_path, imagenet_model, wnid_folder):
    code = main(["evaluate", str(imagenet_model), str(wnid_folder), "--benchmark", "imagenet", "--no-progress",
                 "--output", str(tmp_path)])
    assert code == 1 and "is a folder" in capsys.readouterr().err


def test_corrupt_image_stops_or_is_skipped(capsys, tmp_path, imagenet_model):
    root = write_folder(tmp_path / "data", encoded_images(4), [0, 0, 500, 500], wnid_name)
    bad = root / wnid_name(500) / "broken.png"
    bad.write_bytes(encoded_images(1)[0][:60])  # truncated PNG
    error = _fails(capsys, tmp_path, imagenet_model, root, "imagenet")
    assert f"cannot decode image {bad}" in error and "--skip-corrupt" in error

    output = tmp_path / "skip.json"
    assert main(["evaluate", str(imagenet_model), str(root), "--benchmark", "imagenet", "--num-workers", "0",
                 "--no-progress", "--skip-corrupt", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert (result["num_images"], result["num_corrupt"]) == (4, 1)
    assert result["corrupt_files"][0].startswith(str(bad))
    assert "skipped 1 corrupt images" in capsys.readouterr().out


def test_evaluate_raises_evaluation_error(imagenet_model, wnid_folder):
    with pytest.raises(EvaluationError, match="unknown benchmark 'imagenet-c'"):
        evaluate(imagenet_model, wnid_folder, "imagenet-c", progress=False)


def test_cuda_without_a_device(capsys, tmp_path, imagenet_model, wnid_folder, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    error = _fails(capsys, tmp_path, imagenet_model, wnid_folder, "imagenet", "--device", "cuda")
    assert "--device cuda: no CUDA device is available" in error


def test_dataset_with_unlabeled_rows(capsys, tmp_path, imagenet_model):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    rows = {"image": [{"bytes": data, "path": None} for data in encoded_images(2)], "label": [3, -1]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    error = _fails(capsys, tmp_path, imagenet_model, tmp_path / "ds", "imagenet")
    assert "1 rows have a negative label" in error
