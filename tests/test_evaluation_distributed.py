"""`overlock-hf evaluate` under `accelerate launch` with 2 CPU processes equals the 1-process result."""

import json
import os
import subprocess
import sys
from pathlib import Path

from _evaluation_helpers import (
    encoded_images,
    model_logits,
    place_labels,
    subset,
    tiny_model_folder,
    wnid_name,
    write_folder,
)
from overlock_hf.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def test_two_processes_equal_one(tmp_path):
    model = tiny_model_folder(1000)
    images = encoded_images(11, seed=5)  # 11 images: shards of 6 and 5
    labels = place_labels(model_logits(model, images), subset("imagenet-r"))
    root = write_folder(tmp_path / "r", images, labels, wnid_name)
    (root / wnid_name(labels[0]) / "zz_broken.png").write_bytes(b"\x89PNG\r\n not really")
    args = ["evaluate", str(model), str(root), "--benchmark", "imagenet-r", "--batch-size", "2", "--num-workers",
            "0", "--device", "cpu", "--skip-corrupt", "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "one.json")]) == 0

    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "overlock_hf.cli", *args, "--output", str(tmp_path / "two.json")]
    completed = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    for key in ("top1", "top5", "num_images", "num_corrupt", "corrupt_files"):
        assert one[key] == two[key], key
    assert (one["num_images"], one["num_corrupt"]) == (11, 1)
