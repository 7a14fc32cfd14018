# vcube — run `make help` for the targets.
SHELL := bash
.DEFAULT_GOAL := help
PYTHON ?= $(shell scripts/find-python.sh)
VENV := .venv
BIN := $(VENV)/bin
SPEC ?= datasets/sample.yaml

.PHONY: help setup run test test-argo lint format render bench image lock submit clean cluster-build cluster-up cluster-down

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-13s %s\n", $$1, $$2}'

# The stamp is written last: a venv left half-made by an interrupted run is made again.
$(VENV)/.created:
	@test -n "$(PYTHON)" || { echo "error: need Python >= 3.12 (see scripts/find-python.sh)" >&2; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@touch $@

$(VENV)/.core: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install -q -e .
	@touch $@

# Rendering and submitting need Hera and the Kubernetes client only, not the dev tools.
$(VENV)/.workflows: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install -q -e '.[workflows]'
	@touch $@ $(VENV)/.core

$(VENV)/.dev: $(VENV)/.created pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.core $(VENV)/.workflows

setup: $(VENV)/.dev ## Create .venv (Python >= 3.12) with vcube and the dev tools

run: $(VENV)/.core ## Write the sample archive and build + validate the sample cube
	$(BIN)/vcube sample build/sample-archive
	$(BIN)/vcube run $(SPEC)

test: $(VENV)/.dev ## Install and run the whole test suite (real Kubernetes + Argo included)
	$(BIN)/python -m pytest -q

test-argo: $(VENV)/.dev ## Only the builds on the real local Argo controller (~10 min warm)
	$(BIN)/python -m pytest -q -m argo_e2e tests/cluster/test_argo_build.py

lint: $(VENV)/.dev ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.dev ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

IMAGE ?= vcube-worker
TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)

bench: $(VENV)/.dev ## Benchmarks vs VirtualiZarr/kerchunk -> bench/results/ (QUICK=1: < 10 min, build/bench/)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick)

lock: $(VENV)/.dev ## Regenerate image/requirements.lock (hash-pinned) from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra plot --generate-hashes --universal --python-version 3.12 \
	  --custom-compile-command "make lock" --quiet -o image/requirements.lock

image: ## Build the worker image vcube-worker:<git sha> with Docker (fails if no engine)
	@docker info >/dev/null 2>&1 || { echo "error: no Docker engine reachable ('docker info' failed):" \
	  "the image was NOT built. Run 'make image' where Docker runs (CI: .github/workflows/image.yml)." >&2; exit 1; }
	docker build -f image/Dockerfile -t $(IMAGE):$(TAG) .

render: $(VENV)/.workflows ## Regenerate the Argo WorkflowTemplates (k8s/base/vcube-build*.yaml) from workflows/
	$(BIN)/python -m workflows.render

submit: $(VENV)/.workflows ## Submit a build: SPEC=datasets/oae-atlas.yaml [GROUPS=000,001] [PARALLELISM=N] [DRY_RUN=1] [POD_DATASETS=dir]
	$(BIN)/python -m workflows.submit $(SPEC) --groups "$(GROUPS)" \
	  $(if $(PARALLELISM),--parallelism $(PARALLELISM)) $(if $(filter 1 true yes,$(DRY_RUN)),--dry-run) \
	  $(if $(POD_DATASETS),--pod-datasets $(POD_DATASETS))

cluster-build: ## Build etcd, kube-apiserver/-controller-manager, Argo from source (cached in ~/.cache)
	scripts/build-cluster.sh

cluster-up: $(VENV)/.dev ## Start a local Kubernetes + real Argo on 127.0.0.1 [S3_ENDPOINT=http://...]
	$(BIN)/python -m tests.cluster.controlplane up $(if $(S3_ENDPOINT),--s3-endpoint $(S3_ENDPOINT))

cluster-down: $(VENV)/.dev ## Stop the local cluster (idempotent)
	$(BIN)/python -m tests.cluster.controlplane down

clean: ## Remove build outputs (not the venv; stops a local cluster first)
	@[ ! -x $(BIN)/python ] || $(BIN)/python -m tests.cluster.controlplane down
	rm -rf build
