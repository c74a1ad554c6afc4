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

.PHONY: install repro test test-all bench

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

test: install
	pytest -q

test-all: install
	pytest -q -m "slow or not slow"

bench: install
	python benchmarks/data_pipeline.py
