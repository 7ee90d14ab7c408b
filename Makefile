# Two commands do all setup: `make run` (demo on embedded SQLite) and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
UV := .tools/bin/uv
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3

.PHONY: install run test lint format typecheck pytest bench bench-quick clean

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

install: $(UV)
	$(UV) sync --frozen --quiet

run: install
	$(BIN)/switchyard db upgrade
	$(BIN)/switchyard serve --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy core connectors

# pytest-xdist: one process a core (about 6 minutes on 2 cores, 10 on one process);
# `make pytest PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= auto
pytest: install
	$(BIN)/pytest -n $(PYTEST_WORKERS)

test: lint typecheck pytest

bench: install  ## every benchmark, full size (about 35 minutes)
	$(BIN)/python -m tests.bench.ingest
	$(BIN)/python -m tests.bench.record_ids
	$(BIN)/switchyard bench savings
	$(BIN)/switchyard bench overhead
	$(BIN)/switchyard bench fairness

bench-quick: install  ## the gateway benchmarks in their quick modes (about 2 minutes)
	$(BIN)/switchyard bench savings --quick
	$(BIN)/switchyard bench overhead --quick
	$(BIN)/switchyard bench fairness --quick

clean:
	rm -rf $(VENV) .tools var .mypy_cache .ruff_cache
