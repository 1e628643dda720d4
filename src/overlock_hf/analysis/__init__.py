"""Analysis tools for OverLoCK and its transformers peers: evaluation on the ImageNet benchmarks (Tables G, H),
Grad-CAM of the Overview-Net and the Focus-Net (Figure A), effective receptive fields (Figure B).

The plotting and attribution dependencies (matplotlib, captum) are optional: `pip install 'overlock-hf[analysis]'`.
"""

from .erf import effective_receptive_field, erf_area_ratios
from .evaluation import evaluate
from .gradcam import GradCAM, grad_cam
from .labels import BENCHMARKS, EvaluationError
from .reports import cam_report, erf_report
from .robustness import robustness
from .shapes import make_shapes_batch, pointing_game, train_shapes_model
