"""The synthetic shapes task and the pointing game (overlock_hf.analysis.shapes)."""

from __future__ import annotations

import torch

from overlock_hf.analysis import make_shapes_batch, pointing_game


def test_batches_are_reproducible_and_boxes_hold_the_object():
    first = make_shapes_batch(16, generator=torch.Generator().manual_seed(5))
    second = make_shapes_batch(16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.images, second.images) and torch.equal(first.boxes, second.boxes)
    assert first.images.shape == (16, 3, 128, 128) and 0 <= first.images.min() and first.images.max() <= 1
    top, left, bottom, right = first.boxes.unbind(1)
    assert ((bottom - top) >= 20).all() and ((bottom - top) <= 32).all() and ((right - left) <= 32).all()
    assert (top >= 0).all() and (left >= 0).all() and (bottom <= 128).all() and (right <= 128).all()
    assert set(first.labels.tolist()) <= {0, 1, 2, 3}


def test_pointing_game():
    maps = torch.zeros(3, 10, 10)
    maps[0, 2, 3] = 1.0  # inside (2..5, 2..5)
    maps[1, 8, 8] = 1.0  # outside, but inside with margin 4
    maps[2, 3:7, :3] = 1.0  # a flat maximum: its pixel nearest the centre (row 4 or 5, column 2) counts
    boxes = torch.tensor([[2, 2, 5, 5], [2, 2, 5, 5], [4, 2, 6, 3]])
    assert pointing_game(maps, boxes).tolist() == [True, False, True]
    assert pointing_game(maps, boxes, margin=4).tolist() == [True, True, True]
    assert not pointing_game(maps[2:], torch.tensor([[3, 0, 7, 2]])).item()  # the band's outer part does not


def test_upsampled_batch_is_the_same_scene_with_boxes_still_holding_the_object():
    rendered = make_shapes_batch(8, generator=torch.Generator().manual_seed(3))
    large = make_shapes_batch(8, generator=torch.Generator().manual_seed(3), input_size=224)
    assert large.images.shape == (8, 3, 224, 224) and torch.equal(large.labels, rendered.labels)
    back = torch.nn.functional.interpolate(large.images, size=(128, 128), mode="area")
    assert (back - rendered.images).abs().mean() < 0.05  # the same picture, resampled
    scaled = rendered.boxes.float() * 224 / 128
    assert (large.boxes[:, :2] <= scaled[:, :2]).all() and (large.boxes[:, 2:] >= scaled[:, 2:]).all()
    assert ((large.boxes[:, :2] - scaled[:, :2]) > -1).all() and ((large.boxes[:, 2:] - scaled[:, 2:]) < 1).all()
