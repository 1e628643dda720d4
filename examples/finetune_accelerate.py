"""Fine-tune OverLoCK for image classification with 🤗 Accelerate (no Trainer).

Run without arguments it is the demo: a compact OverLoCK trained from scratch on the embedded digits (scikit-learn's
8x8 digits upscaled to 64x64 RGB, no download) for a few minutes on a CPU; it prints the held-out accuracy, saves
a loadable model folder, reloads it with `AutoModelForImageClassification` and the `pipeline`, and draws a few
held-out predictions into a PNG.

    accelerate launch --cpu --num_processes 1 --mixed_precision no --dynamo_backend no \
        examples/finetune_accelerate.py --output_dir demo_output

The same script fine-tunes a checkpoint on real data on one or many GPUs (see docs/finetuning.md):

    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 examples/finetune_accelerate.py \
        --model org/overlock-t --dataset path/to/image_folder --ignore_mismatched_sizes --num_epochs 30

Output folder: `model/` (weights, config, code, processor, model card: what `--push_to_hub` uploads),
`checkpoints/step_N/` (`--checkpointing_steps`), `logs/metrics.jsonl` and `logs/config.json` (the JSON-lines
tracker), `logs/rank_K.json` (per-process summary: world size, per-step losses, a digest of the final weights),
`predictions.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from overlock_hf.export import write_model_folder
from overlock_hf.finetuning import (
    EpochShuffleSampler,
    EvalImageDataset,
    FinetuningError,
    JSONLinesTracker,
    TrainImageDataset,
    accuracy_metric_path,
    add_data_and_model_arguments,
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
    preview_predictions,
    resolve_augmentation,
    state_dict_digest,
)

CHECKPOINT_STATE = "training_state.json"


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; the defaults are the CPU demo."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_and_model_arguments(parser)
    multi_process = parser.add_argument_group("multi-process")
    multi_process.add_argument("--sync_bn", action="store_true",
                       help="synchronize BatchNorm statistics across processes (multi-GPU; not on CPU/gloo)")

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--num_epochs", type=int, default=8)
    optim.add_argument("--max_steps", type=int, default=None, help="optimizer steps (overrides --num_epochs)")
    optim.add_argument("--per_device_batch_size", type=int, default=32)
    optim.add_argument("--eval_batch_size", type=int, default=64)
    optim.add_argument("--learning_rate", type=float, default=2e-3)
    optim.add_argument("--weight_decay", type=float, default=0.05, help="on conv/linear weights only")
    optim.add_argument("--warmup_ratio", type=float, default=0.1, help="share of the steps with linear warmup")
    optim.add_argument("--label_smoothing", type=float, default=0.1)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping (0 disables)")
    optim.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default=None,
                       help="default: what `accelerate launch` / `accelerate config` says")
    optim.add_argument("--seed", type=int, default=42)

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default="demo_output")
    run.add_argument("--checkpointing_steps", type=int, default=None, help="save the training state every N steps")
    run.add_argument("--resume_from_checkpoint", default=None,
                     help="a checkpoints/step_N folder, or 'latest' (the newest in --output_dir)")
    run.add_argument("--logging_steps", type=int, default=10, help="log the training loss every N steps")
    run.add_argument("--report_to", default="jsonl",
                     help="comma-separated trackers: jsonl (built in), or any Accelerate knows (tensorboard, wandb...)")
    run.add_argument("--num_preview", type=int, default=8, help="held-out images to predict and draw at the end")
    run.add_argument("--push_to_hub", metavar="REPO_ID", default=None, help="upload model/ to this Hub repo")
    run.add_argument("--hub_private", action="store_true", help="create the Hub repo as private")
    args = parser.parse_args(argv)
    _check_args(parser, args)
    return args


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("num_epochs", "per_device_batch_size", "eval_batch_size", "gradient_accumulation_steps",
                 "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    for name in ("max_steps", "checkpointing_steps", "max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if not 0.0 <= args.label_smoothing < 1.0:
        parser.error("--label_smoothing must be in [0, 1)")
    if not 0.0 <= args.warmup_ratio < 1.0:
        parser.error("--warmup_ratio must be in [0, 1)")


def _make_accelerator(args: argparse.Namespace) -> Accelerator:
    output_dir = Path(args.output_dir)
    trackers = []
    for name in filter(None, (n.strip() for n in args.report_to.split(","))):
        trackers.append(JSONLinesTracker("finetune", output_dir / "logs") if name == "jsonl" else name)
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        log_with=trackers or None, project_dir=str(output_dir),
    )


def _load_data(args: argparse.Namespace, accelerator: Accelerator):
    """`(splits, image_column, label_column, label_names)`, subsets applied, image folders checked."""
    with accelerator.main_process_first():
        splits = load_image_dataset(args.dataset, args.dataset_config, args.validation_fraction, args.seed)
        splits, image_column, label_column, names = prepare_columns(splits, args.image_column, args.label_column)
    for split_name, limit in (("train", args.max_train_samples), ("validation", args.max_eval_samples)):
        if limit is not None:
            splits[split_name] = splits[split_name].select(range(min(limit, len(splits[split_name]))))
    if Path(args.dataset).is_dir():
        for split in splits.values():
            check_image_files(split, image_column)
    return splits, image_column, label_column, names


def _dataloaders(args, splits, image_column, label_column, processor, image_size, hflip, crop_min):
    transform = make_train_transform(image_size, hflip, crop_min, processor)
    train = TrainImageDataset(splits["train"], image_column, label_column, transform, args.seed)
    evaluation = EvalImageDataset(splits["validation"], image_column, label_column, processor)
    if len(train) < args.per_device_batch_size:
        raise FinetuningError(f"the train split has {len(train)} images, fewer than one batch "
                              f"(--per_device_batch_size {args.per_device_batch_size})")
    # own generators: creating an iterator then draws nothing from the global RNG (exact resume)
    train_loader = DataLoader(
        train, batch_size=args.per_device_batch_size, sampler=EpochShuffleSampler(len(train), args.seed),
        collate_fn=collate, num_workers=args.num_workers, drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    eval_loader = DataLoader(evaluation, batch_size=args.eval_batch_size, collate_fn=collate,
                             num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed))
    return train, evaluation, train_loader, eval_loader


def _resolve_checkpoint(path: str, output_dir: Path) -> Path:
    if path != "latest":
        checkpoint = Path(path)
    else:
        candidates = sorted((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        if not candidates:
            raise FinetuningError(f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'}")
        checkpoint = candidates[-1]
    if not (checkpoint / CHECKPOINT_STATE).is_file():
        raise FinetuningError(f"{checkpoint} is not a checkpoint of this script (no {CHECKPOINT_STATE})")
    return checkpoint


def _save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int) -> None:
    folder = output_dir / "checkpoints" / f"step_{step}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / CHECKPOINT_STATE).write_text(json.dumps({"completed_steps": step}) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()


@torch.no_grad()
def evaluate_model(model, eval_loader, accelerator: Accelerator, metric) -> dict:
    """Validation accuracy and loss (main head, no smoothing) over the whole validation split."""
    model.eval()
    losses, count = torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
    for batch in eval_loader:
        logits = model(pixel_values=batch["pixel_values"]).logits.float()
        predictions, references, logits = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"], logits))
        metric.add_batch(predictions=predictions.cpu(), references=references.cpu())
        losses += torch.nn.functional.cross_entropy(logits, references, reduction="sum")
        count += references.numel()
    model.train()
    return {"eval_accuracy": metric.compute()["accuracy"], "eval_loss": (losses / count).item()}


def train(args: argparse.Namespace) -> dict:
    """Run the fine-tuning; returns the final metrics (main process: also writes and previews the model)."""
    accelerator = _make_accelerator(args)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    splits, image_column, label_column, names = _load_data(args, accelerator)
    model = build_model(args.model, names, drop_path_rate=args.drop_path_rate, aux_loss_weight=args.aux_loss_weight,
                        ignore_mismatched_sizes=args.ignore_mismatched_sizes)
    model = _apply_model_options(args, accelerator, model)
    image_size, hflip, crop_min = resolve_augmentation(
        args.dataset, args.image_size, args.hflip_prob, args.crop_scale_min, checkpoint_image_size(args.model)
    )
    processor = eval_processor(args.model, model.config, image_size)
    train_set, eval_set, train_loader, eval_loader = _dataloaders(
        args, splits, image_column, label_column, processor, image_size, hflip, crop_min
    )
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)

    updates_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    max_steps = args.max_steps or args.num_epochs * updates_per_epoch
    num_epochs = math.ceil(max_steps / updates_per_epoch)
    scheduler = get_cosine_schedule_with_warmup(optimizer.optimizer, int(args.warmup_ratio * max_steps), max_steps)
    accelerator.register_for_checkpointing(scheduler)

    completed_steps = 0
    if args.resume_from_checkpoint:
        checkpoint = _resolve_checkpoint(args.resume_from_checkpoint, output_dir)
        accelerator.load_state(str(checkpoint))
        completed_steps = json.loads((checkpoint / CHECKPOINT_STATE).read_text())["completed_steps"]
        accelerator.print(f"resumed from {checkpoint} at step {completed_steps}")

    config = {**vars(args), "image_size": image_size, "hflip_prob": hflip, "crop_scale_min": crop_min,
              "max_steps": max_steps, "num_processes": accelerator.num_processes,
              "mixed_precision": accelerator.mixed_precision}
    accelerator.init_trackers("finetune", config=config)
    accelerator.print(
        f"{len(train_set)} train / {len(eval_set)} validation images, {len(names)} classes, {image_size}px; "
        f"{accelerator.num_processes} process(es), {max_steps} steps ({num_epochs} epochs), "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
    )

    import evaluate

    with accelerator.main_process_first():
        metric = evaluate.load(accuracy_metric_path(), keep_in_memory=True)
    aux_loss_weight = accelerator.unwrap_model(model).config.aux_loss_weight
    step_losses, metrics = [], {}
    progress = tqdm(total=max_steps, initial=completed_steps, disable=not accelerator.is_local_main_process,
                    desc="training")
    start_epoch = completed_steps // updates_per_epoch
    skip = (completed_steps % updates_per_epoch) * args.gradient_accumulation_steps
    running, logged = 0.0, 0
    model.train()
    for epoch in range(start_epoch, num_epochs):
        train_set.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, skip) if epoch == start_epoch and skip else train_loader
        loader.set_epoch(epoch)
        accumulated = torch.zeros((), device=accelerator.device)
        for batch in loader:
            with accelerator.accumulate(model):
                outputs = model(pixel_values=batch["pixel_values"])
                loss = classification_loss(outputs, batch["labels"], args.label_smoothing, aux_loss_weight)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            accumulated += loss.detach() / args.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue
            if not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            completed_steps += 1
            step_loss = accelerator.reduce(accumulated, reduction="mean").item()
            accumulated.zero_()
            step_losses.append([completed_steps, step_loss])
            running, logged = running + step_loss, logged + 1
            progress.update(1)
            progress.set_postfix(loss=f"{step_loss:.4f}", epoch=epoch)
            if completed_steps % args.logging_steps == 0 or completed_steps == max_steps:
                accelerator.log({"train_loss": running / logged, "learning_rate": scheduler.get_last_lr()[0],
                                 "epoch": epoch}, step=completed_steps)
                running, logged = 0.0, 0
            if args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0:
                _save_checkpoint(accelerator, output_dir, completed_steps)
            if completed_steps >= max_steps:
                break
        metrics = evaluate_model(model, eval_loader, accelerator, metric)
        accelerator.log({**metrics, "epoch": epoch}, step=completed_steps)
        if accelerator.is_main_process:
            progress.write(f"epoch {epoch}: validation accuracy {metrics['eval_accuracy']:.4f} "
                           f"(loss {metrics['eval_loss']:.4f})")
    progress.close()
    _finish(args, accelerator, model, eval_set, names, image_size, metrics, step_losses)
    return metrics


def _apply_model_options(args: argparse.Namespace, accelerator: Accelerator, model):
    """Gradient checkpointing and SyncBatchNorm, when asked for."""
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if not args.sync_bn:
        return model
    if accelerator.num_processes == 1:
        accelerator.print("--sync_bn: a single process, BatchNorm left as it is")
        return model
    if accelerator.device.type == "cpu":
        raise FinetuningError("--sync_bn needs GPUs: torch's SyncBatchNorm has no CPU (gloo) implementation")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _finish(args, accelerator: Accelerator, model, eval_set, names, image_size: int, metrics: dict,
            step_losses: list) -> None:
    """Per-process summary, then (main process) the model folder, the preview and the optional upload."""
    output_dir = Path(args.output_dir)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    summary = {"rank": accelerator.process_index, "world_size": accelerator.num_processes,
               "step_losses": step_losses, "state_dict_sha256": state_dict_digest(unwrapped), **metrics}
    (output_dir / "logs").mkdir(parents=True, exist_ok=True)
    (output_dir / "logs" / f"rank_{accelerator.process_index}.json").write_text(json.dumps(summary) + "\n")
    if accelerator.is_main_process:
        note = (f"## Fine-tuning\n\nFine-tuned with `examples/finetune_accelerate.py` on `{args.dataset}` "
                f"({len(names)} classes, {image_size}x{image_size} inputs): validation accuracy "
                f"{metrics.get('eval_accuracy', float('nan')):.4f}.")
        model_dir = write_model_folder(unwrapped, output_dir / "model", overwrite=True, image_size=image_size,
                                       card_note=note)
        print(f"held-out accuracy: {metrics.get('eval_accuracy', float('nan')):.4f}; model saved to {model_dir}")
        if args.num_preview:
            _preview(model_dir, eval_set, names, args.num_preview, output_dir / "predictions.png")
        if args.push_to_hub:
            from overlock_hf.hub import push_model

            result = push_model(model_dir, args.push_to_hub, private=args.hub_private)
            print(f"pushed to {result.url} ({result.revision}, commit {result.commit_oid})")
    accelerator.wait_for_everyone()
    accelerator.end_training()


def _preview(model_dir: Path, eval_set: EvalImageDataset, names, count: int, png_path: Path) -> None:
    """Reload the saved folder (Auto classes + pipeline), predict `count` held-out images, print and draw them."""
    indices = range(min(count, len(eval_set)))
    images = [eval_set.image(i) for i in indices]
    true = [names[eval_set.label(i)] for i in indices]
    predictions = preview_predictions(model_dir, images, true, png_path)
    print("reloaded with AutoModelForImageClassification + pipeline; held-out predictions:")
    for i, ((label, score), ref) in enumerate(zip(predictions, true)):
        print(f"  image {i}: predicted {label} ({score:.2f}), true {ref}{'' if label == ref else '  <- wrong'}")
    print(f"prediction grid written to {png_path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except FinetuningError as error:
        sys.exit(f"finetune_accelerate.py: error: {error}")
    return 0


if __name__ == "__main__":
    main()
