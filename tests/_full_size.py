"""Full-size official-layout checkpoints for the conversion tests, generated from the shapes fixture.

Values are randomized like the reference fixtures (``../shared/fixtures/README.md``): every floating-point
tensor moves the logits. Scales, read off ``tiny_official.safetensors`` and applied by key name:

* conv / linear weights (2-D and more): ``N(0, 1 / fan_in)`` (``fan_in`` = product of the trailing dims), but
  ``N(0, 0.01 / fan_in)`` for the residual position-encoding depthwise convs (``dwconv``, ``dwconv1``,
  ``dwconv2``: ``x + dwconv(x)``), which at full scale would multiply the activations by ~1.4 per conv
  (Focus-Net activations of 1e8 in B, beyond float16); trained ones are small;
* LayerScale weights (``ls``, ``ls1``, ``ls2``, ``x_scale``, ``h_scale``; shape ``(C, 1, 1, 1)``): ``U(0.5, 1.5)``;
* BatchNorm ``running_var``: ``U(0.5, 1.5)``, ``running_mean``: ``N(0, 0.1^2)``, then (``calibrated=True``, the
  default) replaced by what training leaves there: the statistics of each BatchNorm's input on a random batch.
  With the tiny fixture's uncalibrated statistics a full-size network's activations grow by 10-100x per stage
  (B's logits reach 1e11 and overflow at some input sizes), which no trained checkpoint does;
* norm weights (1-D ``weight``): ``1 + N(0, 0.1^2)``; every bias, GRN ``gamma`` / ``beta``: ``N(0, 0.1^2)``;
* relative position bias tables ``rpb1`` / ``rpb2``: ``N(0, 0.3^2)``;
* ``num_batches_tracked``: int64 counters.
"""

from __future__ import annotations

import functools
import json
import math
import re

import torch

from conftest import fixture_path

_LAYER_SCALE = re.compile(r"\.(ls\d?|x_scale|h_scale)\.weight$")
_POSITION_CONV = re.compile(r"\.dwconv\d?\.weight$")


@functools.cache
def official_shapes() -> dict:
    """``{variant: {"plain" | "reparam": {key: shape}}}`` of the eight released layouts."""
    return json.loads(fixture_path("official_state_dict_shapes.json").read_text())


def _random_tensor(key: str, shape: list[int], generator: torch.Generator) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.randint(1000, 100000, (), generator=generator, dtype=torch.int64)

    def normal(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    name = key.rsplit(".", 1)[-1]
    if _LAYER_SCALE.search(key) or name == "running_var":
        return uniform(0.5, 1.5)
    if name in ("rpb1", "rpb2"):
        return normal(0.3)
    if name in ("running_mean", "bias", "gamma", "beta"):
        return normal(0.1)
    if name == "weight" and len(shape) == 1:
        return 1.0 + normal(0.1)
    gain = 0.1 if _POSITION_CONV.search(key) else 1.0
    return normal(gain / math.sqrt(math.prod(shape[1:])))


def random_official_state_dict(variant: str, layout: str, seed: int = 0, calibrated: bool = True) -> dict:
    """A float32 state dict in the official layout of ``variant`` (``overlock_xt`` ...) / ``layout``
    (``plain`` / ``reparam``), with the value scales above."""
    generator = torch.Generator().manual_seed(seed)
    state = {key: _random_tensor(key, shape, generator) for key, shape in official_shapes()[variant][layout].items()}
    if calibrated:
        _calibrate_batch_norm(state, generator)
    return state


@torch.no_grad()
def _calibrate_batch_norm(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """Set every ``running_mean`` / ``running_var`` of ``state`` to its BatchNorm's batch statistics on a
    random ``(2, 3, 128, 128)`` input (one train-mode forward with momentum 1), in place."""
    from overlock_hf.checkpoint_mapping import map_official_key
    from overlock_hf.conversion import load_official_model

    model = load_official_model(state)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0
    model.train()(torch.randn(2, 3, 128, 128, generator=generator))
    ours = model.state_dict()
    for key in state:
        if key.endswith(("running_mean", "running_var")):
            state[key] = ours[map_official_key(key, model.config)].clone()


def stored(state: dict[str, torch.Tensor], dtype: torch.dtype, wrapper: str | None, prefix: str) -> dict:
    """``state`` as a user or a release stores it: floats cast to ``dtype``, keys prefixed with ``prefix``
    (``""`` or ``"module."``), bare (``wrapper=None``) or under ``wrapper`` (``"state_dict"`` / ``"model"``)."""
    cast = {prefix + k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    return cast if wrapper is None else {wrapper: cast, "epoch": 300}


def save_checkpoint(checkpoint: dict, path) -> None:
    """``torch.save`` for ``.pth``; ``safetensors`` for ``.safetensors`` (which holds a bare dict only)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(checkpoint, str(path))
    else:
        torch.save(checkpoint, path)
