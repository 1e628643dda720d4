"""Figures of the analysis tools (matplotlib, extra `analysis`): Grad-CAM panels (Figure A's form) and ERF heat
maps (Figure B's style). Figures are drawn on matplotlib's object API (no pyplot state) and written atomically.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ._optional import require

__all__ = ["cam_overlay", "save_cam_figure", "save_cam_grid", "save_erf_figure"]

CAM_COLORMAP = "jet"
ERF_COLORMAP = "RdYlGn"  # RepLKNet's ERF figures


def _figure(width: float, height: float):
    figure_module = require("matplotlib.figure")
    return figure_module.Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: str | os.PathLike) -> Path:
    """Write `figure` as a PNG to `path` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, format="png")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`image (H, W, 3)` in [0, 1] blended with the colour-mapped `cam (H, W)` in [0, 1]: `(H, W, 3)`."""
    colormaps = require("matplotlib").colormaps
    heat = colormaps[CAM_COLORMAP](np.clip(cam, 0, 1))[..., :3]
    return np.clip((1 - alpha) * image + alpha * heat, 0, 1)


def _cam_row(axes, image, overview, focus, caption):
    panels = (image, cam_overlay(image, overview), cam_overlay(image, focus))
    for axis, panel, title in zip(axes, panels, ("input", "Overview-Net Grad-CAM", "Focus-Net Grad-CAM")):
        axis.imshow(panel, interpolation="nearest")
        axis.set_title(title, fontsize=9)
    axes[0].set_xlabel(caption, fontsize=8)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    for axis in axes[1:]:
        axis.set_axis_off()


def save_cam_figure(path, image: np.ndarray, overview: np.ndarray, focus: np.ndarray, caption: str) -> Path:
    """One image in Figure A's form: input | Overview-Net CAM overlay | Focus-Net CAM overlay, with `caption`
    (class name and score) under the input. `image (H, W, 3)` and the maps `(H, W)` in [0, 1]."""
    figure = _figure(9, 3.4)
    _cam_row(figure.subplots(1, 3), image, overview, focus, caption)
    return _save(figure, path)


def save_cam_grid(path, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]) -> Path:
    """All images, one `(image, overview, focus, caption)` row each, as in :func:`save_cam_figure`."""
    figure = _figure(9, 3.1 * len(rows))
    axes = figure.subplots(len(rows), 3, squeeze=False)
    for row_axes, row in zip(axes, rows):
        _cam_row(row_axes, *row)
    return _save(figure, path)


def save_erf_figure(path, maps: dict[str, np.ndarray], title: str | None = None) -> Path:
    """ERF heat maps side by side (one per entry of `maps`, name -> `(H, W)` already scaled to [0, 1]), all on
    one colour scale [0, 1] with one colour bar."""
    count = len(maps)
    figure = _figure(3.6 * count + 0.8, 3.8)
    axes = figure.subplots(1, count, squeeze=False)[0]
    image = None
    for axis, (name, data) in zip(axes, maps.items()):
        image = axis.imshow(data, cmap=ERF_COLORMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_title(name, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(image, ax=list(axes), shrink=0.85, label="log10(ERF + 1) / max")
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)
