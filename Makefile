# crt-bench: the two set-up commands of the README are `make reproduce` and `make test`.
#
# Both create a project virtual environment ($(VENV), from the interpreter $(PYTHON)) and install the
# pinned dependencies into it, so they work on a system Python that refuses pip (PEP 668, "externally
# managed") and never write into the user's own site-packages. Overrides: PYTHON=python3.12 picks the
# interpreter the environment is made from, VENV=path where it lives.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= auto
RESULTS ?= results
OUT ?= $(RESULTS)/gpu-check
PY := $(VENV)/bin/python
STAMP := $(VENV)/.crt-bench-installed

.PHONY: install reproduce test test-all test-slurm test-gpu gpu-check bench clean-results

install: $(STAMP)

# Re-installs only when the package's requirements change.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv $(VENV)' failed. On Debian/Ubuntu install the venv module" \
	       "(apt-get install python3-venv), or pass PYTHON=/path/to/python3.10+" >&2; exit 2; }
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

## the main job: the paper's experiments at the size the hardware allows (PROFILE=auto: paper on a GPU,
## cpu otherwise); obtains the profile's dataset itself (see `crt-bench reproduce --help`)
reproduce: install
	$(PY) -m crt_bench.cli reproduce --profile $(PROFILE) --results $(RESULTS) --out plots

## the test suite (smoke profile, synthetic data; under 10 minutes on 2 cores)
test: install
	$(PY) -m pytest

## everything, including checks marked slow (real Fashion-MNIST training, long statistical runs)
test-all: install
	$(PY) -m pytest -m 'not gpu'

## the slurm-marked checks too long for the suite (requeue mid-epoch and mid-image, a time limit, eight writers,
## detached and end-to-end reproduce) against the one-node cluster; about 20 minutes on 2 cores; .ci/run runs it
test-slurm: install
	$(PY) -m pytest -m 'slurm and slow'

## checks of the CUDA paths (device-resident batches without host syncs); on a GPU machine
test-gpu: install
	$(PY) -m pytest -m gpu

## the prepared GPU check, first thing on a GPU machine (at most 9 minutes; no install: the machine's own
## $(PYTHON) and torch; CRT_GPU_CHECK=cpu for the tiny CPU mode): summary.md and measurements.csv in OUT
gpu-check:
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh $(OUT)

## the speed benchmarks: certification vs the reference loop, then the training step per method,
## reference design vs this engine; parquet under results/bench, ratios printed (CPU: 10+ minutes)
bench: install
	$(PY) benchmarks/bench_certify.py --out $(RESULTS)/bench
	$(PY) benchmarks/bench_train.py --out $(RESULTS)/bench

clean-results:
	rm -rf $(RESULTS)/tables $(RESULTS)/runs $(RESULTS)/summary.csv
