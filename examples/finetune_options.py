"""Command-line options shared by the two fine-tuning examples (`finetune_accelerate.py`, `finetune_trainer.py`).

`base_parser` defines the data, model, optimization and run options both scripts take (their defaults are the
CPU demo: the compact model on the embedded digits); each script adds its own, then `parse` checks the values.
`--help` shows every default.
"""

from __future__ import annotations

import argparse

from overlock_hf.data import DIGITS


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless the default is None / False (the help says it then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def base_parser(description: str, output_dir: str) -> argparse.ArgumentParser:
    """The options both scripts share; `output_dir` is this script's default output folder."""
    parser = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=DIGITS,
                      help="'digits' (embedded), an image folder (<dir>/<class>/<image>) or a Hub dataset id")
    data.add_argument("--dataset_config", default=None, help="configuration name of a Hub dataset")
    data.add_argument("--image_column", default=None, help="image column (default: 'image' or 'img')")
    data.add_argument("--label_column", default=None, help="label column (default: 'label' or 'labels')")
    data.add_argument("--validation_fraction", type=float, default=0.2,
                      help="share of train held out when the dataset has no validation/test split")
    data.add_argument("--max_train_samples", type=int, default=None, help="use only the first N training images")
    data.add_argument("--max_eval_samples", type=int, default=None, help="use only the first N validation images")
    data.add_argument("--image_size", type=int, default=None,
                      help="training crop / eval size (default: 64 for digits, else the checkpoint's, else 224)")
    data.add_argument("--hflip_prob", type=float, default=None, help="horizontal flip chance (default: 0 digits, 0.5)")
    data.add_argument("--crop_scale_min", type=float, default=None,
                      help="smallest random-resized-crop area fraction (default: 0.5 digits, 0.08)")
    data.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="compact",
                       help="'compact', a variant to train from scratch (overlock-xt/-t/-s/-b), a folder or Hub id")
    model.add_argument("--ignore_mismatched_sizes", action="store_true",
                       help="replace a checkpoint's classifier heads when its class count differs from the data's")
    model.add_argument("--drop_path_rate", type=float, default=None, help="override the config's stochastic depth")
    model.add_argument("--aux_loss_weight", type=float, default=None,
                       help="override the weight of the auxiliary Overview-Net loss (config default 0.4)")
    model.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations in backward")

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--num_epochs", type=int, default=8, help="training epochs")
    optim.add_argument("--max_steps", type=int, default=None, help="optimizer steps (overrides --num_epochs)")
    optim.add_argument("--per_device_batch_size", type=int, default=32, help="training batch per process")
    optim.add_argument("--eval_batch_size", type=int, default=64, help="evaluation batch per process")
    optim.add_argument("--learning_rate", type=float, default=2e-3, help="peak AdamW learning rate")
    optim.add_argument("--weight_decay", type=float, default=0.05, help="on conv/linear weights only")
    optim.add_argument("--warmup_ratio", type=float, default=0.1, help="share of the steps with linear warmup")
    optim.add_argument("--label_smoothing", type=float, default=0.1, help="of the main and auxiliary loss")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per step")
    optim.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping (0 disables)")
    optim.add_argument("--seed", type=int, default=42, help="of the split, the shuffling, augmentation and init")

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default=output_dir, help="where model/, checkpoints/ and logs go")
    run.add_argument("--logging_steps", type=int, default=10, help="log the training loss every N steps")
    run.add_argument("--resume_from_checkpoint", default=None,
                     help="a checkpoint folder of this script, or 'latest' (the newest in --output_dir)")
    run.add_argument("--push_to_hub", metavar="REPO_ID", default=None,
                     help="upload model/ to this Hub repo (login checked before training)")
    run.add_argument("--hub_private", action="store_true", help="create the Hub repo as private")
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse `argv` and check the shared options' ranges (an error names the option)."""
    args = parser.parse_args(argv)
    for name in ("num_epochs", "per_device_batch_size", "eval_batch_size", "gradient_accumulation_steps",
                 "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    for name in ("max_steps", "checkpointing_steps", "max_train_samples", "max_eval_samples"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if not 0.0 <= args.label_smoothing < 1.0:
        parser.error("--label_smoothing must be in [0, 1)")
    if not 0.0 <= args.warmup_ratio < 1.0:
        parser.error("--warmup_ratio must be in [0, 1)")
    return args
