"""A synthetic localisation task for checking attribution maps: one shape on clutter, class = the shape.

Each image holds one filled object (a disk, a square, a triangle or a cross; random colour, size and position)
on a noisy background strewn with small random-coloured specks and bars, smaller than the object and of no
class's shape. The object's bounding box is returned with it, so that a saliency map can be scored with the
pointing game (:func:`pointing_game`).
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch

SHAPE_NAMES = ("disk", "square", "triangle", "cross")


@dataclass
class ShapesBatch:
    """`images (B, 3, S, S)` in [0, 1], `labels (B,)` (index into `SHAPE_NAMES`), `boxes (B, 4)` as
    `(top, left, bottom, right)` pixel bounds of the object, inclusive-exclusive."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor


def _shape_mask(label: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Boolean `(size, size)` mask of one shape filling its box."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # (-1, 1)
    y, x = coords[:, None], coords[None, :]
    name = SHAPE_NAMES[label]
    if name == "disk":
        return x**2 + y**2 <= 1.0
    if name == "square":
        return torch.ones(size, size, dtype=torch.bool)
    if name == "triangle":  # apex up, base at the bottom
        return (y >= -1) & (x.abs() <= (y + 1) / 2)
    width = 0.3 + 0.1 * float(torch.rand((), generator=generator))  # cross: bar half-width
    return (x.abs() <= width) | (y.abs() <= width)


def make_shapes_batch(count: int, image_size: int = 128, object_size: tuple[int, int] = (30, 40),
                      clutter: int = 40, generator: torch.Generator | None = None) -> ShapesBatch:
    """`count` images of the shapes task at `image_size` pixels (objects `object_size` pixels wide, `clutter`
    specks/bars of 2-7 pixels each), drawn from `generator` (a seeded one makes the batch reproducible)."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.rand(shape, generator=generator)  # noqa: E731
    randint = lambda low, high: int(torch.randint(low, high, (), generator=generator))  # noqa: E731
    images = 0.15 + 0.25 * rand(count, 1, 1, 1) + 0.12 * rand(count, 3, image_size, image_size)
    labels = torch.randint(0, len(SHAPE_NAMES), (count,), generator=generator)
    boxes = torch.zeros(count, 4, dtype=torch.long)
    for i in range(count):
        for _ in range(clutter):
            h, w = randint(2, 5), randint(2, 5)
            if randint(0, 2):  # a bar rather than a speck
                h, w = (randint(1, 3), randint(4, 8)) if randint(0, 2) else (randint(4, 8), randint(1, 3))
            top, left = randint(0, image_size - h + 1), randint(0, image_size - w + 1)
            images[i, :, top : top + h, left : left + w] = rand(3, 1, 1)
        size = randint(object_size[0], object_size[1] + 1)
        top, left = randint(0, image_size - size + 1), randint(0, image_size - size + 1)
        mask = _shape_mask(int(labels[i]), size, generator)
        colour = 0.3 + 0.7 * rand(3, 1, 1)
        region = images[i, :, top : top + size, left : left + size]
        images[i, :, top : top + size, left : left + size] = torch.where(mask, colour, region)
        rows, cols = mask.any(dim=1).nonzero()[:, 0], mask.any(dim=0).nonzero()[:, 0]
        boxes[i] = torch.tensor([top + rows.min(), left + cols.min(), top + rows.max() + 1, left + cols.max() + 1])
    return ShapesBatch(images.clamp(0, 1), labels, boxes)


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """Boolean `(B,)`: whether the maximum of each map `(B, H, W)` lies inside its box `(B, 4)` (top, left,
    bottom, right; exclusive ends) grown by `margin` pixels on every side."""
    batch, _, width = maps.shape
    flat = maps.reshape(batch, -1).argmax(dim=1)
    rows, cols = flat // width, flat % width
    top, left, bottom, right = boxes.unbind(dim=1)
    return (rows >= top - margin) & (rows < bottom + margin) & (cols >= left - margin) & (cols < right + margin)


# The compact OverLoCK trained on the task (the fine-tuning examples' `compact` architecture, 4 classes).
SHAPES_CONFIG = dict(
    depths=[1, 1, 1, 1], focus_depths=[1, 1], hidden_sizes=[16, 32, 64, 96], kernel_sizes=[7, 7, 5, 5],
    small_kernel_size=3, focus_num_heads=[2, 2], projection_dim=128, num_labels=len(SHAPE_NAMES),
    id2label=dict(enumerate(SHAPE_NAMES)), label2id={name: i for i, name in enumerate(SHAPE_NAMES)},
)


def train_shapes_model(steps: int = 600, batch_size: int = 32, image_size: int = 128, lr: float = 2e-3,
                       warmup: int = 50, seed: int = 0, log_every: int = 0):
    """Train a compact `OverLoCKForImageClassification` from scratch on freshly drawn shapes batches.

    AdamW (`lr`, weight decay 0.05 on weights only), linear warmup over `warmup` steps then cosine decay, the
    model's own loss (main + auxiliary Overview-Net cross-entropy), BatchNorm in training mode. The inputs are
    the images normalised to mean 0.5 / std 0.25 per channel (see :func:`normalise`). Returns the model in
    eval mode.
    """
    from ..configuration_overlock import OverLoCKConfig
    from ..modeling_overlock import OverLoCKForImageClassification

    torch.manual_seed(seed)
    model = OverLoCKForImageClassification(OverLoCKConfig(**SHAPES_CONFIG)).train()
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0}],
                                  lr=lr)
    schedule = lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        batch = make_shapes_batch(batch_size, image_size, generator=generator)
        loss = model(pixel_values=normalise(batch.images), labels=batch.labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.3f}", flush=True)
    return model.eval()


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Model inputs from shapes images in [0, 1]: `(images - 0.5) / 0.25`."""
    return (images - 0.5) / 0.25
