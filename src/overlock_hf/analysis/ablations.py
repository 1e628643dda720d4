"""The ablation-preset table: every preset's parameters and MACs beside the paper's figures.

The paper's figures are package data (`overlock_hf/data/overlock_paper.json`, cited "OverLoCK supplement,
Tables A-F"); a figure that is `null` there is reported as missing, never guessed.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..configuration_overlock import ABLATIONS
from .benchmark import CONVENTIONS, profile_model

PAPER_FIGURES = Path(__file__).resolve().parent.parent / "data" / "overlock_paper.json"
REFERENCE = "overlock-xt"


def paper_figures() -> dict:
    """The paper's figures (released variants, Table I throughput, Tables A-F), as stored in the package."""
    with open(PAPER_FIGURES, encoding="utf-8") as stream:
        return json.load(stream)


def _difference(ours: float, paper: float | None) -> float | None:
    return None if paper is None else ours - paper


def ablation_rows(image_size: int = 224, progress: bool = True, tables: str = "ABCDEF") -> list[dict]:
    """OverLoCK-XT (the reference row) and every preset of `ABLATIONS` in `tables`: params and GMACs, ours and
    the paper's.

    Each row has the keys of :class:`~overlock_hf.analysis.profiling.ProfileRow` plus `table`, `paper_params_m`,
    `paper_gmacs`, `paper_top1`, `diff_params_m` and `diff_gmacs` (ours minus the paper's, None when the paper's
    figure is not in the data).
    """
    from tqdm.auto import tqdm

    figures = paper_figures()["ablations"]
    rows = []
    names = [REFERENCE, *(name for name, spec in ABLATIONS.items() if spec["table"] in tables)]
    for name in tqdm(names, desc="ablations", unit="preset", disable=not progress):
        row = profile_model(name, image_size).as_dict()
        paper = figures["reference"] if name == REFERENCE else figures["rows"].get(name, {})
        row["table"] = "reference" if name == REFERENCE else ABLATIONS[name]["table"]
        row["paper_params_m"], row["paper_gmacs"] = paper.get("params_m"), paper.get("gmacs")
        row["paper_top1"] = paper.get("top1")
        row["diff_params_m"] = _difference(row["params_m"], row["paper_params_m"])
        row["diff_gmacs"] = _difference(row["gmacs"], row["paper_gmacs"])
        rows.append(row)
    return rows


def _cell(value, digits: int, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def ablations_to_markdown(rows: list[dict]) -> str:
    """The preset table in Markdown, paper figures and differences beside ours."""
    header = ["table", "preset", "params (M)", "paper", "diff", "GMACs", "ContMix GMACs", "paper", "diff",
              "paper top-1"]
    lines = ["# Ablation presets (OverLoCK-XT based)", "", CONVENTIONS,
             "Paper figures: OverLoCK supplement, Tables A-F (n/a: not in the package data).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([
            row["table"], row["model"], _cell(row["params_m"], 2), _cell(row["paper_params_m"], 1),
            _cell(row["diff_params_m"], 2, True), _cell(row["gmacs"], 3), _cell(row["gmacs_contmix"], 3),
            _cell(row["paper_gmacs"], 1), _cell(row["diff_gmacs"], 2, True), _cell(row["paper_top1"], 1),
        ]) + " |")
    return "\n".join(lines) + "\n"
