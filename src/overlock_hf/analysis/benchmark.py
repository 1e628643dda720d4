"""Build any profiled model by name and produce the statistics table (JSON rows and Markdown).

A model name is a released variant (`overlock-xt` ...), an ablation preset (`kernels-9-9-7` ...,
:data:`~overlock_hf.configuration_overlock.ABLATIONS`), a transformers peer (`convnext-t` ...,
:data:`~overlock_hf.analysis.peers.PEERS`), a saved model folder or a Hub id.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..configuration_overlock import ABLATIONS, VARIANTS, OverLoCKConfig
from ..modeling_overlock import OverLoCKForImageClassification, OverLoCKPreTrainedModel
from .peers import build_peer, peer_key
from .profiling import ProfileRow, count_macs, count_parameters, measure_throughput

CONVENTIONS = (
    "Parameters: re-parameterized inference model without the auxiliary head, 1000 classes. "
    "GMACs: multiply-accumulates (fvcore's convention; FlopCounterMode FLOPs / 2, convolutions and matrix "
    "products only) plus the analytic ContMix aggregation (B*G*C*H*W*K^2 per call, column `ContMix`)."
)


def _variant_key(name: str) -> str | None:
    key = name.lower().replace("_", "-")
    key = key if key.startswith("overlock-") else f"overlock-{key}"
    return key if key in VARIANTS else None


def resolve_model(name: str, image_size: int = 224, device: str = "meta") -> tuple[nn.Module, str, str]:
    """`(model, kind, form)` for a model name; built-in architectures are built on `device` (`meta`: no memory,
    for counting). `kind` is `variant`, `ablation`, `peer` or `pretrained`; `form` `reparameterized` or `plain`."""
    with torch.device(device):
        if (variant := _variant_key(name)) is not None:
            config = OverLoCKConfig.from_variant(variant, reparameterized=True, num_labels=1000)
            return OverLoCKForImageClassification(config).eval(), "variant", "reparameterized"
        if name in ABLATIONS:
            config = OverLoCKConfig.from_ablation(name, reparameterized=True, num_labels=1000)
            return OverLoCKForImageClassification(config).eval(), "ablation", "reparameterized"
        if peer_key(name) is not None:
            return build_peer(name, image_size).eval(), "peer", "plain"
    if device == "meta":
        device = "cpu"
    known = ", ".join(list(VARIANTS) + list(ABLATIONS))
    try:
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot profile {name!r}: not a variant, ablation preset or peer ({known}; peers: "
                         f"convnext-t/s/b, swin-t/s/b, focalnet-t/s/b) and not loadable as a model folder or "
                         f"Hub id ({error})") from error
    form = "plain"
    if isinstance(model, OverLoCKPreTrainedModel):
        model.reparameterize()
        form = "reparameterized"
    return model.to(device).eval(), "pretrained", form


def profile_model(name: str, image_size: int, batch_size: int = 1, throughput: bool = False, device: str = "cpu",
                  dtype: torch.dtype = torch.float32, warmup: int = 3, runs: int = 10) -> ProfileRow:
    """Parameters and MACs (per image) of `name` at `image_size`, and with `throughput` its measured speed."""
    model, kind, form = resolve_model(name, image_size, device="meta")
    on = next(model.parameters()).device
    macs = count_macs(model, torch.empty(1, 3, image_size, image_size, device=on))
    row = ProfileRow(model=name, image_size=image_size, params_m=count_parameters(model) / 1e6,
                     gmacs=macs["total"] / 1e9, gmacs_contmix=macs["contmix"] / 1e9, form=form, kind=kind)
    if throughput:
        if on.type == "meta":
            model, _, _ = resolve_model(name, image_size, device="cpu")
        row.batch_size, row.device, row.dtype = batch_size, str(device), str(dtype).replace("torch.", "")
        row.threads = torch.get_num_threads()
        row.measured = measure_throughput(model, batch_size, image_size, device, dtype, warmup, runs)
    return row


def profile_models(names: list[str], image_sizes: list[int], progress: bool = True, **kwargs) -> list[dict]:
    """:func:`profile_model` for every name and size (a tqdm progress bar on stderr), as JSON-ready dicts."""
    from tqdm.auto import tqdm

    jobs = [(name, size) for name in names for size in image_sizes]
    rows = []
    for name, size in tqdm(jobs, desc="profile", unit="model", disable=not progress):
        rows.append(profile_model(name, size, **kwargs).as_dict())
    return rows


def _format(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def rows_to_markdown(rows: list[dict], title: str = "Model statistics") -> str:
    """A Markdown table of profile rows, with the counting conventions stated above it."""
    timed = any("images_per_s" in row for row in rows)
    header = ["model", "form", "size", "params (M)", "GMACs", "ContMix GMACs"]
    if timed:
        header += ["batch", "images/s (median)", "q1-q3", "peak MiB"]
    lines = [f"# {title}", "", CONVENTIONS, "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], row["form"], str(row["image_size"]), _format(row["params_m"], 2),
                 _format(row["gmacs"], 2), _format(row["gmacs_contmix"], 3)]
        if timed:
            spread = (f"{row['images_per_s_q1']:.1f}-{row['images_per_s_q3']:.1f}"
                      if "images_per_s_q1" in row else "")
            cells += [str(row.get("batch_size") or ""), _format(row.get("images_per_s"), 1), spread,
                      _format(row.get("peak_memory_mib"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)
    return path


def write_json(path: str | Path, payload) -> Path:
    return write_atomic(path, json.dumps(payload, indent=2) + "\n")
