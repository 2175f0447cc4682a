# make bench | test | regress | benchmarks | report | clean
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUITE ?= benchmarks/suites/default.yaml
EXECUTOR ?= local
OUT ?= report
RUNS ?= runs
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: bench test regress benchmarks report deps dataset clean

bench: deps dataset  ## run a suite (default: benchmarks/suites/default.yaml) and write report/
	$(BIN)/splitbench bench $(SUITE) --executor $(EXECUTOR) --runs $(RUNS) --out $(OUT)

test: deps dataset  ## unit and integration tests, including the network-usage regression
	$(BIN)/python -m pytest -q -ra

regress: deps dataset  ## bytes per sample of the default suite vs benchmarks/baselines/
	$(BIN)/splitbench regress --suite $(SUITE) --quick --runs $(RUNS)

benchmarks: deps  ## transport, link and overhead micro-benchmarks (numbers to quote)
	$(BIN)/python benchmarks/transport_bench.py
	$(BIN)/python benchmarks/link_bench.py
	$(BIN)/python benchmarks/overhead_bench.py

report: deps  ## rebuild report/ from the records of the last bench
	$(BIN)/splitbench report $(RUNS)/*/ --out $(OUT)

deps: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "splitbench needs Python 3.11+"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv; \
	  else echo "python venv support missing: install python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; }
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

dataset:
	@if [ ! -f $(FASHION) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's Fashion-MNIST package"; \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "note: Fashion-MNIST missing; run 'sudo apt-get install dataset-fashion-mnist' (the default suite needs it)"; fi; \
	fi

clean:
	rm -rf $(RUNS) $(OUT) .pytest_cache
