#!/usr/bin/env python
"""Print the parity of our model with the released implementation on the reference fixtures.

    python conversion/parity_report.py [FIXTURES_DIR]     (default: ../shared/fixtures)

Each row is `max|ours - ref| / max|ref|` (the parity tests require <= 1e-4).
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from overlock_hf.conversion import load_official_model


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def main(fixtures: Path) -> None:
    ref = load_file(fixtures / "tiny_reference_outputs.safetensors")
    pixels = ref["pixel_values"]
    rows = []
    for name in ("tiny_official.pth", "tiny_official.safetensors"):
        model = load_official_model(fixtures / name)
        with torch.no_grad():
            out = model(pixels, output_hidden_states=True)
        hidden = dict(zip(("stem", "stage1", "stage2", "stage3", "stage4_context", "focus16", "focus"),
                          out.hidden_states))
        rows.append((f"{name}: logits", relative_error(out.logits, ref["logits"])))
        for key in ("stage2", "stage3", "stage4_context", "focus"):
            rows.append((f"{name}: {key}", relative_error(hidden[key], ref[key])))
        model.train()
        with torch.no_grad():
            out = model(pixels)
        rows.append((f"{name}: train_logits_main", relative_error(out.logits, ref["train_logits_main"])))
        rows.append((f"{name}: train_logits_aux", relative_error(out.aux_logits, ref["train_logits_aux"])))
    official_reparam = load_official_model(fixtures / "tiny_official_reparam.safetensors")
    ours_reparam = load_official_model(fixtures / "tiny_official.pth").reparameterize()
    with torch.no_grad():
        rows.append(("tiny_official_reparam.safetensors: logits_reparam",
                     relative_error(official_reparam(pixels).logits, ref["logits_reparam"])))
        rows.append(("our reparameterize() of tiny_official.pth: logits_reparam",
                     relative_error(ours_reparam(pixels).logits, ref["logits_reparam"])))
    print("| output | max abs error / max abs ref |\n|---|---|")
    for label, error in rows:
        print(f"| {label} | {error:.1e} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "fixtures")
