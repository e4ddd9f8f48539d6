# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# torch is pinned and installed first, so pip never resolves a several-GB CUDA build on a CPU box.
# GPU users: see README ("GPU install") and set TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0 --index-url ...".
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install -q --disable-pip-version-check

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install install-dev demo test test-all lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) $(TORCH_SPEC)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) $(TORCH_SPEC)
	$(PIP) -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/certseg demo

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(VENV)/bin/pytest -m "not slow and not gpu" --timeout=900

test-all: lint
	$(VENV)/bin/pytest -m "not gpu" --timeout=1800

bench: install-dev
	OMP_NUM_THREADS=1 $(PY) -m bench.bench_certify
	OMP_NUM_THREADS=1 $(PY) -m bench.bench_sampling --threads 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
