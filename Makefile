# AVAGA reproducibility study. `make help` lists targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

.PHONY: help setup test lint data bench lab predict

help: ## list targets with one line each
	@grep -hE '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name avaga --display-name "Python (avaga)"
	touch $(STAMP)

setup: $(STAMP) ## create .venv, install avaga_lib with dev extras, register the `avaga` Jupyter kernel

test: $(STAMP) ## run pytest and nbval over every notebook (what CI runs)
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q --nbval-lax --current-env -p no:cacheprovider notebooks/

lint: $(STAMP) ## ruff over the library and tests
	$(VENV)/bin/ruff check avaga_lib tests

data: $(STAMP) ## generate the embedded default dataset into data/embedded
	$(PY) -m avaga_lib.cli make-data

lab: $(STAMP) ## open JupyterLab on notebooks/
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP) ## benchmark: throughput, attention cost, data-wait, eval speed, memory -> results/bench/
	$(PY) -m avaga_lib.bench

predict: $(STAMP) ## anomaly maps for your images: make predict RUN=<run folder> IMAGES=<folder> [OUT=<folder>]
	@test -n "$(RUN)" -a -n "$(IMAGES)" || { echo "usage: make predict RUN=results/<dataset>/<category>/<setting> IMAGES=<folder> [OUT=<folder>]"; exit 2; }
	$(PY) -m avaga_lib.cli predict --run "$(RUN)" --images "$(IMAGES)" $(if $(OUT),--out "$(OUT)",)
