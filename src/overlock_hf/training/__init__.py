"""Fine-tuning OverLoCK for image classification: the pieces the example scripts are made of.

* :mod:`.session`: the run's set-up resolved once (`prepare_finetuning` -> `FinetuningSetup`);
* :mod:`.models`: what `--model` names (`resolve_model_source`), the compact model, `build_model`;
* :mod:`.optimization`: weight-decay groups and the label-smoothed main + auxiliary loss;
* :mod:`.evaluation`: `evaluate_classifier`, the one evaluation both scripts run;
* :mod:`.checkpoints`: `--resume_from_checkpoint` (a folder or `latest`) resolved before anything loads;
* :mod:`.tracking`: the JSON-lines Accelerate tracker and a weights digest;
* :mod:`.output`: the model folder and its upload (`--push_to_hub` checked before training);
* :mod:`.preview`: reload the saved folder, predict and draw a few held-out images.

The data side (sources, columns, decoding, torch views) is :mod:`overlock_hf.data`.
"""

from ..data import FinetuningError
from .checkpoints import ACCELERATE_LAYOUT, TRAINER_LAYOUT, resolve_checkpoint
from .evaluation import accuracy_metric_path, evaluate_classifier
from .models import COMPACT_CONFIG, ModelSource, build_model, resolve_model_source
from .optimization import classification_loss, parameter_groups
from .output import check_push_target, push_command, push_model_folder
from .preview import draw_prediction_grid, preview_predictions, print_preview
from .session import FinetuningSetup, prepare_finetuning, resolve_augmentation
from .tracking import JSONLinesTracker, state_dict_digest

__all__ = [
    "ACCELERATE_LAYOUT",
    "COMPACT_CONFIG",
    "TRAINER_LAYOUT",
    "FinetuningError",
    "FinetuningSetup",
    "JSONLinesTracker",
    "ModelSource",
    "accuracy_metric_path",
    "build_model",
    "check_push_target",
    "classification_loss",
    "draw_prediction_grid",
    "evaluate_classifier",
    "parameter_groups",
    "prepare_finetuning",
    "preview_predictions",
    "print_preview",
    "push_command",
    "push_model_folder",
    "resolve_augmentation",
    "resolve_checkpoint",
    "resolve_model_source",
    "state_dict_digest",
]
