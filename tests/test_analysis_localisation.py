"""Acceptance: Grad-CAM localises. A compact OverLoCK trained for a few minutes on the synthetic shapes task
(class = the shape of one object at a random position on clutter) must classify it, and its Focus-Net CAM must
point at the object (pointing game) on >= 80% of held-out images and more often than the Overview-Net CAM.

The figures depend on the training seed far more than on float rounding. Measured 2026-12-06 (1 thread):
- 300 steps (the old default), seeds 0-5: Focus-Net 0.76-0.94 (mean 0.82, three of six below 0.8), Overview-Net
  0.33-0.46; the code before the CPU-speed work gave 0.68 and 0.91 for seeds 0 and 1.
- 600 steps (the default now), seeds 0-5: Focus-Net 0.835-0.98 (mean 0.90), Overview-Net 0.28-0.94, accuracy
  0.975-0.985; the Focus-Net beats the Overview-Net for five seeds of six (seed 4: 0.91 against 0.935).
The test trains seed 0 (0.835 and 0.56 at 600 steps), as it always has."""

from __future__ import annotations

import pytest
import torch

from overlock_hf.analysis import grad_cam, make_shapes_batch, pointing_game, train_shapes_model
from overlock_hf.analysis.shapes import SHAPES_INPUT_SIZE, normalise

INPUT = SHAPES_INPUT_SIZE  # the 128-pixel scenes are fed at 224: both CAMs are 7x7 (stride 32)
MARGIN = 7  # pixels around the object's box at 224 (4 pixels of the 128-pixel scene)


@pytest.fixture(scope="module")
def scores():
    """Accuracy and pointing-game hit rates (Focus-Net, Overview-Net) on 200 held-out images."""
    model = train_shapes_model(seed=0, input_size=INPUT)  # 600 steps of 24 images
    held_out = make_shapes_batch(200, generator=torch.Generator().manual_seed(12345), input_size=INPUT)
    pixels = normalise(held_out.images)
    with torch.no_grad():
        accuracy = (model(pixel_values=pixels).logits.argmax(1) == held_out.labels).float().mean().item()
    cams = grad_cam(model, pixels, target=held_out.labels)
    focus = pointing_game(cams.focus, held_out.boxes, MARGIN).float().mean().item()
    overview = pointing_game(cams.overview, held_out.boxes, MARGIN).float().mean().item()
    return accuracy, focus, overview


@pytest.mark.slow
def test_model_learns_and_focus_net_localises_better_than_overview_net(scores):
    accuracy, focus, overview = scores
    assert accuracy >= 0.9, f"the model did not learn the task: accuracy {accuracy:.3f} (chance 0.25)"
    assert focus > overview, f"Focus-Net pointing game {focus:.3f} <= Overview-Net {overview:.3f}"


@pytest.mark.slow
def test_focus_net_cam_points_at_the_object_on_80_percent(scores):
    accuracy, focus, overview = scores
    assert focus >= 0.8, f"Focus-Net pointing game {focus:.3f} < 0.8 (Overview-Net {overview:.3f}, " \
                         f"accuracy {accuracy:.3f})"
