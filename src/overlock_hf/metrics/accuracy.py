"""Accuracy, as an offline `evaluate` metric script shipped with overlock-hf.

`evaluate.load("accuracy")` fetches its script from the Hugging Face Hub; this file computes the same value
(`sklearn.metrics.accuracy_score`, optionally weighted or as a count) and loads without a network:

    import evaluate
    from overlock_hf.training import accuracy_metric_path

    accuracy = evaluate.load(accuracy_metric_path())
    accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])  # {"accuracy": 0.666...}
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = """
Accuracy is the proportion of correct predictions among the examples processed:
Accuracy = (TP + TN) / (TP + TN + FP + FN). For multi-class classification it is the fraction of examples whose
predicted class equals the reference class.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): ground-truth labels.
    normalize (`bool`, defaults to `True`): return the fraction of correct predictions; `False` returns their count.
    sample_weight (`list` of `float`, defaults to `None`): per-example weights.

Returns:
    accuracy (`float` or `int`): in [0, 1] when `normalize=True`, else the number of correct predictions.

Example:
    >>> accuracy = evaluate.load(accuracy_metric_path())
    >>> accuracy.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1])
    {'accuracy': 0.75}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Classification accuracy (fraction, or count, of predictions equal to their reference)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score) if normalize or sample_weight is not None else int(score)}
