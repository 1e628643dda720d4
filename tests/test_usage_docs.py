"""Every ```python block of docs/usage.md runs, offline, against a converted tiny checkpoint."""

from __future__ import annotations

import re

import pytest

from _shared import converted_tiny_folder
from conftest import REPO_ROOT

USAGE = REPO_ROOT / "docs" / "usage.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    """The ```python blocks of docs/usage.md, in order."""
    return BLOCK.findall(USAGE.read_text(encoding="utf-8"))


def test_usage_page_has_the_expected_sections():
    text = USAGE.read_text(encoding="utf-8")
    for needle in ("AutoModelForImageClassification", 'pipeline("image-classification"', "trust_remote_code=True",
                   "OverLoCKBackbone", "UperNetForSemanticSegmentation", "Trainer("):
        assert needle in text, needle
    assert len(python_blocks()) == 6


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_usage_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.setenv("OVERLOCK_MODEL_DIR", str(converted_tiny_folder()))
    monkeypatch.chdir(tmp_path)  # snippets that write (the Trainer's output_dir) write here
    code = compile(python_blocks()[index], f"docs/usage.md[python block {index}]", "exec")
    exec(code, {"__name__": "__main__"})


README = REPO_ROOT / "README.md"
README_MODEL = "converted/overlock-t"  # the folder name the README's quick start uses


def readme_blocks() -> list[str]:
    """The ```python blocks of README.md (its quick start), in order."""
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    """The README's snippets, with its example folder replaced by a converted tiny model and a real cat.jpg."""
    from PIL import Image

    blocks = readme_blocks()
    assert blocks and all(README_MODEL in block for block in blocks)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (320, 256), (180, 120, 60)).save(tmp_path / "cat.jpg")
    for index, block in enumerate(blocks):
        source = block.replace(README_MODEL, str(converted_tiny_folder()))
        exec(compile(source, f"README.md[python block {index}]", "exec"), {"__name__": "__main__"})
