#!/usr/bin/env bash
# On a CUDA machine, in under 8 minutes: build the CUDA variant of the fused ContMix kernel, run the GPU-marked
# tests, and measure OverLoCK-XT/-T inference and training throughput at batch 128 (fp32 and bf16 autocast)
# against transformers' ConvNeXt-T. Results: benchmarks/RESULTS_gpu.md (or $OUT/RESULTS_gpu.md), test log
# alongside. Usage: benchmarks/gpu_check.sh   (PYTHON=/path/to/python to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
time timeout 240 "$PYTHON" -m overlock_hf.cli build-kernel .kernel-build --backend cuda
set +e  # measure even when a test fails; the script's status is the tests'
time timeout 150 "$PYTHON" -m pytest -q -m gpu tests/test_contmix_kernel.py tests/test_contmix_cuda_robustness.py \
    2>&1 | tee "$OUT/gpu_tests.log"
tests_status=${PIPESTATUS[0]}
set -e
time timeout 180 "$PYTHON" benchmarks/gpu_throughput.py --batch 128 --output "$OUT/RESULTS_gpu.md"
exit "$tests_status"
