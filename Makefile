# AVAGA reproducibility study. `make help` lists targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

.PHONY: help setup test lint notebooks data bench gpu-study lab predict

help: ## list targets with one line each
	@grep -hE '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name avaga --display-name "Python (avaga)"
	touch $(STAMP)

setup: $(STAMP) ## create .venv, install avaga_lib with dev extras, register the `avaga` Jupyter kernel

test: $(STAMP) ## import layers, pytest, nbval over every notebook (what CI runs)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

lint: $(STAMP) ## ruff over the library, benchmarks, tests, tools and notebook sources; import-linter layers
	$(VENV)/bin/ruff check avaga_lib benchmarks tests tools notebooks
	$(VENV)/bin/lint-imports

notebooks: $(STAMP) ## write notebooks/*.ipynb from their jupytext sources notebooks/*.py (edit the .py files)
	$(PY) tools/sync_notebooks.py

data: $(STAMP) ## generate the embedded default dataset into data/embedded
	$(PY) -m avaga_lib.cli make-data

lab: $(STAMP) ## open JupyterLab on notebooks/
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP) ## benchmark: throughput, attention cost, data-wait, eval speed, memory -> results/bench/
	$(PY) -m avaga_lib.cli bench

gpu-study: $(STAMP) ## CUDA only, ~10 min of an H200: paper profile on MTD + embedded, literal AVAGA + remedies + AE baselines -> results/gpu_study/ [PLANS=params/mtd_cpu.yaml]
	$(PY) -m benchmarks.gpu_study $(foreach f,$(subst $(comma), ,$(PLANS)),--plan "$(f)")

predict: $(STAMP) ## anomaly maps for your images: make predict RUN=<run folder> IMAGES=<folder> [OUT=<folder>]
	@test -n "$(RUN)" -a -n "$(IMAGES)" || { echo "usage: make predict RUN=results/<dataset>/<category>/<setting> IMAGES=<folder> [OUT=<folder>]"; exit 2; }
	$(PY) -m avaga_lib.cli predict --run "$(RUN)" --images "$(IMAGES)" $(if $(OUT),--out "$(OUT)",)

# ------------------------------------------------------------------------------ reproduction pipeline (issue 5)
# One papermill process per run (notebooks 03/04), each a task on a Dask cluster: CLUSTER= empty (a local cluster
# of JOBS workers: `make -j N reproduce` passes N through MAKEFLAGS; at most one run per GPU), cuda (one worker per
# GPU, extra avaga_lib[cuda]), tcp://host:8786 (a running `dask scheduler`) or slurm / <file>.yaml (dask-jobqueue,
# extra avaga_lib[cluster]). Data is prepared once before; a failing run never stops the others, a run whose worker
# died is retried from its checkpoint, and the summary/exit code come from a single place.
DATASET    ?=
ROOT       ?=
comma      := ,
PROFILE    ?=
CATEGORIES ?=
RUNS       ?=
# VARIANTS= is the old name of RUNS= (deprecated: "variant" means R or D, model.variant); still honoured, with a warning
VARIANTS   ?=
SEEDS      ?=
FORCE      ?=
JOBS       ?=
CLUSTER    ?=
# RUNS_PER_GPU=k: k runs share each GPU (issue 24; small models leave an H200 idle; make gpu-study measures k)
RUNS_PER_GPU ?=
PARAMS     ?=
# STRICT=1: a table cell not reproduced exactly (e.g. on another CPU instruction set) fails reproduce/report (exit 1)
STRICT     ?=
# each profile its own results tree (and reference): PROFILE=cpu -> results/cpu (a comment after ?= would add spaces)
# RESULTS= empty: the CLI picks the profile's tree (results/cpu for PROFILE=cpu, else results; ResultsTree.for_profile)
RESULTS    ?=

.PHONY: reproduce report reference

reproduce: $(STAMP) ## run the study + report: [DATASET=mvtec ROOT=.. PROFILE=paper CATEGORIES=a,b RUNS=main SEEDS=0,1 FORCE=1 CLUSTER=cuda|tcp://h:8786|slurm RUNS_PER_GPU=k STRICT=1] (-j N)
	$(PY) -m avaga_lib.cli pipeline $(if $(DATASET),--dataset "$(DATASET)") $(if $(RESULTS),--results-dir "$(RESULTS)") \
		$(if $(PARAMS),--params "$(PARAMS)") $(if $(ROOT),--root "$(ROOT)") $(if $(PROFILE),--profile "$(PROFILE)") \
		$(if $(CATEGORIES),--categories "$(CATEGORIES)") $(if $(RUNS),--runs "$(RUNS)",$(if $(VARIANTS),--variants "$(VARIANTS)")) \
		$(if $(SEEDS),--seeds "$(SEEDS)") $(if $(filter-out 0,$(FORCE)),--force) $(if $(JOBS),--jobs $(JOBS)) \
		$(if $(CLUSTER),--cluster "$(CLUSTER)") $(if $(RUNS_PER_GPU),--runs-per-gpu $(RUNS_PER_GPU)) \
		$(if $(filter-out 0,$(STRICT)),--strict) --report

# order-only: `make -j reproduce report` must not build the report while runs are still going
report: $(STAMP) | $(filter reproduce,$(MAKECMDGOALS)) ## notebooks 05-07 over RESULTS: tables, REPORT.md, report.html
	$(PY) -m avaga_lib.cli report $(if $(RESULTS),--results-dir "$(RESULTS)") $(if $(PROFILE),--profile "$(PROFILE)") $(if $(filter-out 0,$(STRICT)),--strict)

# the committed reference that `make reproduce` compares with: configs, metrics, losses, tables, REPORT.md (no
# checkpoints, maps, predictions or figures); commit results/reference afterwards
reference: $(STAMP) | $(filter reproduce,$(MAKECMDGOALS)) ## copy the curated subset of a finished RESULTS tree into its reference (results/reference; results/cpu/reference)
	$(PY) -m avaga_lib.cli reference $(if $(RESULTS),--results-dir "$(RESULTS)") $(if $(PROFILE),--profile "$(PROFILE)")
