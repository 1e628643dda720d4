"""The Hub model card (README.md) of a converted OverLoCK checkpoint.

:func:`render_model_card` writes YAML front matter the Hub validates (license, library, pipeline tag, tags,
datasets) and a body with what OverLoCK is, the variant and its size, the paper's ImageNet-1K accuracy for the
released weights, runnable usage snippets (with and without this package installed), how to switch on the fused
ContMix kernel, and the citation. Usage snippets are fenced ```python blocks that run as written against the Hub
the model was pushed to.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .configuration_overlock import VARIANTS

__all__ = [
    "CITATION", "PLACEHOLDER_NAMESPACE", "count_parameters", "render_model_card", "set_card_repo_id",
    "write_model_card",
]

ARXIV_URL = "https://arxiv.org/abs/2502.20087"
CODE_URL = "https://github.com/LMMMEng/OverLoCK"
RELEASE_URL = "https://github.com/LMMMEng/OverLoCK/releases/tag/v1"
CITATION = """@inproceedings{lou2025overlock,
  title     = {OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels},
  author    = {Lou, Meng and Yu, Yizhou},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2025}
}"""
PLACEHOLDER_NAMESPACE = "<org>"  # stands for the Hub namespace in a card rendered before the repo is known
KERNEL_REPO_NAME = "overlock-contmix"
TAGS = ["overlock", "image-classification", "vision", "convnet", "dynamic-convolution", "custom_code"]


def count_parameters(config) -> int:
    """Number of parameters of ``OverLoCKForImageClassification(config)``, counted on the meta device (no memory)."""
    import torch

    from .modeling_overlock import OverLoCKForImageClassification

    with torch.device("meta"):
        model = OverLoCKForImageClassification(config)
    return sum(parameter.numel() for parameter in model.parameters())


def _display_name(variant: str | None) -> str:
    """``"overlock-t"`` -> ``"OverLoCK-T"``; a custom configuration is just ``"OverLoCK"``."""
    return VARIANTS[variant].display_name if variant in VARIANTS else (variant or "OverLoCK")


def _provenance(name: str | None, sha256: str | None, derivation: str, reload_relative_diff: float | None) -> str:
    """What is known about where the weights come from, and what was measured: nothing more."""
    if not name:
        text = "The weights were not converted from a released checkpoint."
    else:
        text = f"The weights were {derivation} `{name}`" + (f" (SHA-256 `{sha256}`)" if sha256 else "")
        text += (f" with `overlock-hf`. This checksum was not compared with the files of the official [GitHub "
                 f"release v1]({RELEASE_URL}) of [LMMMEng/OverLoCK]({CODE_URL}); compare it yourself before "
                 "taking these for the released weights.")
    if reload_relative_diff is not None:
        text += (" When this folder was written, every tensor of `model.safetensors` was checked to equal the "
                 "in-memory weights bit for bit, and the reloaded model's logits to match the in-memory model's "
                 f"(max difference {reload_relative_diff:.1e} x max|logits| on a random input, computed in float64 for a float32 model).")
    return text


def render_model_card(
    config,
    *,
    repo_id: str | None = None,
    checkpoint_name: str | None = None,
    checkpoint_sha256: str | None = None,
    derivation: str = "converted from the checkpoint",
    reload_relative_diff: float | None = None,
    kernel_repo_id: str | None = None,
    num_parameters: int | None = None,
) -> str:
    """Render the README.md of a model repo holding ``config`` (an ``OverLoCKConfig``) and its weights.

    Args:
        config: the model configuration; ``variant``, ``reparameterized``, ``num_labels``, ``hidden_sizes``,
            ``depths``, ``focus_depths`` are read when present.
        repo_id: the Hub repo the card is for (used in the snippets); when unknown, ``"<org>/<variant>"``, which
            :func:`set_card_repo_id` (called by ``overlock_hf.hub.push_model``) fills in at upload time.
        checkpoint_name: name of the file the weights come from (a converted checkpoint), if any.
        checkpoint_sha256: its SHA-256, stated in the card.
        derivation: how the weights come from that file ("converted from the checkpoint", ...).
        reload_relative_diff: the measured ``max|diff| / max|logits|`` of the written folder's reload check.
        kernel_repo_id: the ContMix kernel repo; defaults to ``"<namespace of repo_id>/overlock-contmix"``.
        num_parameters: parameter count; computed on the meta device when not given.

    Returns the card as a string: YAML front matter, then Markdown.
    """
    variant = getattr(config, "variant", None)
    num_labels = int(getattr(config, "num_labels", 0) or 0)
    reparameterized = bool(getattr(config, "reparameterized", False))
    repo_id = repo_id or f"{PLACEHOLDER_NAMESPACE}/{variant or 'overlock'}"
    namespace = repo_id.split("/", 1)[0] if "/" in repo_id else PLACEHOLDER_NAMESPACE
    kernel_repo_id = kernel_repo_id or f"{namespace}/{KERNEL_REPO_NAME}"
    if num_parameters is None:
        num_parameters = count_parameters(config)
    name = _display_name(variant)
    imagenet = num_labels == 1000

    metadata = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "image-classification",
        "tags": list(TAGS),
    }
    if imagenet:
        metadata["datasets"] = ["imagenet-1k"]
        metadata["metrics"] = ["accuracy"]
    front_matter = yaml.safe_dump(metadata, sort_keys=False).strip()

    rows = [
        ("Variant", f"`{variant}`" if variant else "custom configuration"),
        ("Parameters", f"{num_parameters / 1e6:.2f} M ({'re-parameterized' if reparameterized else 'plain'} form)"),
        ("Base-Net + Overview-Net depths", _join(getattr(config, "depths", None))),
        ("Focus-Net depths", _join(getattr(config, "focus_depths", None))),
        ("Widths", _join(getattr(config, "hidden_sizes", None))),
        ("Classes", f"{num_labels}" + (" (ImageNet-1K)" if imagenet else "")),
        ("Evaluation input", "224 x 224"),
    ]
    if imagenet and variant in VARIANTS:
        rows.append(("ImageNet-1K top-1 of the released weights (paper; not measured for this file)",
                     f"{VARIANTS[variant].released_top1:.1f} %"))
    table = "\n".join(["| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in rows])

    provenance = _provenance(checkpoint_name, checkpoint_sha256, derivation, reload_relative_diff)
    reparam_note = (
        "These weights are re-parameterized: every dilated large-kernel branch is folded into one depthwise "
        "convolution, for inference. Fine-tune from the plain checkpoint instead."
        if reparameterized
        else "These weights are in the plain (training) form; `model.reparameterize()` folds the dilated "
        "large-kernel branches into single convolutions for faster inference, with the same outputs."
    )

    return f"""---
{front_matter}
---

# {name}{" (ImageNet-1K)" if imagenet else ""}

{name} is an image classifier from *OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing
Dynamic Kernels* (Meng Lou, Yizhou Yu, CVPR 2025; [arXiv]({ARXIV_URL}), [code]({CODE_URL})), packaged for
🤗 Transformers.

OverLoCK is a pure ConvNet that mimics top-down attention: it first takes an *overview*, then *looks closely*.

- **Base-Net** (stages 1-3) extracts low- and mid-level features with large-kernel convolutions.
- **Overview-Net** (stage 4) quickly computes coarse global context from them; an auxiliary classifier supervises
  it, and its output, reduced in width, becomes the *context prior*.
- **Focus-Net** refines the mid-level features under the guidance of the context prior, which it carries along
  and updates in every block. Its blocks use **ContMix**, a dynamic convolution whose per-pixel kernels come from
  the affinity between each pixel and region centres of the context, so that even a small kernel mixes global
  context while keeping the inductive bias of convolution.

{provenance}

{table}

{reparam_note}

## Usage

With the `overlock-hf` package installed (`pip install overlock-hf`), importing it registers OverLoCK with the
Auto classes:

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

import overlock_hf  # registers OverLoCK with the transformers Auto classes

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = AutoModelForImageClassification.from_pretrained("{repo_id}").eval()
image = Image.new("RGB", (320, 256), color=(180, 120, 60))  # or Image.open("your_image.jpg").convert("RGB")
inputs = processor(images=image, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
print(model.config.id2label[int(logits.argmax(-1))])

classifier = pipeline("image-classification", model="{repo_id}")
print(classifier(image, top_k=3))
```

Without the package, let Transformers load the model code stored in this repository:

```python
from PIL import Image
from transformers import pipeline

classifier = pipeline("image-classification", model="{repo_id}", trust_remote_code=True)
image = Image.new("RGB", (320, 256), color=(180, 120, 60))  # or Image.open("your_image.jpg").convert("RGB")
print(classifier(image, top_k=3))
```

`AutoModel` gives the features (Focus-Net output and hidden states), `AutoBackbone` multi-scale feature maps for
detection and segmentation heads.

## Fused ContMix kernel

The model runs everywhere with a pure-PyTorch ContMix. With `pip install "overlock-hf[kernels]"`, the fused
ContMix kernel from the kernels Hub replaces it (CPU and CUDA builds; the outputs match):

```python
import overlock_hf
from transformers import AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained("{repo_id}").eval()
model = overlock_hf.kernelize(model, "{kernel_repo_id}")
```

A kernel is compiled code: `kernels` loads it as written only from a publisher the Hub marks as a trusted kernel
publisher. For another publisher, opt in explicitly with
`overlock_hf.kernel_hub.kernelize(model, "{kernel_repo_id}", trust_remote_code=True)`. Whenever the kernel cannot
be used (no build for your torch, no trust, offline), the model keeps the PyTorch path and warns once.

## Citation

```bibtex
{CITATION}
```
"""


def _join(values) -> str:
    return ", ".join(str(value) for value in values) if values else "-"


def write_model_card(folder: str | Path, config, **kwargs) -> Path:
    """Render the card for ``config`` (see :func:`render_model_card` for ``kwargs``) into ``folder/README.md``."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(config, **kwargs), encoding="utf-8")
    return path


def set_card_repo_id(card: str, repo_id: str) -> str:
    """Fill the placeholders of a card rendered without ``repo_id``: ``<org>/overlock-contmix`` becomes the kernel
    repo in ``repo_id``'s namespace, any other ``<org>/<name>`` becomes ``repo_id``. Other cards are unchanged."""
    namespace = repo_id.split("/", 1)[0]
    card = card.replace(f"{PLACEHOLDER_NAMESPACE}/{KERNEL_REPO_NAME}", f"{namespace}/{KERNEL_REPO_NAME}")
    return re.sub(re.escape(PLACEHOLDER_NAMESPACE) + r"/[A-Za-z0-9._-]+", repo_id, card)
