# icdedit: `make install` sets up .venv (CPU torch first), `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install test test-gpu test-kernels test-sdist bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"

test:
	$(BIN)/python -m pytest -q

# The GPU smoke tests (tests/test_gpu.py, marked `gpu`; a few minutes on one GPU, offline): skipped
# without a CUDA device, failed instead with ICDEDIT_REQUIRE_GPU=1 (.ci/run-gpu sets it).
# PY=python3 runs them under an interpreter that already has a CUDA build of torch.
PY ?= $(BIN)/python
test-gpu:
	$(PY) -m pytest -q -m gpu -s tests/test_gpu.py

# The equivalence tests again on other math-kernel code paths: MKL's reproducibility branches,
# ATen's scalar kernels and one thread stand in for other CPUs (tests/tolerance.py says why
# the tolerances hold on any of them). CI runs this after `make test`.
KERNEL_TESTS ?= tests/test_p2p.py tests/test_spec_exact.py tests/test_sdxl.py tests/test_engine.py tests/test_generate.py
test-kernels:
	MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(KERNEL_TESTS)
	MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q $(KERNEL_TESTS)

# CPU, 256 px, icdedit and the official-style baseline in one run (about 5 minutes on 2 cores);
# on a GPU: make bench BENCH_ARGS="--device cuda --dtype fp16 --size 512 --runs 20 --warmup 3"
BENCH_ARGS ?= --device cpu --size 256 --runs 2 --warmup 1
bench:
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# The source distribution's own tests, from its unpacked folder: tests/ must stand alone
# (benchmarks/ is not shipped; its tests run from the repository with `make test`). The tests
# marked `slow` (Ray, compilation, the browser: about 7 minutes on 2 cores) ran in `make test`.
test-sdist:
	rm -rf build/sdist
	$(BIN)/python -m build --sdist --outdir build/sdist .
	tar -xzf build/sdist/icdedit-*.tar.gz -C build/sdist
	cd build/sdist/icdedit-*/ && $(abspath $(BIN))/python -m pytest -q -p no:cacheprovider -m "not slow"

# ruff, configured in pyproject.toml: the linter's rules and the formatter's layout (CI checks both)
LINT_PATHS := icdedit tests benchmarks
lint:
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
