"""The one writer of OverLoCK model folders, and the check of a folder before it is used or pushed.

:func:`write_model_folder` is what conversion (``overlock-hf convert``), ``overlock-hf reparameterize``, the
fine-tuning examples' final save and (through :func:`check_model_folder`) the Hub pre-push check share. It
writes ``model.safetensors``, ``config.json`` with the full ``auto_map``, the model code,
``preprocessor_config.json`` with the model's own ``crop_pct`` and the ``README.md`` model card into a staging
folder beside the target, verifies them, then renames the folder into place:

* every tensor of the written ``model.safetensors`` equals the in-memory state dict bit for bit (dtype, shape,
  bytes), and the reloaded model's logits agree with the in-memory model's within ``1e-5 * max|logits|``
  (bit-equal logits are not to be expected: the reloaded tensors sit at other memory alignments, so oneDNN may
  sum in another order);
* the folder and its files get the permissions of ``os.mkdir`` / ``open`` under the user's umask (what
  ``save_pretrained`` into a new folder gives), not the ``0700`` of a temporary directory;
* staging (``.NAME.staging-PID-XXXX``) and replaced (``.NAME.replaced-PID-XXXX``) folders left by a killed run
  (their PID is no longer running) are removed by the next write to the same target;
* ``overwrite=True`` replaces an existing model folder, but refuses (naming them) when it holds files this
  writer does not write.

(A little over 300 lines: the writer and the folder check it ends with, which the Hub push reuses, belong
together.)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path

import torch

from .modeling_overlock import CODE_FILES
from .progress import quiet_progress_bars

__all__ = [
    "WRITTEN_FILES", "check_model_folder", "check_target", "file_sha256", "quiet_progress_bars",
    "read_image_size", "verify_model_folder", "write_model_folder",
]

REQUIRED_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "README.md")
REQUIRED_AUTO_MAP = ("AutoConfig", "AutoModel", "AutoModelForImageClassification")
# Every name a model folder written here may hold (the exact image processor adds its module).
WRITTEN_FILES = frozenset(REQUIRED_MODEL_FILES + CODE_FILES + ("image_processing_overlock.py",))
LOGITS_RTOL = 1e-5
VERIFY_INPUT_SIZE = (1, 3, 64, 80)  # batch, channels, height, width of the random reload-check input
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import\s", re.MULTILINE)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ checks
def _check_weights_file(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``path`` equals ``state`` bit for bit (same keys, dtype, shape, bytes); returns them."""
    from safetensors.torch import load_file

    written = load_file(str(path))
    missing, extra = sorted(set(state) - set(written)), sorted(set(written) - set(state))
    if missing or extra:
        raise RuntimeError(f"{path} does not hold the model's state dict: missing {missing[:10]}, extra {extra[:10]}")
    for key, tensor in state.items():
        tensor, got = tensor.detach().cpu(), written[key]
        if tensor.dtype != got.dtype or tensor.shape != got.shape:
            raise RuntimeError(f"{path}: {key} was written as {got.dtype} {tuple(got.shape)}, the model holds "
                               f"{tensor.dtype} {tuple(tensor.shape)}")
        if not torch.equal(tensor.contiguous().view(-1).view(torch.uint8), got.contiguous().view(-1).view(torch.uint8)):
            raise RuntimeError(f"{path}: {key} differs from the model's tensor (not bit-identical)")
    return written


@torch.no_grad()
def verify_model_folder(model: torch.nn.Module, folder: str | Path) -> float:
    """Check ``folder`` against the in-memory ``model``: weights bit-exact, reloaded logits within
    ``1e-5 * max|logits|`` on a random ``VERIFY_INPUT_SIZE`` input, in eval mode (``model`` itself is left as
    it is). With the weights proven bit-exact, the logits test what else the folder says (the config), so a
    float32 model is compared in float64 (copies of both models): float32 rounding differs between a model and
    its reload (other memory alignment, another oneDNN summation order) and is amplified to 2e-5 .. 2e-4 of
    max|logits| through the deeper S / B networks with random weights, which would hide nothing but fail the
    check. Lower-precision models are compared in their own dtype within ``8 * eps``. The reloaded model is rebuilt
    from the written ``config.json`` and ``model.safetensors`` (a strict load: the config describes exactly
    these weights), without transformers' loading machinery, which costs seconds at full size and is tested on
    its own. Returns the measured ``max|diff| / max|logits|``; raises ``RuntimeError`` naming the folder
    otherwise."""
    folder = Path(folder)
    written = _check_weights_file(model.state_dict(), folder / "model.safetensors")
    parameter = next(model.parameters())
    compute = torch.float64 if parameter.dtype == torch.float32 else parameter.dtype
    config = type(model.config).from_pretrained(folder)
    with torch.device("meta"):
        reloaded = type(model)(config)
    reloaded.load_state_dict(written, strict=True, assign=True)
    reloaded = reloaded.to(parameter.device, compute).eval()
    reference = copy.deepcopy(model).to(compute).eval()
    pixels = torch.randn(VERIFY_INPUT_SIZE, generator=torch.Generator().manual_seed(0))
    pixels = pixels.to(parameter.device, compute)
    expected = reference(pixel_values=pixels).logits
    del reference
    if not torch.isfinite(expected).all():
        raise RuntimeError(f"not writing {folder}: the model's own logits are not finite (NaN / inf) on a random "
                           f"{tuple(VERIFY_INPUT_SIZE)} input, so its weights are broken")
    got = reloaded(pixel_values=pixels).logits
    tolerance = LOGITS_RTOL if compute == torch.float64 else max(LOGITS_RTOL, 8 * torch.finfo(compute).eps)
    scale = float(expected.abs().max())
    relative = float((expected - got).abs().max()) / max(scale, 1e-30)
    if not relative <= tolerance:
        raise RuntimeError(f"the model folder {folder} does not reproduce the model: reloaded logits differ by "
                           f"{relative:.3g} * max|logits| (max|logits| = {scale:.3g}; allowed {tolerance:g})")
    return relative


def check_model_folder(folder: str | Path, check_weights: bool = True) -> Path:
    """Check that ``folder`` is a complete, loadable model folder (before a Hub push, and for every write).

    Required: ``config.json`` whose ``auto_map`` names ``AutoConfig``, ``AutoModel`` and
    ``AutoModelForImageClassification``; every module it references (``module.Class`` -> ``module.py``) and
    every module those import relatively (``from .x import``), so that ``trust_remote_code`` loading works;
    ``model.safetensors``, ``preprocessor_config.json`` and ``README.md``. For an OverLoCK config, the weights'
    keys and shapes must be those of the configured model and the processor's ``crop_pct`` the config's.
    (``check_weights=False`` skips the weights, for a folder whose weights were just verified otherwise.)
    Raises ``FileNotFoundError`` / ``ValueError`` naming what is wrong; returns the folder as a ``Path``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    missing = [name for name in REQUIRED_MODEL_FILES if not (folder / name).is_file()]
    if missing:
        hint = " (write the card with overlock_hf.model_card.write_model_card)" if "README.md" in missing else ""
        raise FileNotFoundError(
            f"{folder} is not a complete converted model folder: missing {', '.join(missing)}{hint}"
        )
    config = _read_json(folder / "config.json")
    auto_map = config.get("auto_map") or {}
    absent = [name for name in REQUIRED_AUTO_MAP if name not in auto_map]
    if absent:
        raise ValueError(
            f"{folder / 'config.json'}: auto_map lacks {', '.join(absent)}; without them the model cannot be loaded "
            "with trust_remote_code=True (save with OverLoCKPreTrainedModel.save_pretrained, which writes the full map)"
        )
    references = [r for value in auto_map.values() for r in (value if isinstance(value, list) else [value]) if r]
    pending, seen = sorted({str(r).split("--")[-1].rsplit(".", 1)[0] for r in references}), set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = folder / f"{module}.py"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} lacks {path.name}, code that trust_remote_code loading needs")
        pending.extend(_RELATIVE_IMPORT.findall(path.read_text(encoding="utf-8")))
    if check_weights and config.get("model_type") == "overlock":
        _check_weights_fit_config(folder)
    return folder


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def _check_weights_fit_config(folder: Path) -> None:
    """The weights file holds exactly the configured model's keys and shapes (read from its header only)."""
    from safetensors import safe_open

    from .configuration_overlock import OverLoCKConfig
    from .modeling_overlock import OverLoCKForImageClassification

    config = OverLoCKConfig.from_pretrained(folder)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in OverLoCKForImageClassification(config).state_dict().items()}
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        found = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [f"{k} has shape {found[k]}, the config needs {expected[k]}"
                 for k in expected if k in found and found[k] != expected[k]]
    if problems:
        raise ValueError(f"{folder / 'model.safetensors'} does not fit {folder / 'config.json'} "
                         f"({len(problems)} problems): {'; '.join(problems[:8])}")
    crop = _read_json(folder / "preprocessor_config.json").get("crop_pct")
    if crop is not None and abs(float(crop) - config.crop_pct) > 1e-9:
        raise ValueError(f"{folder / 'preprocessor_config.json'}: crop_pct {crop} is not the model's "
                         f"crop_pct {config.crop_pct} (config.json)")


def read_image_size(folder: str | Path, default: int = 224) -> int:
    """The evaluation size of a folder's ``preprocessor_config.json`` (``size``: ``shortest_edge`` of the
    ConvNeXt-style processor, else ``height``), ``default`` without one."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return default
    size = _read_json(path).get("size", default)
    return int(size.get("shortest_edge", size.get("height", default)) if isinstance(size, dict) else size)


# ------------------------------------------------------------------------------------------------ writing
def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_stale_siblings(target: Path) -> None:
    """Remove staging / replaced folders of ``target`` whose writing process no longer runs."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:staging|replaced)-(\d+)-[0-9a-f]+$")
    for sibling in target.parent.iterdir():
        match = pattern.match(sibling.name)
        if match and sibling.is_dir() and not _pid_running(int(match.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)


def check_target(output_dir: str | Path, overwrite: bool) -> None:
    """Raise ``FileExistsError`` unless :func:`write_model_folder` may write ``output_dir`` (absent, empty, or with
    ``overwrite`` a folder holding only files it writes); callers check before slow work."""
    target = Path(output_dir)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"output {target} exists and is not a folder")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"output folder {target} exists and is not empty (pass --overwrite to replace it)")
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in target.iterdir()
                     if p.name not in WRITTEN_FILES or not p.is_file())
    if foreign:
        raise FileExistsError(
            f"--overwrite replaces a model folder, but {target} also holds files this writer does not write: "
            f"{', '.join(foreign)}. Move them away (nothing was changed) or choose another output folder."
        )


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _set_normal_permissions(folder: Path) -> None:
    """Folder ``0o777``, files ``0o666``, minus the umask: what a new folder and ``open`` give (some writers,
    safetensors' among them, create ``0o600`` files)."""
    mask = _current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~mask)


def _sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
        return
    replaced = _sibling(target, "replaced")
    target.rename(replaced)
    try:
        staging.rename(target)
    except BaseException:
        replaced.rename(target)
        raise
    shutil.rmtree(replaced)


def write_model_folder(
    model,
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    image_size: int = 224,
    source: str | Path | None = None,
    source_name: str | None = None,
    derivation: str = "converted from the checkpoint",
    card_note: str = "",
) -> Path:
    """Write ``model`` (an ``OverLoCKPreTrainedModel``) as a complete model folder at ``output_dir``.

    Args:
        model: the model to save; its ``state_dict()`` is written as is (its dtype), its mode is kept.
        output_dir: the folder; it must not exist or be empty, unless ``overwrite`` (see the module docstring).
        image_size: the evaluation crop of ``preprocessor_config.json`` (resize to ``int(size / crop_pct)``).
        source: the file the weights come from; the model card names it with its SHA-256.
        source_name: the name the card gives ``source`` (default: its file name).
        derivation: how the weights come from ``source``, completing "The weights were ... `NAME`".
        card_note: Markdown appended to the model card.
    Returns the folder. On any failure nothing is left but what was at ``output_dir`` before.
    """
    from .image_processing_overlock import save_image_processor
    from .model_card import render_model_card

    target = Path(output_dir).absolute()
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(target)
    staging = _sibling(target, "staging")
    os.mkdir(staging)  # mode 0o777 minus the umask, like any new folder
    try:
        with quiet_progress_bars():
            model.save_pretrained(staging, safe_serialization=True)
        save_image_processor(staging, crop_pct=model.config.crop_pct, image_size=image_size)
        relative = verify_model_folder(model, staging)
        card = render_model_card(
            model.config,
            checkpoint_name=source_name or Path(source).name if source is not None else None,
            checkpoint_sha256=file_sha256(source) if source is not None and Path(source).is_file() else None,
            derivation=derivation,
            reload_relative_diff=relative,
            num_parameters=sum(parameter.numel() for parameter in model.parameters()),
        )
        if card_note:
            card = card.rstrip() + "\n\n" + card_note.strip() + "\n"
        (staging / "README.md").write_text(card, encoding="utf-8")
        _set_normal_permissions(staging)
        check_model_folder(staging, check_weights=False)  # verify_model_folder loaded them strictly
        check_target(target, overwrite)  # again: the folder may have changed while this one was written
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Path(output_dir)
