"""Swap the model's pure-PyTorch ContMix for the fused kernel from the kernels hub (or a local build).

``kernelize(model, source, mode=...)`` maps the ``"ContMix"`` layer name (see
:class:`overlock_hf.contmix.ContMix`) to ``source`` and runs ``kernels.kernelize``. A caller mistake (an
unknown ``mode``, a ``source`` that is neither a folder path nor a repo id) raises before anything is tried. A kernel that cannot be loaded or used (``kernels`` missing, offline,
no build folder, no build for this torch, untrusted repository, ...) keeps the PyTorch path, with one warning that
says why.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from torch import nn

__all__ = ["LAYER_NAME", "kernelize"]

LAYER_NAME = "ContMix"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MODE_NAMES = {"inference": "INFERENCE", "training": "TRAINING", "torch_compile": "TORCH_COMPILE"}


def _check_mode(mode) -> None:
    """Reject an unknown mode name or a mode of the wrong type (before ``kernels`` is imported)."""
    if mode is None:
        return
    if isinstance(mode, str):
        unknown = [part for part in re.split(r"[|+,]", mode) if part.strip().lower() not in _MODE_NAMES]
        if unknown or not mode.strip():
            raise ValueError(f"unknown kernelize mode {unknown[0] if unknown else mode!r}; use "
                             f"{sorted(_MODE_NAMES)} (combinable as 'training|torch_compile') or a kernels.Mode")
        return
    if type(mode).__name__ != "Mode" or not type(mode).__module__.startswith("kernels"):
        raise TypeError(f"mode must be a string or kernels.Mode, got {type(mode).__name__}")


def _parse_mode(mode, training: bool):
    """``kernels.Mode`` from a checked mode (a Mode, a name or names joined by ``|``/``+``); None follows
    ``model.training``; a mode without inference/training gets the one matching ``model.training``."""
    from kernels import Mode

    if mode is None:
        return Mode.TRAINING if training else Mode.INFERENCE
    parsed = mode
    if isinstance(mode, str):
        parsed = None
        for part in re.split(r"[|+,]", mode):
            flag = getattr(Mode, _MODE_NAMES[part.strip().lower()])
            parsed = flag if parsed is None else parsed | flag
    if Mode.INFERENCE not in parsed and Mode.TRAINING not in parsed:
        parsed = parsed | (Mode.TRAINING if training else Mode.INFERENCE)
    return parsed


def _check_source(source) -> None:
    """A source is a Hub repo id (``org/name``) or a path; a path to a folder that is not there (yet) is a load
    failure, handled later. A bare word that is neither (``"inferenc"`` passed as the source) is a mistake."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"kernel source must be a folder path or a Hub repo id string, got {type(source).__name__}")
    text = os.fspath(source)
    if isinstance(source, os.PathLike) or os.path.exists(text) or _REPO_ID.match(text):
        return
    if text.strip() and (text.startswith(("~", ".")) or "/" in text or os.sep in text):
        return
    raise ValueError(f"kernel source {text!r} is neither a local build folder nor a Hub repo id (org/name)")


def _is_repo_id(source) -> bool:
    return isinstance(source, str) and not os.path.exists(source) and bool(_REPO_ID.match(source))


def _repository(source, trust_remote_code: bool):
    from kernels import LayerRepository, LocalLayerRepository

    if _is_repo_id(source):
        return LayerRepository(source, layer_name=LAYER_NAME, version=1, trust_remote_code=trust_remote_code)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"kernel source {str(source)!r} is neither a local build folder nor a Hub repo id")
    return LocalLayerRepository(path.resolve(), layer_name=LAYER_NAME)


def _load_failures() -> tuple[type[BaseException], ...]:
    """What loading a kernel raises when it is not available: ``kernels`` missing (ImportError), no build folder
    or files (OSError), ``kernels``' own "no build for this torch / untrusted publisher / no such layer"
    (ValueError, RuntimeError) and the Hub client's HTTP / transport errors (``hub._hub_errors``)."""
    from .hub import _hub_errors

    return (ImportError, OSError, ValueError, RuntimeError, *_hub_errors())


def _device_type(model: nn.Module, device) -> str:
    if device is not None:
        return device if isinstance(device, str) else device.type
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device.type
    return "cpu"


def kernelize(
    model: nn.Module,
    source: str | os.PathLike,
    mode=None,
    device=None,
    trust_remote_code: bool = False,
) -> nn.Module:
    """Replace the forward of every ``ContMix`` layer in ``model`` with the fused kernel's.

    Args:
        model: a model containing :class:`overlock_hf.contmix.ContMix` layers.
        source: a Hub repo id (``"org/name"``, loaded at kernel version 1) or a local kernel folder built by
            ``overlock-hf build-kernel`` (the folder holding ``build/``).
        mode: ``"inference"``, ``"training"``, ``"torch_compile"`` (combinable as ``"training|torch_compile"``)
            or a ``kernels.Mode``; ``None`` picks training or inference from ``model.training``. A mode
            without inference/training gets the one matching ``model.training``.
        device: device type to kernelize for (``"cpu"``, ``"cuda"``); ``None`` uses the model's.
        trust_remote_code: allow Hub repos of publishers that ``kernels`` does not trust by default.

    Returns:
        ``model`` (modified in place). On failure it is left unchanged and a single warning says why.
    """
    _check_mode(mode)
    _check_source(source)
    tagged = [m for m in model.modules() if getattr(type(m), "kernel_layer_name", None) == LAYER_NAME]
    saved_forwards = {id(m): m.__dict__.get("forward") for m in tagged}
    try:
        import kernels

        kernel_mode = _parse_mode(mode, model.training)
        device_type = _device_type(model, device)
        mapping = {LAYER_NAME: {device_type: _repository(source, trust_remote_code)}}
        with kernels.use_kernel_mapping(mapping):
            kernels.kernelize(model, mode=kernel_mode, device=device_type, use_fallback=True)
    except _load_failures() as error:  # the kernel is not available here: keep the reference path
        for module in tagged:
            previous = saved_forwards[id(module)]
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
        warnings.warn(
            f"overlock_hf.kernelize: keeping the PyTorch ContMix, the fused kernel from {str(source)!r} could "
            f"not be used ({type(error).__name__}: {error})",
            RuntimeWarning,
            stacklevel=2,
        )
    return model
