"""Analysis tools for OverLoCK and its transformers peers (evaluation on the ImageNet benchmarks, ...)."""

from .evaluation import evaluate
from .labels import BENCHMARKS, EvaluationError
from .robustness import robustness
