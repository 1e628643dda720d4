"""Make the example pictures of docs/analysis.md (docs/images/analysis_*.png) and their figures.

    PYTHONPATH=src python docs/analysis_figures.py WORK_DIR [TRAINED_MODEL_DIR]

Trains the compact OverLoCK on the synthetic shapes task (as tests/test_analysis_localisation.py does; a few
minutes on a CPU) unless TRAINED_MODEL_DIR holds one, saves it under WORK_DIR with an image processor
matching the training normalisation, scores accuracy and the pointing game on 200 held-out images
(docs/images/analysis_shapes_results.json), writes held-out images as PNGs and runs `overlock-hf cam` and
`overlock-hf erf` on them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers.image_utils import PILImageResampling
from overlock_hf.image_processing_overlock import ConvNextImageProcessorPil  # transformers 4.x: the PIL one

from overlock_hf import OverLoCKForImageClassification
from overlock_hf.analysis import grad_cam, make_shapes_batch, pointing_game, train_shapes_model
from overlock_hf.analysis.shapes import SHAPES_INPUT_SIZE, normalise
from overlock_hf.cli import main

IMAGES = Path(__file__).resolve().parent / "images"
SIZE = SHAPES_INPUT_SIZE  # the 128-pixel scenes at the model's input size, 224
MARGIN = 7  # pixels at 224 (4 pixels of the 128-pixel scene)


def save_pngs(images: torch.Tensor, folder: Path, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}_{i:03d}.png"
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def run(work: Path, trained: Path | None) -> None:
    model_dir = work / "overlock-shapes"
    model = OverLoCKForImageClassification.from_pretrained(trained) if trained else train_shapes_model()
    model.save_pretrained(model_dir)
    # the training input: bilinear resize to 224 (a no-op on the 224-pixel PNGs below), (x - 0.5) / 0.25
    ConvNextImageProcessorPil(size={"shortest_edge": SIZE}, crop_pct=1.0, resample=PILImageResampling.BILINEAR, image_mean=[0.5] * 3,
                              image_std=[0.25] * 3).save_pretrained(model_dir)

    held_out = make_shapes_batch(200, generator=torch.Generator().manual_seed(12345), input_size=SIZE)
    pixels = normalise(held_out.images)
    with torch.no_grad():
        accuracy = (model.eval()(pixel_values=pixels).logits.argmax(1) == held_out.labels).float().mean().item()
    cams = grad_cam(model, pixels, target=held_out.labels)
    results = dict(
        held_out_images=200, input_size=SIZE, accuracy=accuracy, margin_px=MARGIN,
        focus_pointing_game=pointing_game(cams.focus, held_out.boxes, MARGIN).float().mean().item(),
        overview_pointing_game=pointing_game(cams.overview, held_out.boxes, MARGIN).float().mean().item(),
        chance=(((held_out.boxes[:, 2:] - held_out.boxes[:, :2]) + 2 * MARGIN).prod(1) / SIZE**2).mean().item(),
    )
    print(json.dumps(results, indent=2))
    IMAGES.mkdir(exist_ok=True)
    (IMAGES / "analysis_shapes_results.json").write_text(json.dumps(results, indent=2) + "\n")

    examples = save_pngs(held_out.images[:4], work / "cam-images", "shapes")
    assert main(["cam", str(model_dir), *map(str, examples), "--output", str(work / "cam")]) == 0
    shutil.copyfile(work / "cam" / "cam_grid.png", IMAGES / "analysis_cam_grid.png")
    shutil.copyfile(work / "cam" / "shapes_000_cam.png", IMAGES / "analysis_cam_single.png")

    erf_images = make_shapes_batch(100, generator=torch.Generator().manual_seed(777), input_size=SIZE).images
    save_pngs(erf_images, work / "erf-images", "shapes")
    for feature in ("focus", "overview"):
        out = work / f"erf-{feature}"
        assert main(["erf", str(model_dir), str(work / "erf-images"), "--num-images", "100", "--image-size", str(SIZE),
                     "--feature", feature, "--output", str(out)]) == 0
        shutil.copyfile(out / "overlock-shapes_erf.png", IMAGES / f"analysis_erf_{feature}.png")
        shutil.copyfile(out / "erf_area_ratios.md", IMAGES / f"analysis_erf_{feature}.md")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    run(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None)
