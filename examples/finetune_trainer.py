"""Fine-tune OverLoCK for image classification with the 🤗 Transformers `Trainer`.

The same task as `finetune_accelerate.py`, set up by the same `overlock_hf.training.prepare_finetuning` (data,
models, augmentation, processor) and evaluated by the same `evaluate_classifier`, written the `Trainer` way: a
`compute_loss_func` that adds the auxiliary Overview-Net loss to the main loss, both label-smoothed (the Trainer's
own `label_smoothing_factor` would smooth the main logits only and drop the auxiliary loss).

    python examples/finetune_trainer.py --output_dir trainer_output            # digits demo, compact model
    accelerate launch --multi_gpu --num_processes 8 examples/finetune_trainer.py \
        --model org/overlock-t --dataset path/to/image_folder --ignore_mismatched_sizes --bf16

Resuming (`--resume_from_checkpoint checkpoints/checkpoint-N` or `latest`) is exact, as in the Accelerate script:
the augmentation of each image depends on `(seed, epoch, index)` only, the Trainer's seedable sampler on
`(seed, epoch)`, and the Trainer restores the RNG state (drop path) from the checkpoint.

Output folder: `model/` (weights, config, code, processor, model card; uploaded by `--push_to_hub`), the Trainer's
`checkpoints/checkpoint-N/`, and `metrics.json` (final evaluation).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from pathlib import Path

import torch
from finetune_options import base_parser, parse
from transformers import Trainer, TrainerCallback, TrainingArguments

from overlock_hf import training
from overlock_hf.data import collate
from overlock_hf.export import write_model_folder

def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; the defaults fine-tune the compact model on the embedded digits."""
    parser = base_parser(__doc__.split("\n\n")[0], output_dir="trainer_output")
    extra = parser.add_argument_group("trainer")
    extra.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    extra.add_argument("--fp16", action="store_true", help="float16 mixed precision")
    extra.add_argument("--save_strategy", default="epoch", choices=["no", "epoch", "steps"], help="checkpoints")
    extra.add_argument("--save_steps", type=int, default=500, help="checkpoint interval with --save_strategy steps")
    extra.add_argument("--report_to", default="none", help="Trainer integrations (none, tensorboard, wandb, ...)")
    return parse(parser, argv)


def _training_arguments(args: argparse.Namespace) -> TrainingArguments:
    fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    # transformers 5 folds `warmup_ratio` into `warmup_steps` (a float below 1 is a ratio); 4.x has both
    warmup = {"warmup_ratio": args.warmup_ratio} if "warmup_ratio" in fields else {"warmup_steps": args.warmup_ratio}
    # transformers 5 renames `gradient_checkpointing` to `activation_checkpointing`
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return TrainingArguments(
        output_dir=str(Path(args.output_dir) / "checkpoints"), num_train_epochs=args.num_epochs,
        max_steps=args.max_steps or -1, per_device_train_batch_size=args.per_device_batch_size,
        per_device_eval_batch_size=args.eval_batch_size, learning_rate=args.learning_rate, lr_scheduler_type="cosine",
        gradient_accumulation_steps=args.gradient_accumulation_steps, max_grad_norm=args.max_grad_norm,
        bf16=args.bf16, fp16=args.fp16, eval_strategy="epoch", save_strategy=args.save_strategy,
        save_steps=args.save_steps, logging_steps=args.logging_steps, report_to=args.report_to,
        dataloader_num_workers=args.num_workers, dataloader_pin_memory=torch.cuda.is_available(),
        seed=args.seed, **warmup, **{checkpointing: args.gradient_checkpointing},
    )


class _AugmentationEpoch(TrainerCallback):
    """Tells the training set which epoch starts (its per-sample augmentation seeds depend on it), whatever the
    data loader wrapping forwards."""

    def __init__(self, train_set):
        self.train_set = train_set

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.train_set.set_epoch(int(state.epoch + 1e-6))


class ClassifierTrainer(Trainer):
    """A `Trainer` whose evaluation is `overlock_hf.training.evaluate_classifier` (accuracy and loss of the main
    head, gathered over processes), the same function the Accelerate script runs."""

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        loader = self.get_eval_dataloader(eval_dataset)
        with self.accelerator.autocast():
            metrics = training.evaluate_classifier(self.model, loader, gather=self.accelerator.gather_for_metrics)
        metrics = {f"{metric_key_prefix}{key[len('eval'):]}": value for key, value in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def finetune(args: argparse.Namespace) -> dict:
    """Train, evaluate, save `model/` (and push it); returns the final evaluation metrics."""
    checkpoint = None
    if args.resume_from_checkpoint:
        checkpoint = training.resolve_checkpoint(args.resume_from_checkpoint, args.output_dir, training.TRAINER_LAYOUT)
    setup = training.prepare_finetuning(args)
    model = setup.model
    loss = functools.partial(training.classification_loss, label_smoothing=args.label_smoothing,
                             aux_loss_weight=model.config.aux_loss_weight)
    trainer = ClassifierTrainer(
        model=model, args=_training_arguments(args), train_dataset=setup.train_set, eval_dataset=setup.eval_set,
        data_collator=collate, processing_class=setup.processor, compute_loss_func=loss,
        callbacks=[_AugmentationEpoch(setup.train_set)],
        optimizers=(torch.optim.AdamW(training.parameter_groups(model, args.weight_decay), lr=args.learning_rate),
                    None),
    )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        _save(args, trainer.model, setup, metrics)
    return metrics


def _save(args: argparse.Namespace, model, setup, metrics: dict) -> None:
    output_dir = Path(args.output_dir)
    note = (f"## Fine-tuning\n\nFine-tuned with `examples/finetune_trainer.py` on `{args.dataset}` "
            f"({len(setup.label_names)} classes, {setup.image_size}x{setup.image_size} inputs): validation accuracy "
            f"{metrics['eval_accuracy']:.4f}.")
    model_dir = write_model_folder(model, output_dir / "model", overwrite=True, image_size=setup.image_size,
                                        card_note=note)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"held-out accuracy: {metrics['eval_accuracy']:.4f}; model saved to {model_dir}")
    if args.push_to_hub:
        print(training.push_model_folder(model_dir, args.push_to_hub, private=args.hub_private))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        finetune(args)
    except training.FinetuningError as error:
        sys.exit(f"finetune_trainer.py: error: {error}")
    return 0


if __name__ == "__main__":
    main()
