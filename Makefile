# Two entry points for a fresh machine (see README.md):
#   make demo   - set up .venv, install, generate a small data lake, run a backfill on it
#   make test   - set up .venv, install with test extras, run `make lint`, then the test suite
# Both need python3 (>= 3.10) with venv or pip, a C compiler and the Python headers.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RPC := $(VENV)/bin/stellar-rpc
PYTEST_ARGS ?=

# Everything that changes what `pip install -e` builds or installs.
BUILD_INPUTS := pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd ext/*.h)

DEMO_LAKE := demo-data/lake
DEMO_CONFIG := config/demo.toml
# Mean transactions per demo ledger (pubnet ranges 3-5 average ~300; 100 keeps the demo to a few minutes).
DEMO_TX_PER_LEDGER ?= 100

# What `make lint` checks: ruff over all Python code, mypy over the package (with the .pyi stubs).
LINT_PATHS := rpcbackfill tests benchmarks tools fuzz setup.py
# The compiled modules whose .pyi stubs are compared with the runtime by mypy's stubtest.
NATIVE_MODULES := rpcbackfill._lcm rpcbackfill._recsplit rpcbackfill._spill rpcbackfill._txmap

.PHONY: help demo test pytest lint venv example-config clean-demo clean

help:
	@echo "make demo            install and backfill ledgers 2..20001 from a generated local lake"
	@echo "make test            install with test extras, run make lint, then python -m pytest -q"
	@echo "make pytest          the tests only (no lint)"
	@echo "make lint            ruff check, ruff format --check, mypy, stubs vs compiled modules"
	@echo "make example-config  regenerate config/example.toml from the key table"
	@echo "make clean-demo      remove demo-data/"

# Create the virtualenv if missing. Falls back to `venv --without-pip` plus the system pip
# (pip >= 22.3 understands --python) where ensurepip is not installed (Debian without python3-venv).
$(PY):
	$(PYTHON) -c 'import sys; sys.exit("rpcbackfill needs Python >= 3.10, found " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV) && $(PYTHON) -m venv --without-pip $(VENV) && \
		$(PYTHON) -m pip --python $(PY) install pip; }
	$(PY) -m pip install --quiet --upgrade pip

venv: $(PY)

# Installs are stamped so repeated runs skip the (slow) extension build when nothing changed.
$(VENV)/.installed-main: $(BUILD_INPUTS) | $(PY)
	$(PY) -m pip install -e .
	@touch $@

$(VENV)/.installed-test: $(BUILD_INPUTS) | $(PY)
	$(PY) -m pip install -e '.[test]'
	@touch $@ $(VENV)/.installed-main

demo: $(VENV)/.installed-main
	@# generated into a temporary directory and renamed, so an interrupted run never leaves half a lake
	@if [ ! -f $(DEMO_LAKE)/.config.json ]; then \
		echo "generating the demo data lake in $(DEMO_LAKE)"; \
		rm -rf $(DEMO_LAKE).partial && \
		$(RPC) dev generate-lake --output $(DEMO_LAKE).partial --first 2 --last 20001 --seed 1 \
			--tx-per-ledger $(DEMO_TX_PER_LEDGER) --no-fsync && sync && \
		rm -rf $(DEMO_LAKE) && mv $(DEMO_LAKE).partial $(DEMO_LAKE); \
	fi
	$(RPC) --backfill --start-ledger 2 --end-ledger 20001 --config-path $(DEMO_CONFIG)

# The gate runs first: a lint or type error fails `make test` (and so CI) before any test runs.
test: lint pytest

pytest: $(VENV)/.installed-test
	@ls tests/test_*.py >/dev/null 2>&1 || { echo "no tests found under tests/" >&2; exit 1; }
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy
	$(PY) -m mypy.stubtest --allowlist tests/stubtest_allowlist.txt $(NATIVE_MODULES)

example-config: $(VENV)/.installed-main
	$(RPC) gen-config-file --output config/example.toml --force

clean-demo:
	rm -rf demo-data

clean: clean-demo
	rm -rf build dist *.egg-info rpcbackfill/*.so
