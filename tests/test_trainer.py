"""Training integration: the auxiliary loss, gradient checkpointing and a short `Trainer` fine-tuning run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from PIL import Image
from transformers import AutoImageProcessor, Trainer, TrainingArguments

from _shared import converted_tiny_folder, tiny_config
from overlock_hf import OverLoCKForImageClassification
from overlock_hf.modeling_overlock import OverLoCKDynamicConvBlock, OverLoCKRepConvBlock

BLOCK_CLASSES = (OverLoCKRepConvBlock, OverLoCKDynamicConvBlock)
# transformers 5.x renames the *gradient_checkpointing* API to *activation_checkpointing* (old names warn until v6)
pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated and will be removed in v6:FutureWarning")


def _batch(seed: int = 0, size: int = 32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, size, size, generator=generator), torch.tensor([1, 7])


# ------------------------------------------------------------------------------------------------ auxiliary loss
def test_training_mode_adds_the_weighted_auxiliary_loss():
    torch.manual_seed(0)
    model = OverLoCKForImageClassification(tiny_config()).train()
    pixel_values, labels = _batch()
    outputs = model(pixel_values, labels=labels)
    assert outputs.aux_logits is not None and outputs.aux_logits.shape == (2, 10)
    expected = F.cross_entropy(outputs.logits, labels) + 0.4 * F.cross_entropy(outputs.aux_logits, labels)
    torch.testing.assert_close(outputs.loss, expected)

    model.eval()
    with torch.no_grad():
        outputs = model(pixel_values, labels=labels)
    assert outputs.aux_logits is None
    torch.testing.assert_close(outputs.loss, F.cross_entropy(outputs.logits, labels))


def test_zero_aux_loss_weight_disables_the_auxiliary_head():
    model = OverLoCKForImageClassification(tiny_config(aux_loss_weight=0.0)).train()
    pixel_values, labels = _batch()
    outputs = model(pixel_values, labels=labels)
    assert outputs.aux_logits is None
    torch.testing.assert_close(outputs.loss, F.cross_entropy(outputs.logits, labels))


# ------------------------------------------------------------------------------------------------ checkpointing
@pytest.fixture
def block_forward_calls(monkeypatch):
    """Counts `forward` calls of every OverLoCK block (module forward hooks do not fire on the recompute)."""
    calls = {"count": 0}
    for cls in BLOCK_CLASSES:
        original = cls.forward

        def counting_forward(self, *args, _original=original, **kwargs):
            calls["count"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", counting_forward)
    return calls


def test_gradient_checkpointing_recomputes_blocks_and_gives_the_same_gradients(block_forward_calls):
    """With drop path 0 both runs compute the same function (train-mode BatchNorm uses the batch statistics)."""
    torch.manual_seed(0)
    reference = OverLoCKForImageClassification(tiny_config(drop_path_rate=0.0)).train()
    checkpointed = copy.deepcopy(reference)
    checkpointed.gradient_checkpointing_enable()
    assert checkpointed.is_gradient_checkpointing
    num_blocks = sum(isinstance(m, BLOCK_CLASSES) for m in reference.modules())
    pixel_values, labels = _batch()

    reference(pixel_values, labels=labels).loss.backward()
    assert block_forward_calls["count"] == num_blocks
    loss = checkpointed(pixel_values, labels=labels).loss
    assert block_forward_calls["count"] == 2 * num_blocks
    loss.backward()
    assert block_forward_calls["count"] == 3 * num_blocks, "every block must be recomputed in the backward pass"

    # Relative to the largest gradient: biases feeding a train-mode BatchNorm have mathematically zero gradients
    # (rounding noise, ~1e-9), which the reentrant checkpoint (the 4.x default) sums in another order.
    largest = max(float(p.grad.abs().max()) for p in reference.parameters())
    for (name, ours), theirs in zip(checkpointed.named_parameters(), reference.parameters()):
        assert ours.grad is not None, name
        assert float((ours.grad - theirs.grad).abs().max()) <= 1e-5 * largest, name
    # Documented side effect: the recompute runs each block's train-mode BatchNorms a second time, so their
    # running statistics are updated twice per step (the stem's, outside any checkpointed block, once).
    block = checkpointed.overlock.base_net.stages[0].blocks[0]
    assert int(block.large_kernel_norm.num_batches_tracked) == 2
    assert int(checkpointed.overlock.embeddings.conv1[1].num_batches_tracked) == 1

    checkpointed.gradient_checkpointing_disable()
    assert not checkpointed.is_gradient_checkpointing
    checkpointed(pixel_values, labels=labels).loss.backward()
    assert block_forward_calls["count"] == 4 * num_blocks


def test_checkpointing_is_inactive_in_eval_mode(block_forward_calls):
    model = OverLoCKForImageClassification(tiny_config())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.eval()
    pixel_values, _ = _batch()
    model(pixel_values).logits.sum().backward()
    assert block_forward_calls["count"] == sum(isinstance(m, BLOCK_CLASSES) for m in model.modules())


# ------------------------------------------------------------------------------------------------ Trainer
def _brightness_dataset(count: int, seed: int) -> Dataset:
    """Synthetic two-class images: label 0 dark, label 1 bright, with noise; sizes vary."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        label = i % 2
        low = 140 if label else 0
        height, width = int(rng.integers(40, 60)), int(rng.integers(40, 60))
        images.append(Image.fromarray(rng.integers(low, low + 116, (height, width, 3), dtype=np.uint8)))
        labels.append(label)
    return Dataset.from_dict({"image": images, "label": labels})


def test_trainer_fine_tunes_a_converted_folder_on_a_new_label_set(tmp_path):
    folder = converted_tiny_folder()
    id2label = {0: "dark", 1: "bright"}
    model = OverLoCKForImageClassification.from_pretrained(
        folder, id2label=id2label, label2id={v: k for k, v in id2label.items()}, ignore_mismatched_sizes=True
    )
    processor = AutoImageProcessor.from_pretrained(folder, size={"shortest_edge": 32})

    def transform(batch):
        pixel_values = processor([image.convert("RGB") for image in batch["image"]], return_tensors="pt")
        return {"pixel_values": pixel_values["pixel_values"], "labels": batch["label"]}

    def collate(examples):
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["labels"] for e in examples]),
        }

    seen = []

    def record(module, args, kwargs, output):
        """Checks every training forward: auxiliary logits present and loss = main + 0.4 * aux."""
        labels = kwargs.get("labels")
        if labels is None:
            return
        aux = output.aux_logits
        seen.append((module.training, aux is not None))
        if aux is not None:
            expected = F.cross_entropy(output.logits, labels) + 0.4 * F.cross_entropy(aux, labels)
            torch.testing.assert_close(output.loss, expected)

    model.register_forward_hook(record, with_kwargs=True)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=8, max_steps=6,
        learning_rate=2e-3, warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        remove_unused_columns=False, dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, data_collator=collate,
        train_dataset=_brightness_dataset(16, seed=0).with_transform(transform),
        eval_dataset=_brightness_dataset(8, seed=1).with_transform(transform),
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6
    assert losses[-1] < losses[0] and sum(losses[-2:]) < sum(losses[:2]), losses
    assert seen and all(training and has_aux for training, has_aux in seen)

    seen.clear()
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_loss"])
    assert seen and not any(training or has_aux for training, has_aux in seen)
