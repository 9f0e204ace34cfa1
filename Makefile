# slurmflow developer entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CLUSTER := bash docker/slurm-cluster/cluster.sh

.PHONY: help demo install lint test unit integration cluster-up cluster-down cluster-logs bench

help:
	@echo "make demo         bring the mini Slurm cluster up and show it (slurmflow cluster)"
	@echo "make test         install everything, lint, type-check, start the cluster, run every test"
	@echo "make unit         the fast tiers only (no cluster)"
	@echo "make bench        cluster start times and Slurm command latency through slurmflow's runner"
	@echo "make cluster-down remove the cluster container"

$(BIN)/slurmflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/slurmflow

demo: cluster-up
	$(CLUSTER) exec -u alice slurmflow cluster
	$(CLUSTER) status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q -m "not integration"

cluster-up:
	$(CLUSTER) up

cluster-down:
	$(CLUSTER) down

cluster-logs:
	$(CLUSTER) logs

# Lint and the fast tiers first (seconds), then the cluster, then the whole suite with the
# integration tier: it fails, never skips, when the cluster is not there.
test: lint unit cluster-up
	$(BIN)/pytest -m "" --durations=10 || { $(CLUSTER) logs; exit 1; }

integration: install cluster-up
	$(BIN)/pytest -m integration || { $(CLUSTER) logs; exit 1; }

bench: install cluster-up
	$(BIN)/python bench/cluster_bench.py
