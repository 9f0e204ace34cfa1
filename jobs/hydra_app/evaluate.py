"""Evaluate one trial of the Hydra app pipeline: read what the app wrote in its output directory
(<trial directory>/train/result.json, with the app's .hydra/overrides.yaml beside it) and score it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def main(trial_dir: str) -> int:
    out = Path(trial_dir) / "train"
    result = json.loads((out / "result.json").read_text())
    overrides = yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text())
    score = {"overrides": overrides, "loss": result["loss"], "accuracy": round(1 - result["loss"], 6)}
    (Path(trial_dir) / "eval.json").write_text(json.dumps(score) + "\n")
    print(json.dumps(score))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
