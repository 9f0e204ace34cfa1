"""A plain `@hydra.main` app, as a researcher already has one: it trains a toy model and writes
its result in its output directory. Nothing in it knows about slurmflow or Slurm.

  python jobs/hydra_app/train.py lr=0.01 seed=2                       # one run, here
  python jobs/hydra_app/train.py -m hydra/launcher=slurmflow lr=0.1,0.01 seed='range(3)'
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def loss_after(lr: float, seed: int, epochs: int, width: int) -> float:
    """A noisy, seeded stand-in for training: lower is better, best near lr=0.03."""
    rng = random.Random(f"{lr}:{seed}:{width}")
    loss = 1.0
    for _ in range(epochs):
        loss *= 1 - min(0.9, abs(math.log10(lr / 0.03)) * -0.2 + 0.5) + rng.uniform(-0.02, 0.02)
    return round(loss, 6)


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    loss = loss_after(float(cfg.lr), int(cfg.seed), int(cfg.epochs), int(cfg.model.width))
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "result.json").write_text(json.dumps({"lr": cfg.lr, "seed": cfg.seed, "loss": loss}) + "\n")
    print(f"lr={cfg.lr} seed={cfg.seed} loss={loss}")
    return loss


if __name__ == "__main__":
    main()
