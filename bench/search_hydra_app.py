"""The peer's side of bench/search_bench.py: a plain `@hydra.main` app that evaluates the noisy Branin
objective of jobs/noisy2d.py and returns it, for Hydra's Optuna sweeper to minimise.

It runs the job's own loop (`train`: the same steps, sleeps and values), so both drivers pay for
the same work per trial. The sweeper has no pruning (it never sees the intermediate values), so
nothing is logged and nothing stops early.

  python bench/search_hydra_app.py x=3.14 y=2.27                       # one trial, here
  python bench/search_hydra_app.py -m hydra/sweeper=optuna hydra.sweeper.n_trials=8 \\
      'x=interval(-5.0, 10.0)' 'y=interval(0.0, 15.0)'                 # a study, Hydra's basic launcher

Its config is a structured one (below) rather than a YAML file, so the app is this one file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

# The repository root, for `jobs.noisy2d`. The bench also puts it on PYTHONPATH, because
# hydra-submitit-launcher unpickles the task function in each Slurm job, and it refers to
# jobs.noisy2d by name.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jobs.noisy2d import train  # noqa: E402  (needs the path above)


@dataclass
class AppConfig:
    """The knobs of configs/experiment/search_demo.yaml, under the same names."""

    x: float = 2.5
    y: float = 7.5
    noise: float = 0.1
    steps: int = 10
    step_sleep: float = 1.0
    noise_seed: int = 0


ConfigStore.instance().store(name="search_hydra_app", node=AppConfig)


@hydra.main(version_base=None, config_name="search_hydra_app")
def main(cfg: DictConfig) -> float:
    value = train(
        float(cfg.x),
        float(cfg.y),
        noise=float(cfg.noise),
        steps=int(cfg.steps),
        step_sleep=float(cfg.step_sleep),
        seed=int(cfg.noise_seed),
    )
    assert value is not None  # nothing asks it to stop
    print(f"x={cfg.x} y={cfg.y}: value {value:.6f}", flush=True)
    return value


if __name__ == "__main__":
    main()
