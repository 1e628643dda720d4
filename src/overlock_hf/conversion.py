"""Convert a released OverLoCK checkpoint (`.pth` or `.safetensors`) into a transformers model folder.

The folder gets `model.safetensors` (float32), `config.json` (every field inferred from the checkpoint's
shapes, the variant recorded when it matches one), the model code with a complete `auto_map`,
`preprocessor_config.json` (the official evaluation transform) and a model card. It is written to a
temporary folder beside the target, reloaded and checked against the in-memory model, then moved into place:
a failed conversion leaves nothing behind.

    overlock-hf convert CHECKPOINT OUTPUT_DIR [--variant overlock-t] [--ema]
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from .checkpoint_mapping import (
    CheckpointError,
    config_from_official_state_dict,
    convert_official_state_dict,
    resolve_variant,
    unwrap_state_dict,
)
from .configuration_overlock import OverLoCKConfig
from .modeling_overlock import OverLoCKForImageClassification

IMAGENET_LABELS = Path(__file__).resolve().parent / "data" / "imagenet1k_id2label.json"
VERIFY_INPUT_SIZE = (1, 3, 64, 64)


def load_checkpoint_file(path: str | Path) -> dict:
    """Load a `.safetensors` or torch-pickled checkpoint (with `weights_only=True`) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or foreign files raise many different types
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error


def load_official_model(
    checkpoint: str | Path | dict, variant: str | None = None, use_ema: bool = False
) -> OverLoCKForImageClassification:
    """Build the transformers model of an official checkpoint (path or loaded dict) with its weights, in eval mode."""
    loaded = load_checkpoint_file(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    state = unwrap_state_dict(loaded, use_ema=use_ema)
    config = resolve_variant(config_from_official_state_dict(state), insist=variant)
    _set_labels(config)
    model = OverLoCKForImageClassification(config)
    model.load_state_dict(convert_official_state_dict(state, config, model.state_dict()), strict=True)
    return model.float().eval()


def _set_labels(config: OverLoCKConfig) -> None:
    if config.num_labels == 1000:
        labels = json.loads(IMAGENET_LABELS.read_text())
        config.id2label = {int(k): v for k, v in labels.items()}
        config.label2id = {v: int(k) for k, v in labels.items()}


def _verify_reload(model: OverLoCKForImageClassification, folder: Path) -> None:
    """Reload the written folder and require logits identical to the in-memory model's."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(VERIFY_INPUT_SIZE, generator=generator)
    reloaded = OverLoCKForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        expected, got = model(pixels).logits, reloaded(pixels).logits
    if not torch.equal(expected, got):
        raise RuntimeError(
            f"the written folder does not reproduce the converted model (max |diff| {float((expected - got).abs().max()):.3g})"
        )


def write_model_folder(model: OverLoCKForImageClassification, output_dir: str | Path, overwrite: bool = False,
                       checkpoint_name: str | None = None) -> Path:
    """Write model, code, processor config and model card to `output_dir` atomically (temp folder, verify, move)."""
    from .image_processing_overlock import save_image_processor
    from .model_card import render_model_card

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {output_dir} exists and is not empty (pass --overwrite to replace it)")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        save_image_processor(staging, crop_pct=model.config.crop_pct)
        card = render_model_card(model.config, checkpoint_name=checkpoint_name)
        (staging / "README.md").write_text(card, encoding="utf-8")
        _verify_reload(model, staging)
        if output_dir.exists():
            backup = output_dir.with_name(f".{output_dir.name}.old-{staging.name[-8:]}")
            output_dir.rename(backup)
            staging.rename(output_dir)
            shutil.rmtree(backup)
        else:
            staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def convert_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    variant: str | None = None,
    use_ema: bool = False,
    reparameterize: bool = False,
    overwrite: bool = False,
) -> Path:
    """Convert a released checkpoint to a transformers folder; returns the folder.

    Args:
        checkpoint: `.pth` / `.pt` / `.bin` (loaded with `weights_only=True`) or `.safetensors`, holding the state
            dict bare or under `state_dict` / `model` (`state_dict_ema` with `use_ema`), `module.` prefixes allowed.
        output_dir: the folder to create (must not exist or be empty unless `overwrite`).
        variant: insist that the checkpoint is this released variant (`overlock-xt`/`-t`/`-s`/`-b`).
        reparameterize: fold the DilatedReparam branches before saving (a plain checkpoint -> `_reparam` folder).
    Raises:
        CheckpointError (a ValueError) naming missing / unexpected / mis-shaped keys, an unreadable file or a
        variant mismatch; nothing is written then.
    """
    model = load_official_model(checkpoint, variant=variant, use_ema=use_ema)
    if reparameterize:
        model.reparameterize()
    return write_model_folder(model, output_dir, overwrite=overwrite, checkpoint_name=Path(checkpoint).name)
