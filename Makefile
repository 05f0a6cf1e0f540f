# Set-up and the two everyday commands. Each target installs what it needs into .venv first.
#
#   make demo    the main job on the CPU default
#   make test    the test suite (fast tests; `make test-slow` adds the slow ones)
#
# TORCH is the pip requirement used for PyTorch. Default: the newest release where an NVIDIA
# GPU is visible, else torch==2.13.0 (CPU wheel). Override, e.g.  make test TORCH='torch==2.5.1'.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch>=2.9,torch==2.13.0)
BIN := $(VENV)/bin
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
# pip's notes about local package mirrors are noise; its errors still fail the target.
QUIET := 2>&1 | { grep -v '^WARNING: Location' || true; }
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)" $(QUIET)
	$(BIN)/pip install --quiet -e ".[dev,text]" $(QUIET)
	$(BIN)/python -c "import torch, arcdiff; print('torch', torch.__version__, '| arcdiff', arcdiff.__version__)"
	touch $(STAMP)

install: $(STAMP)

# The pipeline does what the run folder lacks: a second `make demo` evaluates (if need be) and
# reports the trained run, or continues one that was interrupted (Ctrl-C, kill); delete
# outputs/toiny_aa1/ to retrain.
demo: $(STAMP)
	$(BIN)/arcdiff pipeline --config toiny_aa1 --out outputs/toiny_aa1

# One thread per test process: the suite's models are tiny (threads cost more than they give).
# The fast tests run in one worker per core (pytest-xdist, a test file per worker); the slow
# ones (processes of their own: torch.distributed, killed and resumed runs) run one at a time.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --maxprocesses=4 --dist loadfile

test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check arcdiff tests scripts
	$(BIN)/ruff format --check arcdiff tests scripts

bench: $(STAMP)
	$(BIN)/python scripts/bench_data.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
