# Setup, tests and the demo. Every target runs inside .venv/ (created on demand).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.listcon-installed
DEMO_CONFIG ?= jobs/demo.toml

export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export IR_DATASETS_HOME ?= $(CURDIR)/.venv/ir_datasets

.PHONY: setup test test-slow demo lint clean

setup: $(STAMP)

# CPU torch 2.13.0 first (pip takes it from the local wheel), so the open torch range in
# pyproject.toml installs nothing more; then the project, editable, with FAISS for CPU and its dev tools.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[cpu,dev]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup
	$(VENV)/bin/listcon run $(DEMO_CONFIG)

clean:
	rm -rf $(VENV) build *.egg-info
