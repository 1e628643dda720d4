"""The end-of-run preview: reload the saved folder with the Auto classes and the pipeline, predict a few held-out
images, print the predictions and draw them into a PNG grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ..progress import quiet_progress_bars

__all__ = ["draw_prediction_grid", "preview_predictions", "print_preview"]


def draw_prediction_grid(images: Sequence[Image.Image], predicted: Sequence[str], true: Sequence[str],
                         columns: int = 4, cell: int = 128) -> Image.Image:
    """A PNG-ready grid: each image with "pred X / true Y" under it (green when right, red when wrong)."""
    rows = max(1, -(-len(images) // columns))
    caption = 18
    grid = Image.new("RGB", (columns * cell, rows * (cell + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, pred, ref) in enumerate(zip(images, predicted, true)):
        x, y = (i % columns) * cell, (i // columns) * (cell + caption)
        grid.paste(image.convert("RGB").resize((cell - 8, cell - 8), Image.NEAREST), (x + 4, y + 4))
        colour = (0, 128, 0) if pred == ref else (200, 0, 0)
        draw.text((x + 4, y + cell), f"pred {pred} / true {ref}", fill=colour)
    return grid


def preview_predictions(model_dir: str | Path, images: Sequence[Image.Image], true: Sequence[str],
                        png_path: str | Path) -> list[tuple[str, float]]:
    """Reload `model_dir` with `AutoModelForImageClassification` and run the `image-classification` pipeline on
    `images`; writes the prediction grid to `png_path`. Returns `(top label, score)` per image."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    with quiet_progress_bars():
        model = AutoModelForImageClassification.from_pretrained(model_dir)
        processor = AutoImageProcessor.from_pretrained(model_dir)
    classify = pipeline("image-classification", model=model, image_processor=processor, device="cpu")
    top = [result[0] for result in classify(list(images), top_k=1)]
    predictions = [(item["label"], float(item["score"])) for item in top]
    draw_prediction_grid(images, [label for label, _ in predictions], true).save(png_path)
    return predictions


def print_preview(model_dir: Path, eval_set, names: Sequence[str], count: int, png_path: Path) -> None:
    """Predict the first `count` images of `eval_set` (an `EvalImageDataset`) with the reloaded `model_dir`,
    print them and draw them into `png_path`."""
    indices = range(min(count, len(eval_set)))
    images = [eval_set.image(i) for i in indices]
    true = [names[eval_set.label(i)] for i in indices]
    predictions = preview_predictions(model_dir, images, true, png_path)
    print("reloaded with AutoModelForImageClassification + pipeline; held-out predictions:")
    for i, ((label, score), ref) in enumerate(zip(predictions, true)):
        print(f"  image {i}: predicted {label} ({score:.2f}), true {ref}{'' if label == ref else '  <- wrong'}")
    print(f"prediction grid written to {png_path}")
