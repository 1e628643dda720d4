"""Fine-tune OverLoCK for image classification with the 🤗 Transformers `Trainer`.

The same task as `finetune_accelerate.py` (same data options, models, augmentation, loss and weight-decay groups),
written the `Trainer` way: `datasets.Dataset.with_transform` + a collate function (`remove_unused_columns=False`,
else the Trainer drops the image column), `compute_metrics` with the offline accuracy metric, and a
`compute_loss_func` that adds the auxiliary Overview-Net loss to the main loss, both label-smoothed (the Trainer's
own `label_smoothing_factor` would smooth the main logits only and drop the auxiliary loss).

    python examples/finetune_trainer.py --output_dir trainer_output            # digits demo, compact model
    accelerate launch --multi_gpu --num_processes 8 examples/finetune_trainer.py \
        --model org/overlock-t --dataset path/to/image_folder --ignore_mismatched_sizes --bf16

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

import evaluate
import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from overlock_hf.export import write_model_folder
from overlock_hf.finetuning import (
    FinetuningError,
    accuracy_metric_path,
    add_data_and_model_arguments,
    batch_transform,
    build_model,
    check_image_files,
    checkpoint_image_size,
    classification_loss,
    collate,
    eval_processor,
    load_image_dataset,
    make_train_transform,
    parameter_groups,
    prepare_columns,
    resolve_augmentation,
)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; the defaults fine-tune the compact model on the embedded digits."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_and_model_arguments(parser)
    parser.add_argument("--output_dir", default="trainer_output")
    parser.add_argument("--num_epochs", type=float, default=8)
    parser.add_argument("--max_steps", type=int, default=-1, help="overrides --num_epochs when > 0")
    parser.add_argument("--per_device_batch_size", type=int, default=32)
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--weight_decay", type=float, default=0.05)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--label_smoothing", type=float, default=0.1)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--save_strategy", default="epoch", choices=["no", "epoch", "steps"])
    parser.add_argument("--save_steps", type=int, default=500)
    parser.add_argument("--logging_steps", type=int, default=10)
    parser.add_argument("--report_to", default="none", help="Trainer integrations (none, tensorboard, wandb, ...)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint-N folder, or 'latest'")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", default=None, help="upload model/ to this Hub repo")
    parser.add_argument("--hub_private", action="store_true")
    return parser.parse_args(argv)


def _training_arguments(args: argparse.Namespace) -> TrainingArguments:
    fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    # transformers 5 folds `warmup_ratio` into `warmup_steps` (a float below 1 is a ratio); 4.x has both
    warmup = {"warmup_ratio": args.warmup_ratio} if "warmup_ratio" in fields else {"warmup_steps": args.warmup_ratio}
    # transformers 5 renames `gradient_checkpointing` to `activation_checkpointing`
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return TrainingArguments(
        output_dir=str(Path(args.output_dir) / "checkpoints"),
        num_train_epochs=args.num_epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_grad_norm=args.max_grad_norm,
        bf16=args.bf16,
        fp16=args.fp16,
        eval_strategy="epoch",
        save_strategy=args.save_strategy,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        report_to=args.report_to,
        remove_unused_columns=False,  # keep the image column for the transform
        dataloader_num_workers=args.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=args.seed,
        **warmup,
        **{checkpointing: args.gradient_checkpointing},
    )


def _datasets(args: argparse.Namespace):
    """`(splits, image_column, label_column, label_names)`: loaded, columns checked, subsets applied."""
    splits = load_image_dataset(args.dataset, args.dataset_config, args.validation_fraction, args.seed)
    splits, image_column, label_column, names = prepare_columns(splits, args.image_column, args.label_column)
    for split_name, limit in (("train", args.max_train_samples), ("validation", args.max_eval_samples)):
        if limit is not None:
            splits[split_name] = splits[split_name].select(range(min(limit, len(splits[split_name]))))
    if Path(args.dataset).is_dir():
        for split in splits.values():
            check_image_files(split, image_column)
    return splits, image_column, label_column, names


def _accuracy(metric):
    """`compute_metrics` for the Trainer: accuracy of the arg-max of the (main head's) logits."""
    def compute_metrics(eval_prediction) -> dict:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return metric.compute(predictions=np.argmax(logits, axis=-1), references=eval_prediction.label_ids)

    return compute_metrics


def finetune(args: argparse.Namespace) -> dict:
    """Train, evaluate, save `model/` (and push it); returns the final evaluation metrics."""
    splits, image_column, label_column, names = _datasets(args)
    model = build_model(args.model, names, drop_path_rate=args.drop_path_rate, aux_loss_weight=args.aux_loss_weight,
                        ignore_mismatched_sizes=args.ignore_mismatched_sizes)
    image_size, hflip, crop_min = resolve_augmentation(
        args.dataset, args.image_size, args.hflip_prob, args.crop_scale_min, checkpoint_image_size(args.model)
    )
    processor = eval_processor(args.model, model.config, image_size)
    train_transform = make_train_transform(image_size, hflip, crop_min, processor)

    def eval_transform(image):
        return processor(image, return_tensors="pt")["pixel_values"][0]

    train_set = splits["train"].with_transform(batch_transform(image_column, label_column, train_transform))
    eval_set = splits["validation"].with_transform(batch_transform(image_column, label_column, eval_transform))
    training_args = _training_arguments(args)
    loss = functools.partial(classification_loss, label_smoothing=args.label_smoothing,
                             aux_loss_weight=model.config.aux_loss_weight)
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set, data_collator=collate,
        processing_class=processor, compute_metrics=_accuracy(evaluate.load(accuracy_metric_path(), keep_in_memory=True)),
        compute_loss_func=loss,
        optimizers=(torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate), None),
    )
    resume = True if args.resume_from_checkpoint == "latest" else args.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=resume)
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        _save(args, trainer.model, names, image_size, metrics)
    return metrics


def _save(args: argparse.Namespace, model, names, image_size: int, metrics: dict) -> None:
    output_dir = Path(args.output_dir)
    note = (f"## Fine-tuning\n\nFine-tuned with `examples/finetune_trainer.py` on `{args.dataset}` ({len(names)} "
            f"classes, {image_size}x{image_size} inputs): validation accuracy {metrics['eval_accuracy']:.4f}.")
    model_dir = write_model_folder(model, output_dir / "model", overwrite=True, image_size=image_size, card_note=note)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"held-out accuracy: {metrics['eval_accuracy']:.4f}; model saved to {model_dir}")
    if args.push_to_hub:
        from overlock_hf.hub import push_model

        result = push_model(model_dir, args.push_to_hub, private=args.hub_private)
        print(f"pushed to {result.url} ({result.revision}, commit {result.commit_oid})")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        finetune(args)
    except FinetuningError as error:
        sys.exit(f"finetune_trainer.py: error: {error}")
    return 0


if __name__ == "__main__":
    main()
