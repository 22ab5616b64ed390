# The two commands a newcomer types: `make run` and `make test`. Both set themselves up (venv, install) and are
# idempotent. CI runs exactly `make test` (see .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Exact pin: the CPU build on this machine; a loose spec would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed
# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (IDX files); PARAFEED_DATA overrides it.
DATA_DIR := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint format bench lock setup data system clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

## data: Debian's Fashion-MNIST package, installed only when missing (test-set inputs, eval, training)
data:
	@if [ -z "$$PARAFEED_DATA" ] && [ ! -f $(DATA_DIR)/t10k-images-idx3-ubyte.gz ]; then \
		echo "installing Debian package: dataset-fashion-mnist"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; fi

## system: what the tests need besides the data, installed only when missing (a real Redis)
system: data
	@if ! command -v redis-server > /dev/null; then echo "installing Debian package: redis-server"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; fi

## run: the server on http://127.0.0.1:8000 (embedded worker, shipped models; PARAFEED_* env vars configure it)
run: setup data
	$(VENV)/bin/parafeed serve

## test: lint + type check + the whole test suite (what CI runs)
test: setup system lint
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/hadolint Dockerfile

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

## bench: every benchmark at full size; results (JSON + PNG) land in benchmarks/results/ (about an hour on 2 cores)
bench: setup
	$(VENV)/bin/parafeed bench

## lock: pin the runtime dependencies the image installs (requirements.lock) to what this venv runs
lock: setup
	$(PY) deploy/lock.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
