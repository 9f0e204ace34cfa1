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
    """After the report: the best trial by the experiment's objective, written to summary.json.
    It reads the run with slurmflow's own results API (no scheduler query: the tasks' status
    files give the times)."""
    from slurmflow.results.collect import collect
    from slurmflow.rundir.store import RunStore

    run = Path(os.environ["SLURMFLOW_RUN_DIR"])
    results = collect(RunStore(run), None, gpu=False)
    best = results.best
    summary = {
        "experiment": cfg.name,
        "trials": sum(t.state == "COMPLETED" for t in results.trials),
        "best": None if best is None else {"trial": best.index, "overrides": list(best.overrides), **best.metrics},
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def score(cfg: Any) -> float:
    """Per trial: the test accuracy times a penalty for a large learning rate (an example metric)."""
    trial = Path(os.environ["SLURMFLOW_TRIAL_DIR"])
    accuracy = float(json.loads((trial / "eval.json").read_text())["test_accuracy"])
    value = accuracy - 0.01 * float(cfg.model.lr)
    (trial / "score.json").write_text(json.dumps({"score": value}) + "\n")
    return value
