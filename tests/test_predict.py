"""`overlock-hf predict`: top-k labels and scores equal the model's own softmax on the processor's pixels."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from _shared import converted_tiny_folder, random_images
from overlock_hf.cli import main as cli_main
from overlock_hf.prediction import predict


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, image in enumerate(random_images(3)):
        image.save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predictions_equal_the_models_own_top_k(image_folder):
    model_dir = converted_tiny_folder()
    predictions = predict(model_dir, [image_folder], top_k=3, batch_size=2)
    assert [p.path.name for p in predictions] == ["img0.png", "img1.png", "img2.png"]
    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    for prediction in predictions:
        from PIL import Image

        with torch.no_grad():
            logits = model(**processor(Image.open(prediction.path).convert("RGB"), return_tensors="pt")).logits
        scores, indices = logits.softmax(-1).topk(3)
        assert prediction.indices == indices[0].tolist()
        assert prediction.scores == pytest.approx(scores[0].tolist(), rel=1e-5)
        assert prediction.labels == [model.config.id2label[i] for i in prediction.indices]


def test_cli_prints_and_writes_json(image_folder, tmp_path, capsys):
    output = tmp_path / "predictions.json"
    assert cli_main(["predict", str(converted_tiny_folder()), str(image_folder / "img1.png"), "--top-k", "2",
                     "--output", str(output)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith(str(image_folder / "img1.png"))
    document = json.loads(output.read_text())
    assert len(document["predictions"]) == 1 and len(document["predictions"][0]["labels"]) == 2


def test_bad_inputs_are_named(tmp_path, capsys):
    missing = tmp_path / "missing.jpg"
    assert cli_main(["predict", str(converted_tiny_folder()), str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert cli_main(["predict", str(converted_tiny_folder()), str(broken)]) == 1
    assert str(broken) in capsys.readouterr().err
