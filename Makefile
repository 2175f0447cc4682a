# make bench | test | regress | benchmarks | report | clean
# in containers: make images, then make bench EXECUTOR=docker (Docker, or podman's API service)
# on a cluster: make cluster | images | load | deploy, then make bench EXECUTOR=kubernetes
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUITE ?= benchmarks/suites/default.yaml
EXECUTOR ?= local
OUT ?= report
RUNS ?= runs
ARGS ?=
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml tools/locks.py | cksum | cut -d' ' -f1)
TEST_STAMP := $(VENV)/.test-tools-$(shell cat requirements-test.lock | cksum | cut -d' ' -f1)
CLUSTER ?= kind
NAMESPACE ?= splitbench
TAG ?= latest
HELM = $(shell [ -x $(BIN)/helm ] && echo $(BIN)/helm || echo helm)
# torch's CPU-only wheels for local runs where this index answers (checked at install time, 5 s);
# elsewhere PyPI's wheel from requirements.lock (it carries the CUDA libraries: a larger venv)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_INSTALL = $(BIN)/pip install -q --disable-pip-version-check
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: help bench test lint lock regress benchmarks report deps dataset test-tools helm clean cluster images load deploy

help:  ## list the targets (make bench is the main job)
	@echo "splitbench: make TARGET [SUITE=... EXECUTOR=local|docker|kubernetes RUNS=runs OUT=report ARGS=...]"
	@grep -E '^[a-z-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([a-z-]+):.*## (.*)/\1|\2/' | \
	  awk -F'|' '{printf "  %-12s %s\n", $$1, $$2}'

bench: deps dataset  ## run a suite (default: benchmarks/suites/default.yaml, 3 repeats) and write report/
	@if [ "$(EXECUTOR)" = docker ]; then $(MAKE) --no-print-directory images IMAGES=--edge; fi
	$(if $(filter docker,$(EXECUTOR)),export $$($(BIN)/python tools/container_engine.py start);) \
	exec $(BIN)/splitbench bench $(SUITE) --executor $(EXECUTOR) --runs $(RUNS) --out $(OUT) $(ARGS)

test: deps dataset test-tools helm  ## unit and integration tests, including the network-usage regression and containers
	$(BIN)/python -m pytest -q -ra

lint: deps $(TEST_STAMP)  ## ruff (lint rules and format check) and mypy on the typed core; make test runs them too
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/ruff format --check .

regress: deps dataset  ## bytes per sample (exact, per message kind) and time ratios vs benchmarks/baselines/
	$(BIN)/splitbench regress --suite $(SUITE) --quick --runs $(RUNS)

benchmarks: deps  ## transport, link, overhead and scale benchmarks (numbers to quote; ~15 min)
	$(BIN)/python benchmarks/transport_bench.py
	$(BIN)/python benchmarks/link_bench.py
	$(BIN)/python benchmarks/overhead_bench.py
	$(BIN)/python benchmarks/scale_bench.py --sizes $(SCALE_SIZES)

report: deps  ## rebuild report/ from the suite's records in runs/ (RUNS/<suite name>/)
	$(BIN)/splitbench report --suite $(SUITE) --runs-root $(RUNS) --out $(OUT)

deps: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "splitbench needs Python 3.11+"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv; \
	  else echo "python venv support missing: install python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; }
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@if $(PYTHON) tools/locks.py reachable $(TORCH_CPU_INDEX)/; then \
	  echo "torch: CPU wheels from $(TORCH_CPU_INDEX); the rest of requirements.lock with its hashes"; \
	  $(PYTHON) tools/locks.py without-torch requirements.lock > $(VENV)/requirements-cpu.lock && \
	  $(PIP_INSTALL) --no-deps --index-url $(TORCH_CPU_INDEX) $$($(PYTHON) tools/locks.py torch-pins requirements.lock) && \
	  $(PIP_INSTALL) --no-deps --require-hashes -r $(VENV)/requirements-cpu.lock; \
	else \
	  echo "torch: PyPI's wheel ($(TORCH_CPU_INDEX) does not answer); requirements.lock with its hashes"; \
	  $(PIP_INSTALL) --require-hashes -r requirements.lock; \
	fi
	$(PIP_INSTALL) --no-deps -e .
	touch $@

dataset:
	@if [ ! -f $(FASHION) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's Fashion-MNIST package"; \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "note: Fashion-MNIST missing; run 'sudo apt-get install dataset-fashion-mnist' (the default suite needs it)"; fi; \
	fi

test-tools: deps $(TEST_STAMP)  ## test tools (requirements-test.lock) and a Prometheus server for the dashboard tests

$(TEST_STAMP): requirements-test.lock
	$(PIP_INSTALL) --require-hashes -r requirements-test.lock
	touch $@

helm: deps $(BIN)/helm  ## a helm binary in .venv/bin (for make test's chart tests and make deploy), unless one is on PATH

$(BIN)/helm: tools/install_helm.py
	@if command -v helm >/dev/null && [ "$$(command -v helm)" != "$(abspath $(BIN)/helm)" ]; then \
	  echo "helm: using $$(command -v helm)"; else $(BIN)/python tools/install_helm.py --dest $(BIN); fi
	@touch -c $@

lock: deps $(TEST_STAMP)  ## re-resolve requirements*.in into requirements*.lock (every package pinned, with hashes) with uv
	$(BIN)/uv pip compile requirements.in --generate-hashes --universal --python-version 3.11 \
	  --custom-compile-command "make lock" -q -o requirements.lock
	$(BIN)/uv pip compile requirements-test.in --generate-hashes --universal --python-version 3.11 \
	  --custom-compile-command "make lock" -q -o requirements-test.lock

test-tools:
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's prometheus package (the dashboard tests query a real one)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "note: no prometheus binary; the dashboard tests will be skipped (sudo apt-get install prometheus)"; fi; }
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium package (the report test opens report.html headless)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: no chromium; the report's browser test will be skipped (sudo apt-get install chromium)"; fi; }

cluster:  ## a local kind cluster from cluster/kind.yaml (k3s: see README, "On a cluster")
	kind create cluster --config cluster/kind.yaml

IMAGES ?=
# the issue-17 sizes; 64 took 40-60 s here, and the memory guard stops a run before the machine runs out
SCALE_SIZES ?= 1,4,16,32,64
images: deps dataset  ## the edge (CPU) and GPU images through the Docker Engine API (IMAGES=--edge: only the edge one)
	$(BIN)/python tools/images.py --tag $(TAG) $(IMAGES)

load:  ## put the images into the cluster's nodes (CLUSTER=kind or k3s)
	@built=$$(for i in splitbench-edge:$(TAG) splitbench-gpu:$(TAG); do docker image inspect $$i >/dev/null 2>&1 && echo $$i; done); \
	[ -n "$$built" ] || { echo "no splitbench image to load: run make images"; exit 1; }; \
	echo "loading $$built"; \
	if [ "$(CLUSTER)" = k3s ]; then docker save $$built | sudo k3s ctr images import -; \
	else kind load docker-image $$built --name splitbench; fi

deploy: deps helm  ## install or upgrade the chart (CRD, operator, RBAC, dashboards) into NAMESPACE
	$(HELM) upgrade --install splitbench helm/splitbench --namespace $(NAMESPACE) --create-namespace \
	  --set image.edge=splitbench-edge:$(TAG) --set image.gpu=splitbench-gpu:$(TAG) --wait

clean:  ## remove runs/ and report/
	rm -rf $(RUNS) $(OUT) .pytest_cache
