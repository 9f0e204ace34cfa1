"""Callable stages: plain Python functions that slurmflow submits through submitit.

Each gets the composed config of its trial (or of the experiment, for a single job) and may
return a value; submitit pickles it into the job's result file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def summarise(cfg: Any) -> dict[str, Any]:
    """After the report: the best trial by test accuracy, written to summary.json."""
    run = Path(os.environ["SLURMFLOW_RUN_DIR"])
    scored = []
    for trial in sorted((run / "trials").iterdir(), key=lambda p: (len(p.name), p.name)):  # by trial number
        evaluation, metrics = trial / "eval.json", trial / "metrics.json"
        if evaluation.exists() and metrics.exists():
            scored.append(
                {"trial": trial.name, **json.loads(metrics.read_text()), **json.loads(evaluation.read_text())}
            )
    best = max(scored, key=lambda r: r["test_accuracy"]) if scored else None
    summary = {"experiment": cfg.name, "trials": len(scored), "best": best}
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def score(cfg: Any) -> float:
    """Per trial: the test accuracy times a penalty for a large learning rate (an example metric)."""
    trial = Path(os.environ["SLURMFLOW_TRIAL_DIR"])
    accuracy = float(json.loads((trial / "eval.json").read_text())["test_accuracy"])
    value = accuracy - 0.01 * float(cfg.model.lr)
    (trial / "score.json").write_text(json.dumps({"score": value}) + "\n")
    return value
