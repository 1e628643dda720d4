"""The robustness table of the OverLoCK supplement (Table H): models on the rows, ImageNet-1K and its
out-of-distribution sets on the columns, with parameters and GFLOPs.

    overlock-hf robustness org/overlock-xt facebook/convnext-tiny-224 --imagenet /data/val \
        --imagenet-v2 /data/v2 --imagenet-a /data/a --imagenet-r /data/r --imagenet-sketch /data/sketch

GFLOPs are multiply-accumulates (the convention of the paper's tables): `torch.utils.flop_counter.FlopCounterMode`
FLOPs / 2 for one image at the evaluation size. FlopCounterMode counts matrix products, convolutions and attention
only: element-wise work (norms, activations, the ContMix aggregation outside its matrix products) is not counted.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .data import load_samples
from .evaluation import load_model, prepare, run, sample_labels
from .labels import check_model_classes
from .output import check_output_path, write_json_atomic, write_text_atomic
from .sharding import process_info

COLUMNS = {"imagenet": "1K", "imagenet-v2": "V2", "imagenet-a": "A", "imagenet-r": "R", "imagenet-sketch": "Sketch"}


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_gmacs(model: torch.nn.Module, image_size: int) -> float:
    """Multiply-accumulates of one forward pass on a (1, 3, S, S) input, in billions (FlopCounterMode / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters())
    pixels = torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(pixel_values=pixels)
    return counter.get_total_flops() / 2 / 1e9


def markdown_table(rows: list[dict], benchmarks: list[str]) -> str:
    """Table H's shape: | Model | Params (M) | GFLOPs | 1K | V2 | A | R | Sketch | (top-1, %), one row per model."""
    header = ["Model", "Params (M)", "GFLOPs", *(COLUMNS[name] for name in benchmarks)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], f"{row['params_m']:.1f}", f"{row['gflops']:.2f}"]
        cells += [f"{row['results'][name]['top1']:.1f}" for name in benchmarks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _load_config(model: str, trust_remote_code: bool):
    import overlock_hf  # noqa: F401  (registers OverLoCK with the Auto classes)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)


def robustness(models: list[str], sets: dict[str, str], *, image_size: int | None = None,
               crop_pct: float | None = None, batch_size: int = 64, num_workers: int = 4, limit: int | None = None,
               device: str | None = None, output: str | Path | None = None, markdown: str | Path | None = None,
               skip_corrupt: bool = False, bf16: bool = False, trust_remote_code: bool = False,
               progress: bool = True) -> dict:
    """Evaluate every model on every set of `sets` (benchmark name -> data) and build Table H.

    Every set is scanned and every model's classes checked against every set before the first evaluation.
    Returns ``{"benchmarks": [...], "rows": [{"model", "params_m", "gflops", "results": {benchmark: result}}],
    "markdown": table}``; writes it to `output` (JSON) and the table to `markdown`, atomically.
    """
    unknown = sorted(set(sets) - set(COLUMNS))
    if unknown or not sets or not models:
        raise ValueError(f"give at least one model and one of {', '.join(COLUMNS)} (unknown: {unknown})")
    output, markdown = check_output_path(output), check_output_path(markdown, "--markdown")
    benchmarks = [name for name in COLUMNS if name in sets]
    samples = {name: load_samples(sets[name]) for name in benchmarks}
    for model in models:
        config = _load_config(model, trust_remote_code)
        for name in benchmarks:
            check_model_classes(name, config)
            sample_labels(samples[name], name, config)
    info = process_info(device)
    rows = []
    for model in models:
        loaded = load_model(model, trust_remote_code)
        results = {}
        for name in benchmarks:
            plan = prepare(loaded, sets[name], name, image_size, crop_pct, limit, samples=samples[name],
                           trust_remote_code=trust_remote_code)
            results[name] = run(plan, batch_size, num_workers, device, skip_corrupt, bf16, progress, info)
        size = next(iter(results.values()))["image_size"]
        rows.append({"model": str(model), "params_m": count_parameters(loaded) / 1e6,
                     "gflops": count_gmacs(loaded.to(info.device), size), "image_size": size, "results": results})
        del loaded
    table = markdown_table(rows, benchmarks)
    document = {"benchmarks": benchmarks, "rows": rows, "markdown": table}
    if info.is_main:
        if output is not None:
            write_json_atomic(output, document)
        if markdown is not None:
            write_text_atomic(markdown, table)
    return document
