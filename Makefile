# Two entry points (README): `make repro` installs and runs the pipeline, `make test`
# installs and runs the tests. Both build .venv from the lock on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=

export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro lint test test-all bench chromium

install: $(VENV)/.installed

# torch goes first: installed by a dependency it would pull the multi-GB CUDA build.
$(VENV)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q pip==25.3
	$(BIN)/pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

repro: install
	dvc repro

# ruff (pyproject.toml [tool.ruff]); .ci/run runs it before the tests
lint: install
	ruff check .

test: install chromium
	pytest -q

test-all: install chromium
	pytest -q -m "slow or not slow"

# The browser test (tests/test_prefect_ui.py) drives Debian's Chromium + chromedriver
# (no browser download): installed once, as root (CI runs as root).
chromium:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	  else \
	    echo "error: /usr/bin/chromium or /usr/bin/chromedriver missing; install them as root:" >&2; \
	    echo "  sudo apt-get update && sudo apt-get install -y chromium chromium-driver" >&2; \
	    exit 1; \
	  fi; \
	fi

bench: install
	python benchmarks/data_pipeline.py
