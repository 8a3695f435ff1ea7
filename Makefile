# crt-bench: the two set-up commands of the README are `make reproduce` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PROFILE ?= auto
RESULTS ?= results

.PHONY: install reproduce test test-all test-gpu bench clean-results

install:
	$(PIP) install -q -e '.[test]'

## the main job: the paper's experiments at the size the hardware allows (PROFILE=auto: paper on a GPU, cpu otherwise)
reproduce: install
	$(PYTHON) -m crt_bench.cli reproduce --profile $(PROFILE) --results $(RESULTS) --out plots

## the test suite (smoke profile, synthetic data; under 10 minutes on 2 cores)
test: install
	$(PYTHON) -m pytest

## everything, including checks marked slow (real Fashion-MNIST training, long statistical runs)
test-all: install
	$(PYTHON) -m pytest -m 'not gpu'

## checks of the CUDA paths (device-resident batches without host syncs); on a GPU machine
test-gpu: install
	$(PYTHON) -m pytest -m gpu

## the speed benchmarks (issue "Speed"): certification vs the reference loop, then the training step per
## method, reference design vs this engine; parquet under results/bench, ratios printed (CPU: under 10 minutes)
bench: install
	$(PYTHON) benchmarks/bench_certify.py --out $(RESULTS)/bench
	$(PYTHON) benchmarks/bench_train.py --out $(RESULTS)/bench

clean-results:
	rm -rf $(RESULTS)/tables $(RESULTS)/runs $(RESULTS)/summary.csv
