# The two commands a newcomer types: `make run` and `make test`. Both set themselves up (venv, install) and are
# idempotent. CI runs exactly `make test` (see .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Exact pin: the CPU build on this machine; a loose spec would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

## run: the main job (for now: the solver benchmark at quick size, printed as a table)
run: setup
	$(VENV)/bin/parafeed bench --quick --out $(CURDIR)/runs/bench

## test: lint + type check + the whole test suite (what CI runs)
test: setup lint
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

## bench: the full-size benchmarks; results (JSON + PNG) land in benchmarks/results/
bench: setup
	$(VENV)/bin/parafeed bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
