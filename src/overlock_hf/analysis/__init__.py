"""Analysis tools: Grad-CAM of the Overview-Net and the Focus-Net, effective receptive fields.

The plotting and attribution dependencies (matplotlib, captum) are optional: `pip install 'overlock-hf[analysis]'`.
"""

from .gradcam import GradCAM, grad_cam
from .erf import effective_receptive_field, erf_area_ratios
from .reports import cam_report, erf_report
from .shapes import make_shapes_batch, pointing_game, train_shapes_model
