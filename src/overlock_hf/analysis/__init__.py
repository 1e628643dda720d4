"""Analysis tools: model statistics (parameters, MACs, throughput) and the ablation-preset table."""

from .benchmark import profile_model, profile_models, resolve_model, rows_to_markdown
from .peers import PEERS, build_peer
from .profiling import contmix_macs, count_macs, count_parameters, measure_throughput
from .ablations import ablation_rows, ablations_to_markdown, paper_figures
from .plots import published_top1, speed_accuracy_plot
