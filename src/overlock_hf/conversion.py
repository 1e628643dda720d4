"""Convert a released OverLoCK checkpoint (`.pth` or `.safetensors`) into a transformers model folder.

The folder gets `model.safetensors` (float32), `config.json` (every field inferred from the checkpoint's
shapes, the variant recorded when it matches one), the model code with a complete `auto_map`,
`preprocessor_config.json` (the official evaluation transform) and a model card naming the input file and its
SHA-256. :func:`overlock_hf.export.write_model_folder` writes it (staging folder, verification, move into
place): a failed conversion leaves nothing behind.

    overlock-hf convert CHECKPOINT OUTPUT_DIR [--variant overlock-t] [--ema]
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint_mapping import (
    CheckpointError,
    config_from_official_state_dict,
    convert_official_state_dict,
    resolve_variant,
    unwrap_state_dict,
)
from .configuration_overlock import IMAGENET_NUM_LABELS, imagenet1k_id2label
from .export import (
    VERIFY_INPUT_SIZE,
    check_target,
    quiet_progress_bars,
    read_image_size,
    write_model_folder,
)
from .modeling_overlock import OverLoCKForImageClassification


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
    if config.num_labels == IMAGENET_NUM_LABELS:
        config.id2label = imagenet1k_id2label()
        config.label2id = {label: index for index, label in config.id2label.items()}
    with torch.device("meta"):  # no random init of weights that are overwritten next
        model = OverLoCKForImageClassification(config)
    converted = convert_official_state_dict(state, config, model.state_dict())
    owned = {  # float32 copies: the model never aliases the caller's tensors
        key: tensor.to(dtype=torch.float32 if tensor.is_floating_point() else tensor.dtype, copy=True,
                       memory_format=torch.contiguous_format)
        for key, tensor in converted.items()
    }
    model.load_state_dict(owned, strict=True, assign=True)
    return model.eval()


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
    check_target(output_dir, overwrite)  # before the slow part
    model = load_official_model(checkpoint, variant=variant, use_ema=use_ema)
    if reparameterize:
        model.reparameterize()
    return write_model_folder(model, output_dir, overwrite=overwrite, source=checkpoint,
                              derivation="converted from the checkpoint")


def reparameterize_folder(folder: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """A plain model folder -> the folded one (``overlock-hf reparameterize FOLDER OUTPUT_DIR``); returns it.

    Every DilatedReparam is folded (:meth:`OverLoCKPreTrainedModel.reparameterize`); the folded model's logits
    must match the plain model's within ``1e-5 * max|logits|`` on a random input before anything is written, and
    the folder is written and verified by :func:`overlock_hf.export.write_model_folder` (same processor crop).
    """
    folder = Path(folder)
    check_target(output_dir, overwrite)
    weights = folder / "model.safetensors"
    if not (folder / "config.json").is_file() or not weights.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (it needs config.json and model.safetensors)")
    with quiet_progress_bars():
        model = OverLoCKForImageClassification.from_pretrained(folder).eval()
    if model.config.reparameterized:
        raise ValueError(f"{folder} is already re-parameterized (config.json: reparameterized = true)")
    pixels = torch.randn(VERIFY_INPUT_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(pixel_values=pixels).logits
        folded = model.reparameterize()(pixel_values=pixels).logits
    relative = float((plain - folded).abs().max() / plain.abs().max())
    if not relative <= 1e-5:
        raise RuntimeError(f"re-parameterizing {folder} changed the logits by {relative:.3g} * max|logits| (> 1e-5)")
    return write_model_folder(
        model, output_dir, overwrite=overwrite, image_size=read_image_size(folder), source=weights,
        source_name=f"{folder.name}/model.safetensors",
        derivation=f"re-parameterized (logits changed by {relative:.1e} x max|logits|) from the plain weights",
    )
