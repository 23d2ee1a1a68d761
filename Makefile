# icdedit: `make install` sets up .venv (CPU torch first), `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"

test:
	$(BIN)/python -m pytest -q

bench:
	$(BIN)/python -m benchmarks.run --device cpu --size 256

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
