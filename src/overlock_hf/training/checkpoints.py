"""Finding the checkpoint to resume from, for both scripts' layouts, before anything is loaded.

The Accelerate script saves `<output_dir>/checkpoints/step_N/` (with `training_state.json`), the Trainer
`<output_dir>/checkpoints/checkpoint-N/` (with `trainer_state.json`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..data import FinetuningError

__all__ = ["ACCELERATE_LAYOUT", "TRAINER_LAYOUT", "CheckpointLayout", "resolve_checkpoint"]


class CheckpointLayout:
    """How one script names its checkpoint folders (`prefix` + step) and the file that marks a complete one."""

    def __init__(self, prefix: str, marker: str, how_to_save: str):
        self.prefix, self.marker, self.how_to_save = prefix, marker, how_to_save
        self._pattern = re.compile(rf"{re.escape(prefix)}(\d+)")

    def step(self, folder: Path) -> int | None:
        """The step of a checkpoint folder of this layout, or None."""
        match = self._pattern.fullmatch(folder.name)
        return int(match.group(1)) if match else None


ACCELERATE_LAYOUT = CheckpointLayout("step_", "training_state.json", "--checkpointing_steps N")
TRAINER_LAYOUT = CheckpointLayout("checkpoint-", "trainer_state.json", "--save_strategy epoch or steps")


def resolve_checkpoint(value: str, output_dir: str | Path, layout: CheckpointLayout) -> Path:
    """The checkpoint folder `--resume_from_checkpoint value` means: a folder, or `latest` (the newest complete
    one in `<output_dir>/checkpoints`). Raises `FinetuningError` naming what is missing."""
    root = Path(output_dir) / "checkpoints"
    if value == "latest":
        found = sorted(
            (p for p in (root.iterdir() if root.is_dir() else ()) if layout.step(p) is not None
             and (p / layout.marker).is_file()),
            key=layout.step,
        )
        if not found:
            where = "no such folder" if not root.is_dir() else "none saved there"
            raise FinetuningError(
                f"--resume_from_checkpoint latest: no checkpoint in {root} ({where}; this script saves them with "
                f"{layout.how_to_save}); start without --resume_from_checkpoint"
            )
        return found[-1]
    checkpoint = Path(value)
    if not checkpoint.is_dir():
        raise FinetuningError(f"--resume_from_checkpoint {value}: no such folder")
    if not (checkpoint / layout.marker).is_file():
        raise FinetuningError(f"{checkpoint} is not a checkpoint of this script (no {layout.marker})")
    return checkpoint
