"""`quiet_progress_bars()`: the Hugging Face libraries' own progress bars off for a block (casting a column,
writing or loading one small model folder is not news to the user); each library's previous setting comes back."""

from __future__ import annotations

import contextlib
import importlib

__all__ = ["quiet_progress_bars"]

# (module, is-disabled query, disable, enable): datasets, transformers and huggingface_hub each have their own switch
_SWITCHES = (
    ("datasets", "are_progress_bars_disabled", "disable_progress_bars", "enable_progress_bars"),
    ("huggingface_hub.utils", "are_progress_bars_disabled", "disable_progress_bars", "enable_progress_bars"),
    ("transformers.utils.logging", None, "disable_progress_bar", "enable_progress_bar"),
)


@contextlib.contextmanager
def quiet_progress_bars():
    restore = []
    for module_name, query, disable, enable in _SWITCHES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # the training extra (datasets) is optional
            continue
        was_disabled = getattr(module, query)() if query else not module.is_progress_bar_enabled()
        getattr(module, disable)()
        if not was_disabled:
            restore.append(getattr(module, enable))
    try:
        yield
    finally:
        for enable in restore:
            enable()
