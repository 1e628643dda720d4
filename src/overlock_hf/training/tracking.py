"""Run records: a JSON-lines tracker for Accelerate and a digest of the weights for comparing replicas."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from accelerate.tracking import GeneralTracker
from torch import nn

__all__ = ["JSONLinesTracker", "state_dict_digest"]


def _json_safe(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


class JSONLinesTracker(GeneralTracker):
    """An Accelerate tracker writing `<logging_dir>/metrics.jsonl` (one `{"step": ..., **values}` object per
    `accelerator.log` call) and the run configuration to `<logging_dir>/config.json`. No extra dependency."""

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | Path):
        super().__init__()
        self.run_name = run_name
        self.logging_dir = Path(logging_dir)
        self.path = self.logging_dir / "metrics.jsonl"

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        config = {"run_name": self.run_name, **{k: _json_safe(v) for k, v in values.items()}}
        (self.logging_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        record = {"step": step, **{k: _json_safe(v) for k, v in values.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def state_dict_digest(model: nn.Module) -> str:
    """SHA-256 over every tensor of `model.state_dict()` (names, shapes, float32 bytes), for comparing replicas."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
