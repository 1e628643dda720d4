"""Fine-tune OverLoCK for image classification with 🤗 Accelerate (no Trainer).

Run without arguments it is the demo: a compact OverLoCK trained from scratch on the embedded digits (scikit-learn's
8x8 digits upscaled to 64x64 RGB, no download) for a few minutes on a CPU; it prints the held-out accuracy, saves
a loadable model folder, reloads it with `AutoModelForImageClassification` and the `pipeline`, and draws a few
held-out predictions into a PNG.

    accelerate launch --cpu --num_processes 1 --num_cpu_threads_per_process 2 --mixed_precision no \
        --dynamo_backend no examples/finetune_accelerate.py --output_dir demo_output

The same script fine-tunes a checkpoint on real data on one or many GPUs (see docs/finetuning.md):

    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 examples/finetune_accelerate.py \
        --model org/overlock-t --dataset path/to/image_folder --ignore_mismatched_sizes --num_epochs 30

Output folder: `model/` (weights, config, code, processor, model card: what `--push_to_hub` uploads),
`checkpoints/step_N/` (`--checkpointing_steps`), `logs/metrics.jsonl` and `logs/config.json` (the JSON-lines
tracker), `logs/rank_K.json` (per-process summary: world size, per-step losses, a digest of the final weights),
`predictions.png`. The set-up, loss, evaluation and output are `overlock_hf.training`; this file is the loop.
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
from finetune_options import base_parser, parse
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from overlock_hf.data import EpochShuffleSampler, collate
from overlock_hf.export import write_model_folder
from overlock_hf.training import (
    ACCELERATE_LAYOUT,
    FinetuningError,
    JSONLinesTracker,
    classification_loss,
    evaluate_classifier,
    parameter_groups,
    prepare_finetuning,
    print_preview,
    push_model_folder,
    resolve_checkpoint,
    state_dict_digest,
)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; the defaults are the CPU demo."""
    parser = base_parser(__doc__.split("\n\n")[0], output_dir="demo_output")
    extra = parser.add_argument_group("accelerate")
    extra.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default=None,
                       help="default: what `accelerate launch` / `accelerate config` says")
    extra.add_argument("--sync_bn", action="store_true",
                       help="synchronize BatchNorm statistics across processes (multi-GPU; not on CPU/gloo)")
    extra.add_argument("--checkpointing_steps", type=int, default=None, help="save the training state every N steps")
    extra.add_argument("--report_to", default="jsonl",
                       help="comma-separated trackers: jsonl (built in), or any Accelerate knows (tensorboard, wandb)")
    extra.add_argument("--num_preview", type=int, default=8, help="held-out images to predict and draw at the end")
    return parse(parser, argv)


def _make_accelerator(args: argparse.Namespace) -> Accelerator:
    output_dir = Path(args.output_dir)
    trackers = [JSONLinesTracker("finetune", output_dir / "logs") if name == "jsonl" else name
                for name in filter(None, (n.strip() for n in args.report_to.split(",")))]
    return Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                       mixed_precision=args.mixed_precision, log_with=trackers or None, project_dir=str(output_dir))


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


def _save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int) -> None:
    folder = output_dir / "checkpoints" / f"{ACCELERATE_LAYOUT.prefix}{step}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / ACCELERATE_LAYOUT.marker).write_text(json.dumps({"completed_steps": step}) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()


def train(args: argparse.Namespace) -> dict:
    """Run the fine-tuning; returns the final metrics (main process: also writes and previews the model)."""
    output_dir = Path(args.output_dir)
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, output_dir, ACCELERATE_LAYOUT) \
        if args.resume_from_checkpoint else None
    accelerator = _make_accelerator(args)
    set_seed(args.seed)
    setup = prepare_finetuning(args, accelerator.main_process_first)
    if len(setup.train_set) < args.per_device_batch_size:
        raise FinetuningError(f"the train split has {len(setup.train_set)} images, fewer than one batch "
                              f"(--per_device_batch_size {args.per_device_batch_size})")
    model = _apply_model_options(args, accelerator, setup.model)
    # own generators: creating an iterator then draws nothing from the global RNG (exact resume)
    train_loader = DataLoader(
        setup.train_set, batch_size=args.per_device_batch_size, collate_fn=collate, num_workers=args.num_workers,
        sampler=EpochShuffleSampler(len(setup.train_set), args.seed), drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    eval_loader = DataLoader(setup.eval_set, batch_size=args.eval_batch_size, collate_fn=collate,
                             num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)

    updates_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    max_steps = args.max_steps or args.num_epochs * updates_per_epoch
    num_epochs = math.ceil(max_steps / updates_per_epoch)
    scheduler = get_cosine_schedule_with_warmup(optimizer.optimizer, int(args.warmup_ratio * max_steps), max_steps)
    accelerator.register_for_checkpointing(scheduler)
    completed_steps = 0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        completed_steps = json.loads((checkpoint / ACCELERATE_LAYOUT.marker).read_text())["completed_steps"]
        accelerator.print(f"resumed from {checkpoint} at step {completed_steps}")

    accelerator.init_trackers("finetune", config={
        **vars(args), "image_size": setup.image_size, "hflip_prob": setup.hflip_prob,
        "crop_scale_min": setup.crop_scale_min, "max_steps": max_steps, "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision})
    accelerator.print(f"{setup.summary()}; {accelerator.num_processes} process(es), {max_steps} steps "
                      f"({num_epochs} epochs)")

    aux_loss_weight = accelerator.unwrap_model(model).config.aux_loss_weight
    step_losses, metrics = [], {}
    progress = tqdm(total=max_steps, initial=completed_steps, disable=not accelerator.is_local_main_process,
                    desc="training")
    start_epoch = completed_steps // updates_per_epoch
    skip = (completed_steps % updates_per_epoch) * args.gradient_accumulation_steps
    running, logged = 0.0, 0
    model.train()
    for epoch in range(start_epoch, num_epochs):
        setup.train_set.set_epoch(epoch)
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
        metrics = evaluate_classifier(model, eval_loader, gather=accelerator.gather_for_metrics)
        accelerator.log({**metrics, "epoch": epoch}, step=completed_steps)
        if accelerator.is_main_process:
            progress.write(f"epoch {epoch}: validation accuracy {metrics['eval_accuracy']:.4f} "
                           f"(loss {metrics['eval_loss']:.4f})")
    progress.close()
    _finish(args, accelerator, model, setup, metrics, step_losses)
    return metrics


def _finish(args, accelerator: Accelerator, model, setup, metrics: dict, step_losses: list) -> None:
    """Per-process summary, then (main process) the model folder, the preview and the optional upload."""
    output_dir = Path(args.output_dir)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    summary = {"rank": accelerator.process_index, "world_size": accelerator.num_processes,
               "step_losses": step_losses, "state_dict_sha256": state_dict_digest(unwrapped), **metrics}
    (output_dir / "logs").mkdir(parents=True, exist_ok=True)
    (output_dir / "logs" / f"rank_{accelerator.process_index}.json").write_text(json.dumps(summary) + "\n")
    if accelerator.is_main_process:
        accuracy = metrics.get("eval_accuracy", float("nan"))
        note = (f"## Fine-tuning\n\nFine-tuned with `examples/finetune_accelerate.py` on `{args.dataset}` "
                f"({len(setup.label_names)} classes, {setup.image_size}x{setup.image_size} inputs): validation "
                f"accuracy {accuracy:.4f}.")
        model_dir = write_model_folder(unwrapped, output_dir / "model", overwrite=True, image_size=setup.image_size,
                                        card_note=note)
        print(f"held-out accuracy: {accuracy:.4f}; model saved to {model_dir}")
        if args.num_preview:
            print_preview(model_dir, setup.eval_set, setup.label_names, args.num_preview,
                          output_dir / "predictions.png")
        if args.push_to_hub:
            print(push_model_folder(model_dir, args.push_to_hub, private=args.hub_private))
    accelerator.wait_for_everyone()
    accelerator.end_training()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except FinetuningError as error:
        sys.exit(f"finetune_accelerate.py: error: {error}")
    return 0


if __name__ == "__main__":
    main()
