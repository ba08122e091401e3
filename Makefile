# Everything runs from a project-local virtualenv built from uv.lock; nothing global.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced

.PHONY: demo test lint format typecheck unit integration clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"

$(STAMP): $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --quiet
	touch $(STAMP)

## demo: start the simulator and an emulated Kubernetes API, run the operator, apply examples/
demo: $(STAMP)
	$(BIN)/python -m tests.harness.demo

## test: lint, type-check and run the whole test suite
test: lint typecheck
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/contract

integration: $(STAMP)
	$(BIN)/pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests

format: $(STAMP)
	$(BIN)/ruff check --fix operator tests
	$(BIN)/ruff format operator tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
