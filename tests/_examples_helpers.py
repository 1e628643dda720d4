"""Helpers of tests/test_examples.py: running the fine-tuning example scripts and building small image folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
ACCELERATE_SCRIPT = EXAMPLES / "finetune_accelerate.py"
TRAINER_SCRIPT = EXAMPLES / "finetune_trainer.py"
ACCELERATE_BIN = Path(sys.executable).with_name("accelerate")

# a few optimizer steps on a slice of the digits: seconds, not minutes
FAST_ARGS = ["--max_train_samples", "64", "--max_eval_samples", "32", "--per_device_batch_size", "16"]


def script_env(offline: bool = True, **extra: str) -> dict:
    """The test process's environment (conftest's Hub settings included), offline by default."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false", **extra)
    env.setdefault("OMP_NUM_THREADS", "1")  # small models: one thread per process is fastest on a busy 2-core box
    if offline:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def run(command: list, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `command` and return the completed process (output captured as text); never raises on failure."""
    return subprocess.run([str(part) for part in command], cwd=cwd, env=env or script_env(), capture_output=True,
                          text=True, timeout=timeout)


def run_accelerate_script(args: list, cwd: Path, num_processes: int = 1, env: dict | None = None):
    """`finetune_accelerate.py ARGS`: plain Python for one process, `accelerate launch` (real 2-rank DDP over gloo
    on CPU: ACCELERATE_USE_CPU=1 with --multi_gpu) for more."""
    if num_processes == 1:
        return run([sys.executable, ACCELERATE_SCRIPT, *args], cwd, env)
    env = dict(env or script_env(), ACCELERATE_USE_CPU="1")
    launcher = [ACCELERATE_BIN, "launch", "--multi_gpu", "--num_processes", num_processes, "--num_machines", 1,
                "--mixed_precision", "no", "--dynamo_backend", "no"]
    return run([*launcher, ACCELERATE_SCRIPT, *args], cwd, env)


def check_ok(result: subprocess.CompletedProcess) -> str:
    """The stdout of a successful run; an AssertionError with the output tail otherwise."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return result.stdout


def rank_summaries(output_dir: Path) -> list[dict]:
    """The `logs/rank_K.json` summaries the Accelerate script writes, by rank."""
    paths = sorted((output_dir / "logs").glob("rank_*.json"))
    return [json.loads(path.read_text()) for path in paths]


def make_image_folder(root: Path, per_class: int = 12, size: int = 40, corrupt: str | None = None) -> Path:
    """`root/<class>/<n>.png`: three classes of flat-coloured noisy images; `corrupt` names an extra, unreadable
    `.jpg` written into the first class."""
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            noise = rng.integers(-30, 30, (size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    if corrupt:
        (root / "red" / corrupt).write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return root
