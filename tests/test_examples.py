"""The fine-tuning examples (examples/finetune_accelerate.py, examples/finetune_trainer.py) and their building blocks
(overlock_hf.data, overlock_hf.training, overlock_hf.training_transforms, the offline accuracy metric).

The scripts run in subprocesses on slices of the embedded digits for a few steps; `test_demo_full` (slow) runs the
demo as `make demo` does and checks its accuracy.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image

from _examples_helpers import (
    FAST_ARGS,
    TRAINER_SCRIPT,
    check_ok,
    make_image_folder,
    rank_summaries,
    run,
    run_accelerate_script,
    script_env,
)
from overlock_hf import OverLoCKConfig, OverLoCKForImageClassification
from overlock_hf.data import (
    EpochShuffleSampler,
    FinetuningError,
    check_image_files,
    decode_image,
    load_image_dataset,
    prepare_columns,
)
from overlock_hf.training import (
    COMPACT_CONFIG,
    JSONLinesTracker,
    accuracy_metric_path,
    build_model,
    classification_loss,
    parameter_groups,
    state_dict_digest,
)
from overlock_hf.training_transforms import RandomResizedCrop, TrainTransform


def _load_folder(model_dir):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(model_dir), AutoImageProcessor.from_pretrained(model_dir)


# ---------------------------------------------------------------------------------------------- scripts
def test_accelerate_demo_fast(tmp_path):
    """The demo path end to end on a slice: held-out accuracy printed, folder reloaded with the Auto classes and
    the pipeline, predictions printed and drawn; the tracker logged train and eval metrics."""
    out = tmp_path / "demo"
    stdout = check_ok(run_accelerate_script(
        ["--output_dir", out, "--max_steps", "3", "--logging_steps", "1", "--num_preview", "4", *FAST_ARGS], tmp_path
    ))
    assert "held-out accuracy:" in stdout
    assert "reloaded with AutoModelForImageClassification + pipeline" in stdout
    assert stdout.count("predicted ") == 4
    with Image.open(out / "predictions.png") as grid:
        assert grid.format == "PNG" and grid.width > 0
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3]
    assert any("eval_accuracy" in r for r in records)
    model, processor = _load_folder(out / "model")
    assert model.config.num_labels == 10 and model.config.id2label[3] == "3"
    assert processor.size == {"shortest_edge": 64}
    assert (out / "model" / "README.md").read_text().count("## Fine-tuning") == 1


def test_two_processes_ddp(tmp_path):
    """Real 2-rank DDP over gloo: both ranks see world size 2, the loss drops, final weights are identical on both
    ranks and equal to the saved folder's."""
    out = tmp_path / "ddp"
    check_ok(run_accelerate_script(
        ["--output_dir", out, "--max_steps", "6", "--warmup_ratio", "0", "--num_preview", "0", *FAST_ARGS],
        tmp_path, num_processes=2,
    ))
    summaries = rank_summaries(out)
    assert [s["rank"] for s in summaries] == [0, 1]
    assert all(s["world_size"] == 2 for s in summaries)
    losses = [loss for _, loss in summaries[0]["step_losses"]]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert summaries[0]["state_dict_sha256"] == summaries[1]["state_dict_sha256"]
    model, _ = _load_folder(out / "model")
    assert state_dict_digest(model) == summaries[0]["state_dict_sha256"]


def test_resume_matches_uninterrupted_run(tmp_path):
    """Resuming from a mid-epoch checkpoint (drop path and random crops on) reproduces the uninterrupted run's
    next losses and final weights exactly, across an epoch boundary with an evaluation in between."""
    # 3 steps per epoch: the checkpoint at step 2 is mid-epoch, step 3 ends epoch 0 (evaluation), step 4 is epoch 1
    common = ["--max_steps", "4", "--num_preview", "0", "--max_train_samples", "48", "--max_eval_samples", "16",
              "--per_device_batch_size", "16", "--report_to", ""]
    full = tmp_path / "full"
    check_ok(run_accelerate_script(["--output_dir", full, "--checkpointing_steps", "2", *common], tmp_path))
    assert (full / "checkpoints" / "step_4").is_dir()
    resumed = tmp_path / "resumed"
    stdout = check_ok(run_accelerate_script(
        ["--output_dir", resumed, "--resume_from_checkpoint", full / "checkpoints" / "step_2", *common], tmp_path
    ))
    assert "resumed from" in stdout and "at step 2" in stdout
    (uninterrupted,), (continued,) = rank_summaries(full), rank_summaries(resumed)
    assert continued["step_losses"][0][0] == 3
    assert continued["step_losses"] == uninterrupted["step_losses"][2:]
    assert continued["state_dict_sha256"] == uninterrupted["state_dict_sha256"]


def test_trainer_example(tmp_path):
    """The Trainer example: a few steps, evaluation metrics reported, the saved folder reloads and classifies."""
    out = tmp_path / "trainer"
    result = run([sys.executable, TRAINER_SCRIPT, "--output_dir", out, "--max_steps", "3", *FAST_ARGS], tmp_path)
    stdout = check_ok(result)
    assert "held-out accuracy:" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and metrics["eval_loss"] > 0
    model, processor = _load_folder(out / "model")
    image = Image.new("RGB", (64, 64), "white")
    logits = model.eval()(**processor(image, return_tensors="pt")).logits
    assert logits.shape == (1, 10)


def test_push_to_hub(tmp_path, hub_server):
    """`--push_to_hub` uploads the model folder (to the local test Hub); it loads back from the Hub by id."""
    from transformers import AutoModelForImageClassification

    out = tmp_path / "push"
    stdout = check_ok(run_accelerate_script(
        ["--output_dir", out, "--max_steps", "1", "--num_preview", "0", "--push_to_hub", "test-user/overlock-digits",
         *FAST_ARGS], tmp_path, env=script_env(offline=False),
    ))
    assert "pushed to" in stdout
    model = AutoModelForImageClassification.from_pretrained("test-user/overlock-digits")
    assert model.config.num_labels == 10


def test_corrupt_image_in_folder_is_reported(tmp_path):
    """An unreadable file in an image folder stops the script before training, naming the file."""
    folder = make_image_folder(tmp_path / "images", per_class=4, corrupt="broken.jpg")
    result = run_accelerate_script(["--dataset", folder, "--output_dir", tmp_path / "out", "--max_steps", "1",
                                    "--per_device_batch_size", "4"], tmp_path)
    assert result.returncode != 0
    assert "error: 1 unreadable image(s)" in result.stderr and "broken.jpg" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------- bad input
def test_dataset_without_label_column():
    from datasets import Dataset, DatasetDict, Image as ImageFeature

    images = [Image.new("RGB", (8, 8))] * 2
    split = Dataset.from_dict({"image": images, "caption": ["a", "b"]}).cast_column("image", ImageFeature())
    with pytest.raises(FinetuningError, match=r"no label column: looked for 'label', 'labels'.*'caption'.*--label_column"):
        prepare_columns(DatasetDict(train=split, validation=split))
    with pytest.raises(FinetuningError, match="no label column 'target'"):
        prepare_columns(DatasetDict(train=split, validation=split), label_column="target")


def test_unlabeled_split_is_rejected():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as ImageFeature

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    images = [Image.new("RGB", (8, 8))] * 2
    labeled = Dataset.from_dict({"image": images, "label": [0, 1]}, features=features)
    unlabeled = Dataset.from_dict({"image": images, "label": [-1, -1]}, features=features)
    with pytest.raises(FinetuningError, match=r"validation split has labels \[-1\] outside \[0, 2\)"):
        prepare_columns(DatasetDict(train=labeled, validation=unlabeled))


def test_string_labels_are_encoded():
    from datasets import Dataset, DatasetDict, Image as ImageFeature

    split = Dataset.from_dict({"img": [Image.new("RGB", (8, 8))] * 3, "labels": ["cat", "dog", "cat"]})
    split = split.cast_column("img", ImageFeature())
    _, image_column, label_column, names = prepare_columns(DatasetDict(train=split, validation=split))
    assert (image_column, label_column, names) == ("img", "labels", ["cat", "dog"])


def test_label_count_mismatch(tmp_path):
    """A checkpoint with another number of classes: clear error, or a fresh head with --ignore_mismatched_sizes."""
    config = OverLoCKConfig(**COMPACT_CONFIG, num_labels=10)
    OverLoCKForImageClassification(config).save_pretrained(tmp_path / "ten")
    with pytest.raises(FinetuningError, match=r"10-class head but the dataset has 3 classes.*--ignore_mismatched_sizes"):
        build_model(str(tmp_path / "ten"), ["a", "b", "c"])
    model = build_model(str(tmp_path / "ten"), ["a", "b", "c"], ignore_mismatched_sizes=True)
    assert model.classifier.fc.out_features == 3 and model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_image_folder_checks(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=3, corrupt="bad.jpg")
    splits = load_image_dataset(str(folder), validation_fraction=0.25)
    splits, image_column, _, names = prepare_columns(splits)
    assert names == ["blue", "green", "red"]
    bad_split = next(split for split in splits.values() if any("bad.jpg" in str(i["path"]) for i in split[image_column]))
    with pytest.raises(FinetuningError, match=r"1 unreadable image\(s\): .*bad\.jpg"):
        check_image_files(bad_split, image_column)
    with pytest.raises(FinetuningError, match="cannot read image .*bad.jpg"):
        decode_image({"bytes": None, "path": str(folder / "red" / "bad.jpg")})


def test_bad_dataset_arguments(tmp_path):
    with pytest.raises(FinetuningError, match="holds no files"):
        (tmp_path / "empty").mkdir()
        load_image_dataset(str(tmp_path / "empty"))
    with pytest.raises(FinetuningError, match="validation_fraction"):
        load_image_dataset("digits", validation_fraction=1.5)


# ---------------------------------------------------------------------------------------------- building blocks
def test_digits_dataset():
    splits = load_image_dataset("digits")
    assert len(splits["train"]) + len(splits["validation"]) == 1797
    assert splits["train"].features["label"].names == [str(d) for d in range(10)]
    image = splits["validation"][0]["image"]
    assert image.size == (64, 64) and image.mode == "RGB"


def test_train_transform_is_reproducible_per_generator():
    image = Image.new("RGB", (50, 30), "red")
    transform = TrainTransform(32, scale=(0.3, 1.0))
    first = transform(image, torch.Generator().manual_seed(3))
    assert first.shape == (3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, transform(image, torch.Generator().manual_seed(3)))
    crop = RandomResizedCrop(16, scale=(0.2, 0.5))
    for seed in range(20):
        left, top, width, height = crop.get_params(50, 30, torch.Generator().manual_seed(seed))
        assert 0 <= left and left + width <= 50 and 0 <= top and top + height <= 30
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(16, scale=(0.5, 0.2))


def test_epoch_shuffle_sampler():
    sampler = EpochShuffleSampler(10, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_parameter_groups_exempt_norms_biases_and_tables():
    model = OverLoCKForImageClassification(OverLoCKConfig(**COMPACT_CONFIG, num_labels=10))
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert decayed.isdisjoint(exempt) and len(decayed) + len(exempt) == len(names)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith(".weight") for n in decayed)
    for fragment in ("rpb_small", "rpb_large", "layer_scale1.weight", "grn.gamma", ".bias", "norm"):
        assert not any(fragment in n for n in decayed), fragment
    assert "classifier.fc.weight" in decayed and any(n.endswith("kernel_proj.weight") for n in decayed)


def test_loss_equals_model_loss_without_smoothing():
    """With label smoothing 0 the script's loss is the model's own train loss (main + 0.4 * auxiliary)."""
    model = OverLoCKForImageClassification(OverLoCKConfig(**dict(COMPACT_CONFIG, drop_path_rate=0.0), num_labels=10))
    model.train()
    pixels, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    outputs = model(pixel_values=pixels, labels=labels)
    assert outputs.aux_logits is not None
    ours = classification_loss(outputs, labels, 0.0, model.config.aux_loss_weight)
    torch.testing.assert_close(ours, outputs.loss)
    summed = classification_loss(outputs, labels, 0.0, model.config.aux_loss_weight, num_items_in_batch=8)
    torch.testing.assert_close(summed, outputs.loss / 2)
    assert classification_loss(outputs, labels, 0.1, 0.4) > classification_loss(outputs, labels, 0.1, 0.0)


def test_accuracy_metric_offline(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(accuracy_metric_path(), keep_in_memory=True)
    metric.add_batch(predictions=[0, 1], references=[0, 0])
    metric.add_batch(predictions=[2, 2], references=[2, 2])
    assert metric.compute() == {"accuracy": 0.75}


def test_jsonl_tracker(tmp_path):
    tracker = JSONLinesTracker("run", tmp_path / "logs")
    tracker.store_init_configuration({"lr": 0.1, "path": tmp_path})
    tracker.log({"loss": torch.tensor(1.5)}, step=3)
    assert json.loads((tmp_path / "logs" / "config.json").read_text())["lr"] == 0.1
    assert json.loads((tmp_path / "logs" / "metrics.jsonl").read_text()) == {"step": 3, "loss": 1.5}


@pytest.mark.slow
def test_demo_full(tmp_path):
    """`make demo` as the Makefile runs it: well above chance on the held-out digits."""
    from _examples_helpers import ACCELERATE_BIN, ACCELERATE_SCRIPT

    result = run([ACCELERATE_BIN, "launch", "--cpu", "--num_processes", 1, "--mixed_precision", "no",
                  "--dynamo_backend", "no", ACCELERATE_SCRIPT, "--output_dir", tmp_path / "demo_output"], tmp_path,
                 timeout=1200)
    stdout = check_ok(result)
    accuracy = float(stdout.split("held-out accuracy: ")[1].split(";")[0])
    assert accuracy > 0.9
    assert (tmp_path / "demo_output" / "predictions.png").is_file()
