# The two user commands are `make run` and `make test`; the rest are developer chores.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck fmt bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $@

run: $(STAMP)  ## create .venv, install convoy, run the main job
	$(BIN)/convoy run --out out

test: $(DEV_STAMP)  ## install test dependencies and run the whole suite
	$(BIN)/python -m pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check convoy tests

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

fmt: $(DEV_STAMP)
	$(BIN)/ruff format convoy tests
	$(BIN)/ruff check --fix .

bench: $(DEV_STAMP)  ## convoy vs SUMO, ratio printed; figures go to docs/benchmarks.md
	$(BIN)/convoy bench sim

clean:
	rm -rf $(VENV) out validate-out .pytest_cache .mypy_cache .ruff_cache
