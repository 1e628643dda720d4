"""Fine-tuning as a user meets it: each mistake is reported at once, before training, naming the real problem;
`--push_to_hub` is checked before training and a failed upload says how to finish; Trainer resume is exact;
`--help` shows defaults; the demo prints no framework warnings."""

from __future__ import annotations

import io
import sys

import pytest
from PIL import Image

from _examples_helpers import (
    ACCELERATE_BIN,
    ACCELERATE_SCRIPT,
    FAST_ARGS,
    TRAINER_SCRIPT,
    check_ok,
    make_image_folder,
    run,
    run_accelerate_script,
    script_env,
)
from overlock_hf.data import FinetuningError, check_image_files, check_image_folder, load_image_dataset, prepare_columns
from overlock_hf.training import (
    ACCELERATE_LAYOUT,
    TRAINER_LAYOUT,
    push_command,
    resolve_checkpoint,
    resolve_model_source,
    state_dict_digest,
)


def _truncated_jpeg(path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buffer, "JPEG")  # noise: the cut falls in the scan data
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


# ------------------------------------------------------------------------------------------------ data
def test_truncated_jpeg_is_found_by_decoding_before_training(tmp_path):
    """A JPEG cut in half passes PIL's header `verify()` but not a decode: reported with its file name."""
    folder = make_image_folder(tmp_path / "images", per_class=4)
    _truncated_jpeg(folder / "green" / "cut.jpg")
    with Image.open(folder / "green" / "cut.jpg") as image:
        image.verify()  # the header is fine: a verify-only check would let it through
    splits, image_column, _, _ = prepare_columns(load_image_dataset(str(folder), validation_fraction=0.3))
    bad = [s for s in splits.values() if any("cut.jpg" in item["path"] for item in s[image_column])]
    with pytest.raises(FinetuningError, match=r"1 unreadable image\(s\): .*green/cut\.jpg.*truncated"):
        check_image_files(bad[0], image_column)


def test_image_folder_problems_are_named(tmp_path):
    with pytest.raises(FinetuningError, match=r"no such folder: .*missing"):
        load_image_dataset(str(tmp_path / "missing"))
    with pytest.raises(FinetuningError, match="no such folder"):
        load_image_dataset("./no/such/images")
    single = make_image_folder(tmp_path / "single", per_class=2)
    for name in ("green", "blue"):
        for file in (single / name).iterdir():
            file.unlink()
        (single / name).rmdir()
    with pytest.raises(FinetuningError, match=r"only one class folder \('red'\).*at least two classes"):
        check_image_folder(single)
    empty = make_image_folder(tmp_path / "with_empty", per_class=2)
    (empty / "yellow").mkdir()
    with pytest.raises(FinetuningError, match=r"class folder\(s\) \['yellow'\] hold no images"):
        load_image_dataset(str(empty))
    split_layout = tmp_path / "splits"
    make_image_folder(split_layout / "train", per_class=2)
    make_image_folder(split_layout / "validation", per_class=1)
    (split_layout / "validation" / "purple").mkdir()
    with pytest.raises(FinetuningError, match=r"validation: class folder\(s\) \['purple'\]"):
        check_image_folder(split_layout)


# ------------------------------------------------------------------------------------------------ model
def test_model_names_are_resolved_without_the_network(tmp_path):
    assert resolve_model_source("compact").kind == "compact"
    assert (resolve_model_source("XT").kind, resolve_model_source("XT").name) == ("variant", "overlock-xt")
    assert resolve_model_source("overlock_b").name == "overlock-b"
    assert resolve_model_source("org/overlock-t").kind == "checkpoint"
    assert resolve_model_source(str(tmp_path)).kind == "checkpoint"
    with pytest.raises(FinetuningError, match=r"did you mean .*'overlock-xt'\?.*Choices: compact, overlock-xt"):
        resolve_model_source("overlock-xs")
    with pytest.raises(FinetuningError, match=r"did you mean 'compact'"):
        resolve_model_source("compct")
    with pytest.raises(FinetuningError, match=r"--model \./models/mine: no such folder"):
        resolve_model_source("./models/mine")
    with pytest.raises(FinetuningError, match="no such folder"):
        resolve_model_source(str(tmp_path / "a" / "b"))


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("layout", [ACCELERATE_LAYOUT, TRAINER_LAYOUT], ids=["accelerate", "trainer"])
def test_resume_latest_needs_a_checkpoint(tmp_path, layout):
    with pytest.raises(FinetuningError, match=r"latest: no checkpoint in .*checkpoints \(no such folder; this "
                       "script saves them with"):
        resolve_checkpoint("latest", tmp_path, layout)
    (tmp_path / "checkpoints" / f"{layout.prefix}3").mkdir(parents=True)  # incomplete: no marker file
    with pytest.raises(FinetuningError, match="none saved there"):
        resolve_checkpoint("latest", tmp_path, layout)
    for step in (3, 12):
        (tmp_path / "checkpoints" / f"{layout.prefix}{step}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "checkpoints" / f"{layout.prefix}{step}" / layout.marker).write_text("{}")
    assert resolve_checkpoint("latest", tmp_path, layout).name == f"{layout.prefix}12"
    with pytest.raises(FinetuningError, match="no such folder"):
        resolve_checkpoint(str(tmp_path / "nope"), tmp_path, layout)


def test_script_reports_user_mistakes_at_once(tmp_path):
    """Through the script: a misspelled variant stops before any data is loaded, without a traceback."""
    result = run_accelerate_script(["--model", "overlock-tt", "--output_dir", tmp_path / "out"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "error: --model 'overlock-tt' is not a known model: did you mean 'overlock-t'" in result.stderr
    result = run([sys.executable, TRAINER_SCRIPT, "--resume_from_checkpoint", "latest", "--output_dir",
                  tmp_path / "fresh"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--resume_from_checkpoint latest: no checkpoint in" in result.stderr


# ------------------------------------------------------------------------------------------------ push
def test_push_target_is_checked_before_training(tmp_path):
    """An endpoint that does not answer fails the run at once, before any training step."""
    env = script_env(offline=False, HF_ENDPOINT="http://127.0.0.1:9")  # discard port: connection refused
    result = run_accelerate_script(["--output_dir", tmp_path / "out", "--max_steps", "1", "--push_to_hub",
                                    "test-user/never", *FAST_ARGS], tmp_path, env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--push_to_hub test-user/never: cannot log in to the Hub at http://127.0.0.1:9" in result.stderr
    assert "train / " not in result.stdout and not (tmp_path / "out" / "model").exists()


def test_failed_upload_prints_the_push_command(tmp_path, hub_server):
    out = tmp_path / "out"
    hub_server.inject_failure(r"/commit/", status=403, count=10, message="no write access")
    try:
        result = run_accelerate_script(["--output_dir", out, "--max_steps", "1", "--num_preview", "0",
                                        "--push_to_hub", "test-user/fails", *FAST_ARGS], tmp_path,
                                       env=script_env(offline=False))
    finally:
        hub_server.clear_failures()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    command = push_command(out / "model", "test-user/fails")
    assert f"upload it with:\n    {command}" in result.stderr
    assert (out / "model" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------------ Trainer resume
def test_trainer_resume_is_exact(tmp_path):
    """Trainer: resuming from a mid-epoch checkpoint (drop path, random crops) gives the uninterrupted run's weights
    bit for bit, like the Accelerate script (tests/test_examples.py::test_resume_matches_uninterrupted_run)."""
    from transformers import AutoModelForImageClassification

    common = ["--max_steps", "4", "--max_train_samples", "48", "--max_eval_samples", "16",
              "--per_device_batch_size", "16", "--save_strategy", "steps", "--save_steps", "2"]
    full = tmp_path / "full"
    check_ok(run([sys.executable, TRAINER_SCRIPT, "--output_dir", full, *common], tmp_path))
    resumed = tmp_path / "resumed"
    check_ok(run([sys.executable, TRAINER_SCRIPT, "--output_dir", resumed, "--resume_from_checkpoint",
                  full / "checkpoints" / "checkpoint-2", *common], tmp_path))
    digests = [state_dict_digest(AutoModelForImageClassification.from_pretrained(folder / "model"))
               for folder in (full, resumed)]
    assert digests[0] == digests[1]


# ------------------------------------------------------------------------------------------------ help, demo
def test_help_shows_defaults(tmp_path):
    """Both scripts' options come from examples/finetune_options.py (one formatter); checked on one of them."""
    stdout = check_ok(run([sys.executable, TRAINER_SCRIPT, "--help"], tmp_path))
    for text in ("training epochs (default: 8)", "(default: 0.002)", "(default: digits)", "(default: compact)"):
        assert text in " ".join(stdout.split()), text


def test_demo_prints_no_framework_warnings(tmp_path):
    """`make demo`'s launch line, warnings not filtered: stderr holds only the training progress bar."""
    env = script_env()
    env.pop("PYTHONWARNINGS")
    env.pop("OMP_NUM_THREADS")
    result = run([ACCELERATE_BIN, "launch", "--cpu", "--num_processes", 1, "--num_machines", 1,
                  "--num_cpu_threads_per_process", 1, "--mixed_precision", "no", "--dynamo_backend", "no",
                  ACCELERATE_SCRIPT, "--output_dir", tmp_path / "demo", "--max_steps", 1, "--num_preview", 2,
                  *FAST_ARGS], tmp_path, env=env)
    check_ok(result)
    lines = [line.strip() for line in result.stderr.replace("\r", "\n").splitlines()]
    assert [line for line in lines if line and not line.startswith("training:")] == []
