# slurmflow developer entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CLUSTER := bash docker/slurm-cluster/cluster.sh

.PHONY: help demo install browser lint test unit integration matrix cluster-up cluster-down cluster-logs bench bench-hydra bench-search

help:
	@echo "make demo         bring the mini Slurm cluster up and launch the demo campaign on it"
	@echo "make test         install everything, lint, type-check, start the cluster, run every test"
	@echo "make unit         the fast tiers only (no cluster)"
	@echo "make matrix       the contract and smoke tiers on the other Slurm versions (MATRIX=\"22.05 26.05\")"
	@echo "make bench        planning, GPU sampler, results, launch, monitor and cluster benchmarks (against baselines)"
	@echo "make cluster-down remove the cluster container"

$(BIN)/slurmflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/slurmflow

# The HTML report's browser test opens it in headless Chromium through its WebDriver (Debian's
# packages: matched versions, no download at test time).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

# The main job: researcher alice, on the cluster's login node, launches the demo experiment
# (configs/experiment/demo.yaml); slurmflow submits the whole graph and exits; we wait for Slurm.
RUNS := $(CURDIR)/.mini/runs
demo: cluster-up
	@mkdir -p $(RUNS) && chmod 1777 $(RUNS)
	$(CLUSTER) exec -u alice slurmflow cluster
	$(CLUSTER) exec -u alice bash -c 'cd /src && slurmflow plan'
	$(CLUSTER) exec -u alice bash -c 'cd /src && slurmflow launch --runs-dir $(RUNS)'
	@echo "slurmflow has exited; Slurm runs the campaign. Waiting for it to finish..."
	$(CLUSTER) exec -u alice bash -c 'while squeue --me --noheader | grep -q .; do sleep 2; done; \
	  sacct -X --format=JobID%12,JobName%48,State,ExitCode,NodeList -S now-10minutes | tail -n 20'
	@run=$$(ls -td $(RUNS)/demo-* | head -1); \
	  cols=$${COLUMNS:-$$(tput cols 2>/dev/null || echo 120)}; \
	  $(CLUSTER) exec -u alice env COLUMNS=$$cols bash -c "cd /src && slurmflow results $$run && slurmflow report $$run"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install browser
	$(BIN)/pytest -q -m "not integration"

cluster-up:
	$(CLUSTER) up

cluster-down:
	$(CLUSTER) down

cluster-logs:
	$(CLUSTER) logs

# Lint and the fast tiers first (seconds), then the cluster, then the whole suite with the
# integration tier: it fails, never skips, when the cluster is not there. Then the version matrix.
test: lint browser unit cluster-up
	$(BIN)/pytest -m "" --durations=10 || { $(CLUSTER) logs; exit 1; }
	$(MAKE) --no-print-directory matrix

# The other Slurm versions (docker/slurm-cluster builds each from its Debian suite): on each, the
# contract suite and the smoke tier (`-m smoke`) of the integration tests; the default version
# (24.11) runs everything in `make test`. One cluster at a time: the machine has 2 cores.
MATRIX ?= 22.05 26.05
matrix: install
	@for v in $(MATRIX); do \
	  t0=$$(date +%s); \
	  SLURMFLOW_MINI_VERSION=$$v $(CLUSTER) up || exit 1; \
	  t1=$$(date +%s); \
	  SLURMFLOW_MINI_VERSION=$$v $(BIN)/pytest -m "integration and smoke" --durations=5 \
	    || { SLURMFLOW_MINI_VERSION=$$v $(CLUSTER) logs; exit 1; }; \
	  SLURMFLOW_MINI_VERSION=$$v $(CLUSTER) down; \
	  echo "[matrix] Slurm $$v: cluster $$((t1 - t0)) s, tests $$(( $$(date +%s) - t1 )) s"; \
	done

integration: install cluster-up
	$(BIN)/pytest -m integration || { $(CLUSTER) logs; exit 1; }

bench: install cluster-up
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/gpu_bench.py
	$(BIN)/python bench/results_bench.py
	@mkdir -p $(CURDIR)/.mini/bench && chmod 1777 $(CURDIR)/.mini/bench
	$(CLUSTER) exec -u bob bash -c 'cd $(CURDIR)/.mini/bench && /opt/slurmflow/venv/bin/python /src/bench/launch_bench.py'
	$(CLUSTER) exec -u bob bash -c 'cd $(CURDIR)/.mini/bench && /opt/slurmflow/venv/bin/python /src/bench/monitor_bench.py'
	$(MAKE) bench-hydra
	$(MAKE) bench-search
	$(BIN)/python bench/cluster_bench.py

# hydra/launcher=slurmflow against hydra-submitit-launcher, installed in the benchmark's own
# directory (the cluster is offline: its wheel is fetched here, installed there).
HYDRA_BENCH := $(CURDIR)/.mini/bench-hydra
bench-hydra: install cluster-up
	@mkdir -p $(HYDRA_BENCH) && chmod 1777 $(HYDRA_BENCH)
	$(BIN)/pip download -q hydra-submitit-launcher --no-deps -d $(HYDRA_BENCH)/wheels
	$(CLUSTER) exec -u bob bash -c 'cd $(HYDRA_BENCH) && /opt/slurmflow/venv/bin/python /src/bench/hydra_launcher_bench.py --peer-wheels wheels'

# `search:` against Hydra's Optuna sweeper driving hydra-submitit-launcher, on the same cluster and
# objective (jobs/noisy2d.py); the peer's wheels are fetched here and installed there, as above.
SEARCH_BENCH := $(CURDIR)/.mini/bench-search
bench-search: install cluster-up
	@mkdir -p $(SEARCH_BENCH) && chmod 1777 $(SEARCH_BENCH)
	$(BIN)/pip download -q hydra-optuna-sweeper hydra-submitit-launcher --no-deps -d $(SEARCH_BENCH)/wheels
	$(CLUSTER) exec -u bob bash -c 'cd $(SEARCH_BENCH) && /opt/slurmflow/venv/bin/python /src/bench/search_bench.py --peer-wheels wheels $(SEARCH_BENCH_ARGS)'
