"""Time limits on the mini cluster: with checkpointing a task saves, requeues itself and resumes to the
same result as an uninterrupted run; without it, the TIMEOUT is reported and not retried."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slurmflow.rundir import metrics
from slurmflow.slurm.types import JobState
from tests.integration.test_launch import backend, launch_json, slurmflow, workdir
from tests.integration.test_monitor import monitor_until_done

pytestmark = pytest.mark.integration
__all__ = ["workdir"]  # the fixture, shared with test_launch

ONE_TRIAL = ["seed=range(1)", "model.lr=0.1"]
EPOCHS = 30

# Slurm sends the --signal warning from a check that runs every 30 s, and sends it as soon as the
# time left is under `seconds` plus those 30 s (measured on 24.11: 2-24 s into a 1-minute job
# with @50). A 2-minute limit with @60 puts the warning 30-60 s into every attempt: the first
# attempt (75 s of work) is always warned before it ends, and each attempt moves on at least 10
# epochs, so 30 epochs finish within the default 3 restarts.
CHECKPOINTED = [
    f"model.epochs={EPOCHS}",
    "model.epoch_sleep=2.5",
    "stages.train.resources.time=2m",
    "stages.train.checkpoint.seconds=60",
    "stages.train.checkpoint.grace=20",
]


def uninterrupted_training(container: str, workdir: Path, run_dir: Path, epochs: int) -> metrics.StageMetrics:
    """The demo's training of ONE_TRIAL run straight through, from the run's data, outside Slurm:
    what a checkpointed and resumed training must have logged."""
    ref_dir = workdir / "reference"
    ref = subprocess.run(
        [
            "docker",
            "exec",
            "-u",
            "alice",
            "-w",
            str(workdir),
            "--env",
            f"SLURMFLOW_RUN_DIR={run_dir}",
            "--env",
            f"SLURMFLOW_TRIAL_DIR={ref_dir}",
            "--env",
            "SLURMFLOW_STAGE=train",
            container,
            "/opt/slurmflow/venv/bin/python",
            "jobs/train.py",
            "--lr",
            "0.1",
            "--seed",
            "0",
            "--epochs",
            str(epochs),
            "--l2",
            "0.0001",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ref.returncode == 0, ref.stderr
    return metrics.read(ref_dir)["train"]


def test_checkpointed_task_resumes_to_the_same_result_and_timeout_is_not_retried(
    mini_cluster: str, workdir: Path
) -> None:
    ckpt = launch_json(mini_cluster, workdir, *ONE_TRIAL, *CHECKPOINTED)
    plain = launch_json(
        mini_cluster,
        workdir,
        *ONE_TRIAL,
        "model.epochs=500",
        "model.epoch_sleep=1",
        "stages.train.resources.time=1m",
        "~stages.train.checkpoint",
    )
    ckpt_actions = monitor_until_done(mini_cluster, workdir, str(ckpt["run_id"]), timeout=600)
    plain_actions = monitor_until_done(mini_cluster, workdir, str(plain["run_id"]), timeout=300)

    task = f"{ckpt['nodes']['train.0']}_0"
    info = backend(mini_cluster).query([task]).by_id()[task]
    assert info.state is JobState.COMPLETED and (info.restarts or 0) >= 1, info
    assert any(a["event"] == "released" and a["task"] == task for a in ckpt_actions)  # hold lifted, same id
    run_dir = Path(str(ckpt["run_dir"]))
    (trial,) = (run_dir / "trials").iterdir()
    log = (run_dir / "logs" / "train.0" / "0.out").read_text()
    assert "resumed from epoch" in log and "checkpoint saved at epoch" in log
    got = metrics.read(trial)["train"]  # logged by both attempts: the requeued one logged its epochs again

    ref_metrics = uninterrupted_training(mini_cluster, workdir, run_dir, EPOCHS)
    assert got.values() == ref_metrics.values() and got.curves == ref_metrics.curves
    assert sorted(got.curves["loss"]) == list(range(1, EPOCHS + 1))

    timed_out = f"{plain['nodes']['train.0']}_0"
    assert backend(mini_cluster).query([timed_out]).by_id()[timed_out].state is JobState.TIMEOUT
    assert [(a["event"], a["task"]) for a in plain_actions] == [("gave_up", timed_out)]
    assert "does not retry time limits" in plain_actions[0]["why"]
    st = json.loads(
        slurmflow(mini_cluster, workdir, "status", str(plain["run_id"]), "--runs-dir", "runs", "--json").stdout
    )
    train = next(s for s in st["stages"] if s["stage"] == "train")
    assert train["counts"] == {"TIMEOUT": 1} and train["failures"][0]["state"] == "TIMEOUT"
