"""One evaluation over several processes (``accelerate launch``): each process a strided shard, counts summed.

Without a launcher (``WORLD_SIZE`` unset or 1) everything is local and Accelerate is not imported. Under
``accelerate launch`` (or ``torchrun``) `accelerate.PartialState` joins the process group and picks each process's
device; integer counts are summed with ``all_reduce``, so the result equals a single-process run exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the run: `rank` of `world_size`, and its `device`."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_info(device: str | None = None) -> ProcessInfo:
    """The process layout; `device` (``cpu``, ``cuda``, ``cuda:1``, ...) overrides the default.

    Default device: the launcher's per-process device when distributed, else ``cuda`` when available, else CPU.
    Under a multi-GPU launch a plain ``cuda`` means each process's own GPU.
    """
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available (torch {torch.__version__})")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return ProcessInfo(0, 1, torch.device(chosen))
    try:
        from accelerate import PartialState
    except ImportError as error:
        raise ImportError("distributed evaluation needs `pip install overlock-hf[training]` (accelerate)") from error
    state = PartialState(cpu=device == "cpu")
    chosen = state.device if device in (None, "cuda") else torch.device(device)
    return ProcessInfo(state.process_index, state.num_processes, torch.device(chosen))


def shard(indices: list[int], info: ProcessInfo) -> list[int]:
    """This process's items: every `world_size`-th index starting at `rank` (shards differ by at most one)."""
    return indices[info.rank :: info.world_size]


def sum_counts(counts: list[int], info: ProcessInfo) -> list[int]:
    """`counts` summed over all processes (the same list on each)."""
    if info.world_size == 1:
        return list(counts)
    tensor = torch.tensor(counts, dtype=torch.int64, device=info.device)
    torch.distributed.all_reduce(tensor)
    return [int(value) for value in tensor.tolist()]


def gather_lists(items: list, info: ProcessInfo) -> list:
    """The concatenation of every process's `items` (picklable), in rank order."""
    if info.world_size == 1:
        return list(items)
    gathered = [None] * info.world_size
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]
