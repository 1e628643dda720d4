"""Minimal stand-ins for the packages the released ``models/overlock.py`` imports, so that the benchmark can
build it from a checkout (``--official-source DIR``) without timm, einops, NATTEN or mmengine installed.

* ``timm.models.layers``: ``DropPath`` (stochastic depth), ``to_2tuple``; ``timm.models.registry.register_model``
  (identity decorator); ``timm.data`` mean/std constants.
* ``einops``: ``rearrange`` for the axis patterns of the released file (names, parenthesised groups, sizes
  as keyword arguments) and ``einsum(a, b, "b g c n, b g c l -> b g n l")``.
* ``natten.functional.na2d_av``: the unfold formulation (every window materialized, ``K*K`` times the
  values, as the released code pays without NATTEN's fused kernels); shapes ``attn (B, G, H, W, K*K)``,
  ``value (B, G, H, W, C)`` -> ``(B, G, H, W, C)``.
* ``mmengine.runner.load_checkpoint``: refuses (the benchmark uses random weights).
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
import types
from pathlib import Path

import torch
from torch import nn

from overlock_hf.contmix import window_starts


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1 - self.drop_prob
        return x * x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep) / keep


def _groups(side: str) -> list[list[str]]:
    return [group.split() if group else [name]
            for group, name in re.findall(r"\(([^)]*)\)|(\w+)", side)]


def rearrange(x: torch.Tensor, pattern: str, **sizes) -> torch.Tensor:
    left, right = (_groups(side) for side in pattern.split("->"))
    atoms = dict(sizes)
    for group, size in zip(left, x.shape):
        unknown = [name for name in group if name not in atoms]
        known = math.prod(atoms[name] for name in group if name in atoms)
        if unknown:
            atoms[unknown[0]] = size // known
    flat = [name for group in left for name in group]
    order = [flat.index(name) for group in right for name in group]
    x = x.reshape([atoms[name] for name in flat]).permute(order)
    return x.reshape([math.prod(atoms[name] for name in group) for group in right])


def einsum(*operands_and_pattern):
    *operands, pattern = operands_and_pattern
    inputs, output = pattern.split("->")
    letters = {}
    spec = ",".join("".join(letters.setdefault(n, chr(97 + len(letters))) for n in part.split())
                    for part in inputs.split(","))
    spec += "->" + "".join(letters[n] for n in output.split())
    return torch.einsum(spec, *operands)


def na2d_av(attn: torch.Tensor, value: torch.Tensor, kernel_size: int, dilation: int = 1) -> torch.Tensor:
    if dilation != 1:
        raise NotImplementedError("the benchmark's na2d_av stand-in supports dilation 1 only")
    b, g, h, w, c = value.shape
    k = kernel_size
    if h < k or w < k:  # as NATTEN: a window never leaves the map, so the map must hold one
        raise ValueError(f"na2d_av: a {h}x{w} map is smaller than kernel_size={k}")
    rows = window_starts(h, k, value.device)[:, None] + torch.arange(k, device=value.device)  # (H, K)
    cols = window_starts(w, k, value.device)[:, None] + torch.arange(k, device=value.device)  # (W, K)
    windows = value[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # (B, G, H, W, K, K, C)
    return torch.einsum("bghwt,bghwtc->bghwc", attn, windows.reshape(b, g, h, w, k * k, c))


def _refuse_checkpoint(*args, **kwargs):
    raise RuntimeError("the benchmark builds the released model with random weights; no checkpoint loading")


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def install() -> None:
    """Register the stand-ins in ``sys.modules`` (only for packages that are not installed)."""
    stubs = {
        "timm": dict(data=_module("timm.data", IMAGENET_DEFAULT_MEAN=(0.485, 0.456, 0.406),
                                  IMAGENET_DEFAULT_STD=(0.229, 0.224, 0.225))),
        "timm.models": {},
        "timm.models.layers": dict(DropPath=DropPath, to_2tuple=lambda v: v if isinstance(v, tuple) else (v, v)),
        "timm.models.registry": dict(register_model=lambda fn: fn),
        "einops": dict(rearrange=rearrange, einsum=einsum),
        "natten": {},
        "natten.functional": dict(na2d_av=na2d_av),
        "mmengine": {},
        "mmengine.runner": dict(load_checkpoint=_refuse_checkpoint),
    }
    installed = {root for root in {name.split(".")[0] for name in stubs}
                 if root in sys.modules or importlib.util.find_spec(root) is not None}
    for name, attributes in stubs.items():
        if name.split(".")[0] not in installed:
            sys.modules[name] = _module(name, **attributes)


def load_released_module(source: Path) -> types.ModuleType:
    """Import ``models/overlock.py`` from a checkout of the released code (or the file itself)."""
    path = source / "models" / "overlock.py" if source.is_dir() else source
    if not path.is_file():
        raise FileNotFoundError(f"--official-source: no models/overlock.py under {source}")
    install()
    spec = importlib.util.spec_from_file_location("released_overlock", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


__all__ = ["install", "load_released_module"]
