"""The work behind `overlock-hf cam` and `overlock-hf erf`: load models and images, compute, write the figures,
the raw maps and the tables."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from . import plotting
from ._optional import require
from .erf import DEFAULT_THRESHOLDS, effective_receptive_field, erf_area_ratios
from .gradcam import grad_cam

__all__ = ["cam_report", "erf_report", "find_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def find_images(paths) -> list[Path]:
    """Image files among `paths` (files, or folders searched recursively), sorted within each folder."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such image or folder: {path}")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def _write_json(path: Path, payload) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        json.dump(payload, stream, indent=2)
        stream.write("\n")
    os.replace(temporary, path)


def _write_text(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, temporary)
    os.replace(temporary, path)


def _normalisation(processor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = getattr(processor, "image_mean", None) or IMAGENET_MEAN
    std = getattr(processor, "image_std", None) or IMAGENET_STD
    return torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)


def _with_progress(batches, description: str, total: int):
    """Yield `batches` (of `len` images each) while a progress bar counts the images."""
    with require("tqdm").tqdm(desc=description, total=total, unit="image") as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))


# ---------------------------------------------------------------------------------------------------- cam
def _resolve_target(target: str | None, config) -> int | None:
    if target is None:
        return None
    if target.lstrip("-").isdigit():
        return int(target)
    by_name = {str(name).lower(): int(i) for i, name in config.id2label.items()}
    if target.lower() not in by_name:
        raise ValueError(f"--target {target!r} is neither a class index nor a class name of the model")
    return by_name[target.lower()]


def cam_report(model_name: str, inputs, output_dir, target: str | None = None, image_size: int | None = None,
               batch_size: int = 8) -> list[Path]:
    """Grad-CAM figures of `model_name` (folder or Hub id) for the images in `inputs` (files or folders).

    Writes, under `output_dir`: `<image>_cam.png` per image (input | Overview-Net CAM | Focus-Net CAM),
    `cam_grid.png` (all images), `cam_maps.safetensors` (`overview`, `focus` `(N, H, W)`, `target`,
    `probability` `(N,)`) and `cam_maps.json` (per image: file, figure, target, label, probability). The
    images go through the model's own processor (`image_size`: its crop size instead of the default).
    Returns the paths of the figures.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = find_images(inputs)
    model = AutoModelForImageClassification.from_pretrained(model_name)
    overrides = {"size": {"shortest_edge": image_size}} if image_size else {}
    processor = AutoImageProcessor.from_pretrained(model_name, **overrides)
    mean, std = _normalisation(processor)
    class_index = _resolve_target(target, model.config)
    results, figures, names = [], [], set()
    chunks = (files[start : start + batch_size] for start in range(0, len(files), batch_size))
    for chunk in _with_progress(chunks, "Grad-CAM", len(files)):
        pixels = processor(images=[Image.open(f).convert("RGB") for f in chunk], return_tensors="pt")["pixel_values"]
        cams = grad_cam(model, pixels, target=class_index)
        for i, file in enumerate(chunk):
            image = (pixels[i] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
            stem = file.stem
            while stem in names:
                stem = f"{stem}_{len(names)}"
            names.add(stem)
            cls = int(cams.target[i])
            label = str(model.config.id2label.get(cls, cls))
            caption = f"{label} (class {cls}): p = {float(cams.probability[i]):.3f}"
            overview, focus = cams.overview[i].numpy(), cams.focus[i].numpy()
            figures.append(plotting.save_cam_figure(output_dir / f"{stem}_cam.png", image, overview, focus, caption))
            results.append(dict(file=str(file), figure=figures[-1].name, target=cls, label=label,
                                probability=float(cams.probability[i]), image=image, overview=overview,
                                focus=focus, caption=caption))
    figures.append(plotting.save_cam_grid(output_dir / "cam_grid.png",
                                          [(r["image"], r["overview"], r["focus"], r["caption"]) for r in results]))
    stacked = {key: torch.from_numpy(np.stack([r[key] for r in results])) for key in ("overview", "focus")}
    stacked["target"] = torch.tensor([r["target"] for r in results])
    stacked["probability"] = torch.tensor([r["probability"] for r in results])
    _write_safetensors(output_dir / "cam_maps.safetensors", stacked)
    keep = ("file", "figure", "target", "label", "probability")
    _write_json(output_dir / "cam_maps.json", {"model": model_name, "images": [{k: r[k] for k in keep}
                                                                               for r in results]})
    return figures


# ---------------------------------------------------------------------------------------------------- erf
def _data_images(data) -> tuple[int, Callable[[int], Image.Image]]:
    """`(count, load(i) -> PIL image)` for an image folder or a `datasets` folder saved with `save_to_disk`."""
    data = Path(data)
    if (data / "dataset_info.json").is_file() or (data / "dataset_dict.json").is_file():
        datasets = require("datasets")
        dataset = datasets.load_from_disk(str(data))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset["validation"] if "validation" in dataset else dataset[next(iter(dataset))]
        column = next((c for c in ("image", "img") if c in dataset.column_names), None)
        if column is None:
            raise ValueError(f"dataset {data} has no 'image' or 'img' column (columns: {dataset.column_names})")
        return len(dataset), lambda i: dataset[int(i)][column]
    files = find_images([data])
    return len(files), lambda i: Image.open(files[i])


def _model_label(name: str) -> str:
    return Path(str(name).rstrip("/")).name or str(name)


def erf_report(models, data, output_dir, num_images: int = 300, image_size: int = 224, seed: int = 0,
               batch_size: int = 8, feature: str = "focus", thresholds=DEFAULT_THRESHOLDS) -> list[Path]:
    """ERFs of `models` (folders or Hub ids, loaded with `AutoModel`) over `num_images` images of `data`
    sampled at random with `seed` (without replacement), each resized to `image_size` squared (bicubic, as
    RepLKNet's tools) and normalised with the model's processor mean/std (ImageNet's when it has none).

    Writes `<model>_erf.png` per model and `erf_all.png` (all side by side; every map as
    `log10(erf + 1) / max`, one colour scale), `erf_maps.safetensors` (the raw maps, one key per model) and
    `erf_area_ratios.json` / `.md` (the area ratios per model and threshold; the JSON also lists the sampled
    image indices, in DATA's sorted order). Returns the figure paths.
    """
    from transformers import AutoImageProcessor, AutoModel

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    count, load = _data_images(data)
    if count < num_images:
        raise ValueError(f"{data} holds {count} images, fewer than --num-images {num_images}")
    chosen = np.random.default_rng(seed).choice(count, size=num_images, replace=False)
    labels = [_model_label(m) for m in models]
    if len(set(labels)) != len(labels):
        labels = [f"{i}-{label}" for i, label in enumerate(labels)]
    maps, ratios, figures = {}, {}, []
    for name, label in zip(models, labels):
        model = AutoModel.from_pretrained(name)
        try:
            mean, std = _normalisation(AutoImageProcessor.from_pretrained(name))
        except (OSError, ValueError):  # no processor saved with the model
            mean, std = _normalisation(None)

        def batches():
            for start in range(0, num_images, batch_size):
                images = [load(i).convert("RGB").resize((image_size, image_size), Image.BICUBIC)
                          for i in chosen[start : start + batch_size]]
                pixels = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
                                      for im in images])
                yield (pixels - mean) / std

        maps[label] = effective_receptive_field(model, _with_progress(batches(), f"ERF {label}", num_images),
                                                feature=feature)
        ratios[label] = erf_area_ratios(maps[label], thresholds)
    scaled = {label: (np.log10(m.double().numpy() + 1) / np.log10(m.double().numpy() + 1).max()) for label, m in
              maps.items()}
    for label, data_map in scaled.items():
        figures.append(plotting.save_erf_figure(output_dir / f"{label}_erf.png", {label: data_map}))
    title = f"ERF over {num_images} images at {image_size}x{image_size}"
    figures.append(plotting.save_erf_figure(output_dir / "erf_all.png", scaled, title=title))
    _write_safetensors(output_dir / "erf_maps.safetensors", maps)
    _write_json(output_dir / "erf_area_ratios.json", {
        "models": dict(zip(labels, map(str, models))), "num_images": num_images, "image_size": image_size,
        "seed": seed, "sample": [int(i) for i in chosen], "feature": feature, "thresholds": list(thresholds),
        "area_ratios": {label: {str(t): r for t, r in ratio.items()} for label, ratio in ratios.items()},
    })
    header = "| model | " + " | ".join(f"t = {t}" for t in thresholds) + " |\n"
    header += "|---|" + "---|" * len(thresholds) + "\n"
    rows = "".join(f"| {label} | " + " | ".join(f"{100 * r:.1f}%" for r in ratio.values()) + " |\n"
                   for label, ratio in ratios.items())
    _write_text(output_dir / "erf_area_ratios.md",
                f"High-contribution area ratio ({title}): the smallest centred square holding a fraction t of "
                f"log10(ERF + 1) / max, as a percentage of the image.\n\n{header}{rows}")
    return figures
