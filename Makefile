# The two commands a fresh machine needs: `make repro` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv repro exps plots table study budget sparsity fashion wheelhouse test lint format pytest clean-venv

## make help: every target, one line each (from these comments)
help:
	@awk '/^## make [a-z-]+:/ { sub(/^## make /, ""); t = $$0; sub(/:.*/, "", t); d = $$0; \
		sub(/^[a-z-]+: /, "", d); sub(/;$$/, "", d); printf "  make %-11s %s\n", t, d }' $(firstword $(MAKEFILE_LIST))

## make venv: create .venv from requirements.txt, or reuse it (every other target does this first)
venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
		| grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -c "import torch, torchvision, dvc, dvclive, yaml, pandas, matplotlib, sklearn, pytest, hypothesis, xdist" \
		|| { echo "error: installing requirements.txt into $(VENV) failed"; exit 1; }
	@rm -f $(VENV)/.installed-*
	@touch $@

## make repro: rebuild the result table with DVC, and say whether it reproduced the committed one;
##   metrics/results.md, then python -m sweep.reproduce (exactly, or by how much and on which machines); threads,
##   precision and compile are params, so any command gives the same bits on one machine
repro: venv
	$(BIN)/dvc repro
	@echo "results: metrics/results.md"
	@cat metrics/results.md
	@$(BIN)/python -m sweep.reproduce

## make exps: the experiments in one screen: every variant's test accuracy, the params that differ
##   (EXPS_ARGS="-A": every commit's experiments; EXPS_ARGS="--metric best_val_acc": another metric)
exps: venv
	@$(BIN)/python -m sweep.exps $(EXPS_ARGS)

## make plots: the plots as one page that renders offline (dvc_plots/index.html), vega bundled;
##   npm fetches vega, vega-lite and vega-embed once into .cache/vega (PLOTS_REVS="HEAD exp-1": a diff)
plots: venv
	@$(BIN)/python -m sweep.offline_plots $(PLOTS_REVS)

## make table: the paper-style table (mask methods x variants x seeds) from DVC experiments;
##   PRESET=paper: the paper's CIFAR-10 / ResNet-18 setting (GPU); QUICK=1: toy sizes on digits (CPU)
##   EXECUTOR=slurm: one SLURM job per experiment, resources from params.yaml report.slurm (docs/cluster.md)
EXECUTOR := local
table: venv
	$(BIN)/python -m sweep $(addprefix --preset ,$(PRESET)) $(if $(QUICK),--quick) --executor $(EXECUTOR) $(TABLE_ARGS)

## make study: the schedule study (docs/results.md): when each trick should fade out, on the CPU;
##   the schedule-study cells under the default trick windows and the early, late and upstream presets (test and validation tables), then the
##   side-by-side comparison metrics/schedule-study{,-val}.{md,png}; finished experiments are reused
STUDY := fashion fashion-cpu schedule-study
SCHEDULES := early late upstream
STUDY_CSV = metrics/table-$(subst $() ,-,$(STUDY))$(if $(1),-$(1))$(2).csv
study: venv
	$(BIN)/python -m sweep $(addprefix --preset ,$(STUDY)) --all-commits $(TABLE_ARGS)
	$(BIN)/python -m sweep $(addprefix --preset ,$(STUDY)) --preset val --no-run --all-commits
	for s in $(SCHEDULES); do \
		$(BIN)/python -m sweep $(addprefix --preset ,$(STUDY)) --preset $$s --all-commits $(TABLE_ARGS) && \
		$(BIN)/python -m sweep $(addprefix --preset ,$(STUDY)) --preset $$s --preset val --no-run --all-commits \
		|| exit 1; done
	$(BIN)/python -m sweep.compare --out metrics/schedule-study --title "Schedule study: test accuracy" \
		default=$(call STUDY_CSV) $(foreach s,$(SCHEDULES),$(s)=$(call STUDY_CSV,$(s)))
	$(BIN)/python -m sweep.compare --out metrics/schedule-study-val --title "Schedule study: validation accuracy" \
		default=$(call STUDY_CSV,,-val) $(foreach s,$(SCHEDULES),$(s)=$(call STUDY_CSV,$(s),-val))

## make budget: the budget study (docs/results.md): the tricks' gains against training length;
##   random and snip at 0.95, 3 seeds, 12,000
##   Fashion-MNIST images, width 16, bf16: 30 epochs (four variants), then 10 (all six); then each
##   trick's gain per budget beside the schedule study's 3,000-image, width-8, 10-epoch default:
##   metrics/budget-study.{md,png}. Finished experiments are reused, so it can be completed over
##   several sittings (about 5 h in all on a 2-vCPU AMD EPYC with bf16 units)
BUDGET := fashion budget
BUDGET_CSV = metrics/table-fashion-budget-budget-$(1).csv
budget: venv
	for e in 30 10; do \
		$(BIN)/python -m sweep $(addprefix --preset ,$(BUDGET)) --preset budget-$$e --all-commits $(TABLE_ARGS) \
		|| exit 1; done
	$(BIN)/python -m sweep.compare --out metrics/budget-study --title "Budget study: test accuracy" --unpaired --plot cells \
		"3k-w8-10ep=$(call STUDY_CSV)" "12k-w16-10ep=$(call BUDGET_CSV,10)" "12k-w16-30ep=$(call BUDGET_CSV,30)"

## make sparsity: the sparsity study (docs/results.md): the tricks at 99 % sparsity, both protocols;
##   random and snip at 0.99, 3 seeds, the budget
##   study's 30-epoch setting (12,000 Fashion-MNIST images, width 16, train.cpu_amp auto); baseline,
##   ghost_skip, label_smooth and tost with the default windows, then ghost_skip and tost under the
##   original's protocol (upstream windows); then metrics/sparsity-study.{md,png}, each trick's gain
##   against sparsity beside the budget study's 0.95 cells. Finished experiments are reused
SPARSITY := fashion budget budget-30 sparsity
SPARSITY_CSV = metrics/table-$(subst $() ,-,$(SPARSITY))$(1).csv
sparsity: venv
	$(BIN)/python -m sweep $(addprefix --preset ,$(SPARSITY)) --all-commits $(TABLE_ARGS)
	$(BIN)/python -m sweep $(addprefix --preset ,$(SPARSITY)) --preset upstream --preset sparsity-upstream \
		--all-commits $(TABLE_ARGS)
	$(BIN)/python -m sweep.compare --out metrics/sparsity-study --plot sparsity \
		--title "Sparsity study: gain over baseline, 12k images, width 16, 30 epochs" \
		"default=$(call BUDGET_CSV,30)" "default=$(call SPARSITY_CSV)" \
		"upstream=$(call SPARSITY_CSV,-upstream-sparsity-upstream)"

## make fashion: install Fashion-MNIST when it is missing, print the command of one experiment on it
##   (Debian's dataset-fashion-mnist, 31 MB)
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
fashion: venv
	@if [ -f $(FASHION) ]; then echo "Fashion-MNIST: $(dir $(FASHION)) (installed)"; else \
		$(SUDO) apt-get install -y dataset-fashion-mnist || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; } || \
		{ echo "error: could not install dataset-fashion-mnist; put the four .gz files in data/raw instead"; exit 1; }; fi
	@echo "one experiment (CPU sizes): dvc exp run $$($(BIN)/python -m sweep --preset fashion --preset fashion-cpu --set-args)"
	@echo "the table:                  make table PRESET=\"fashion fashion-cpu\"   (on a GPU: PRESET=fashion)"

## make wheelhouse: wheels of the requirements but torch, for an offline GPU node (docs/gpu.md);
##   every requirement but torch and torchvision, and their dependencies with its own PyTorch (docs/gpu.md); WHEEL_PYTHON=3.12,
##   WHEEL_PLATFORM=manylinux_2_28_x86_64, WHEEL_EXCLUDE="torch torchvision", WHEELHOUSE=wheelhouse
wheelhouse: venv
	bash .ci/wheelhouse.sh

## make test: lint and run the test suite (what .ci/run calls)
test: venv lint pytest

## make lint: ruff check and ruff format --check (what make test and CI run)
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## make format: apply ruff's fixes and formatting
format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## make pytest: the test suite alone, one test process per core (PYTEST_WORKERS=0: one process);
##   a file's tests stay in one worker, so module-scoped fixtures (a DVC repo copy, a SLURM cluster)
##   are built once
PYTEST_WORKERS := auto
pytest: venv
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

## make clean-venv: delete .venv (the next target creates it again)
clean-venv:
	rm -rf $(VENV)
