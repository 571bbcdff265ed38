# The two commands a fresh machine needs: `make repro` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv repro table test lint format pytest clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
		| grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -c "import torch, torchvision, dvc, yaml, pandas, matplotlib, sklearn, pytest" \
		|| { echo "error: installing requirements.txt into $(VENV) failed"; exit 1; }
	@rm -f $(VENV)/.installed-*
	@touch $@

## make repro: set up .venv and rebuild the result table with DVC (metrics/results.md)
repro: venv
	$(BIN)/dvc repro
	@echo "results: metrics/results.md"
	@cat metrics/results.md

## make table: the paper-style table (mask methods x variants x seeds) from DVC experiments
##   PRESET=paper: the paper's CIFAR-10 / ResNet-18 setting (GPU); QUICK=1: toy sizes on digits (CPU)
table: venv
	$(BIN)/python -m sweep $(addprefix --preset ,$(PRESET)) $(if $(QUICK),--quick) $(TABLE_ARGS)

## make test: set up .venv, lint, run the test suite
test: venv lint pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

pytest: venv
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
