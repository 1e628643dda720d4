"""Lazy imports of the optional analysis dependencies (captum, matplotlib, tqdm), with an error naming the extra."""

from __future__ import annotations

import importlib

EXTRA_HINT = "pip install 'overlock-hf[analysis]'"


def require(module: str):
    """Import `module` (e.g. `"captum.attr"`, `"matplotlib.pyplot"`), or raise ImportError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise ImportError(
            f"overlock_hf.analysis needs the optional package {package!r} ({error}); install it with {EXTRA_HINT}"
        ) from error
