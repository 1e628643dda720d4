"""Acceptance: Grad-CAM localises. A compact OverLoCK trained for a few minutes on the synthetic shapes task
(class = the shape of one object at a random position on clutter) must classify it and its Focus-Net CAM must
point at the object (pointing game) on >= 80% of held-out images, and more often than the Overview-Net CAM."""

from __future__ import annotations

import pytest
import torch

from overlock_hf.analysis import grad_cam, make_shapes_batch, pointing_game, train_shapes_model
from overlock_hf.analysis.shapes import normalise

MARGIN = 4  # pixels around the object's box (the CAMs are 4x4 at 128x128, upsampled bilinearly)


@pytest.mark.slow
def test_focus_net_cam_points_at_the_object():
    model = train_shapes_model(seed=0)  # 300 steps of 24 images at 128x128
    held_out = make_shapes_batch(200, generator=torch.Generator().manual_seed(12345))
    pixels = normalise(held_out.images)
    with torch.no_grad():
        accuracy = (model(pixel_values=pixels).logits.argmax(1) == held_out.labels).float().mean().item()
    assert accuracy >= 0.9, f"the model did not learn the task: accuracy {accuracy:.3f} (chance 0.25)"
    cams = grad_cam(model, pixels, target=held_out.labels)
    focus = pointing_game(cams.focus, held_out.boxes, MARGIN).float().mean().item()
    overview = pointing_game(cams.overview, held_out.boxes, MARGIN).float().mean().item()
    assert focus >= 0.8, f"Focus-Net pointing game {focus:.3f} < 0.8 (Overview-Net {overview:.3f})"
    assert focus > overview, f"Focus-Net pointing game {focus:.3f} <= Overview-Net {overview:.3f}"
