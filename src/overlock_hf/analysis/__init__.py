"""Analysis tools for OverLoCK and its transformers peers: evaluation on the ImageNet benchmarks (Tables G, H),
Grad-CAM of the Overview-Net and the Focus-Net (Figure A), effective receptive fields (Figure B);
model statistics (parameters, MACs, throughput: Table I) and the ablation-preset table (Tables A-F).

The plotting and attribution dependencies (matplotlib, captum) are optional: `pip install 'overlock-hf[analysis]'`.
"""

from .erf import effective_receptive_field, erf_area_ratios
from .evaluation import evaluate
from .gradcam import GradCAM, grad_cam
from .labels import BENCHMARKS, EvaluationError
from .reports import cam_report, erf_report
from .robustness import robustness
from .shapes import make_shapes_batch, pointing_game, train_shapes_model
from .benchmark import profile_model, profile_models, resolve_model, rows_to_markdown
from .peers import PEERS, build_peer
from .profiling import contmix_macs, count_macs, count_parameters, measure_throughput
from .ablations import ablation_rows, ablations_to_markdown, paper_figures
from .plots import published_top1, speed_accuracy_plot
