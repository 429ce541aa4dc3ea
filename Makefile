# LLM Lab: `make book` sets everything up and builds the site; `make test` runs every test.
# Both start from nothing: a project-local virtual environment, pinned versions, offline assets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmlab-installed
# No code path may reach a model or dataset hub: without these, every accidental hub
# lookup retries for ~23 s before failing.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup assets book lab test lint labs clean

setup: $(STAMP) assets

# torch goes first and pinned: a range would pull several GB of CUDA wheels. On a Linux
# machine with no GPU, TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU build
# (PyPI's Linux wheel carries CUDA). DeepSpeed ships only as source and its build imports
# torch, so it cannot be an extra; DS_BUILD_OPS=0 skips every CUDA kernel (chapter 4 runs
# ZeRO on CPU, through gloo).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "LLM Lab needs Python >= 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "torch==2.13.0"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[course,dev]"
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --no-build-isolation -c constraints.txt "deepspeed==0.19.8"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (LLM Lab)" >/dev/null
	touch $@

assets: $(STAMP)
	$(BIN)/llmlab assets fetch --all

labs: $(STAMP)
	$(BIN)/llmlab labs build

# INSTRUCTOR=1 adds the solutions to the site (learners' builds leave them out).
TOC := $(if $(INSTRUCTOR),_toc_instructor.yml,_toc.yml)
book: setup
	$(BIN)/jupyter-book build . --toc $(TOC) --warningiserror --keep-going

# Jupyter refuses to run as root unless told; containers and CI often are root.
lab: setup
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) labs/

# The import contract in pyproject.toml ([tool.importlinter]); --no-cache leaves no cache
# folder in the tree (the graph takes under a second to build).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo

test: setup lint
	$(BIN)/python -m pytest

clean:
	rm -rf _build .pytest_cache
