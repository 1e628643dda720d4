# `make demo` runs the main job, `make test` the test suite. Each sets up .venv on first use.
# `make benchmark [OFFICIAL_SOURCE=checkout-of-the-released-code] [COMPILE=1]` refreshes benchmarks/RESULTS_*.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The transformers 4.57 leg: a second venv and the tests that concern the model's transformers integration.
# CPU threads of the demo's one process (named explicitly: accelerate warns when it picks a default)
DEMO_THREADS ?= $(shell nproc 2>/dev/null || echo 1)

VENV457 ?= .venv-457
PY457 := $(VENV457)/bin/python
STAMP457 := $(VENV457)/.installed
TESTS457 := tests/test_model.py tests/test_model_parity.py tests/test_conversion.py tests/test_contmix_reference.py \
	tests/test_examples.py tests/test_transformers_integration.py tests/test_remote_code.py tests/test_backbone.py \
	tests/test_trainer.py tests/test_usage_docs.py

.PHONY: setup test test-457 test-slow demo benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/ci.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/ci.txt torch
	$(PY) -m pip install -q -c requirements/ci.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" -q

$(STAMP457): pyproject.toml requirements/ci-457.txt
	$(PYTHON) -m venv $(VENV457)
	$(PY457) -m pip install -q --upgrade pip
	$(PY457) -m pip install -q -r requirements/ci-457.txt
	$(PY457) -m pip install -q --no-deps -e .
	touch $(STAMP457)

test-457: $(STAMP457)
	$(PY457) -m pytest -q -m "not slow and not gpu" $(TESTS457)

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow or gpu" -q

demo: $(STAMP)
	$(VENV)/bin/accelerate launch --cpu --num_processes 1 --num_machines 1 --num_cpu_threads_per_process $(DEMO_THREADS) \
		--mixed_precision no --dynamo_backend no \
		examples/finetune_accelerate.py --output_dir demo_output

benchmark: $(STAMP)
	$(PY) benchmarks/contmix.py --output benchmarks/RESULTS_contmix.md
	OMP_NUM_THREADS=2 $(PY) benchmarks/model_throughput.py --threads 2 $(if $(OFFICIAL_SOURCE),--official-source $(OFFICIAL_SOURCE)) \
		$(if $(COMPILE),--compile) --output benchmarks/RESULTS_model.md
	OMP_NUM_THREADS=2 $(PY) benchmarks/profile_model.py --threads 2 --output benchmarks/PROFILE_after.md

clean:
	rm -rf $(VENV) $(VENV457) .kernel-build demo_output
