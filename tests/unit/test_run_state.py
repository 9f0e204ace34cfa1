"""RunState.jobs: the one answer to "which Slurm jobs belong to this run" (pure, over the event log)."""

from __future__ import annotations

from typing import Any

from slurmflow import planner
from slurmflow.backends import FakeSlurm
from slurmflow.model import DepKind, Plan, Stage, StageDep
from slurmflow.store import reduce


def plan() -> Plan:
    stages = {
        "train": Stage("train", command="t", per_trial=True),
        "eval": Stage("eval", command="e", per_trial=True, deps=(StageDep(DepKind.AFTER_CORR, "train"),)),
        "final": Stage("final", command="f", deps=(StageDep(DepKind.AFTER_OK, "train"),)),
    }
    return planner.plan("m", stages, 2, FakeSlurm().cluster_info())


EVENTS: list[dict[str, Any]] = [
    {"event": "submitted", "node": "train.0", "job_id": "10"},
    {"event": "submitted", "node": "eval.0", "job_id": "11"},
    {"event": "submitted", "node": "final", "job_id": "12"},
    {"event": "monitor_job", "job_id": "13"},
    # Both train tasks out of memory: one new job; then task 1 again: the first holds only task 0.
    {"event": "resubmitted", "node": "train.0", "indices": [0, 1], "job_id": "20", "why": "OUT_OF_MEMORY"},
    {"event": "resubmitted", "node": "train.0", "indices": [1], "job_id": "21", "why": "OUT_OF_MEMORY"},
    {"event": "resubmitted", "node": "final", "indices": [None], "job_id": "22", "why": "slurmflow retry"},
    {"event": "monitor_job", "job_id": "23"},
]


def test_every_job_of_the_run_originals_resubmissions_and_monitor_jobs() -> None:
    state = reduce(EVENTS)
    assert state.jobs(plan()) == ["10", "11", "12", "13", "20", "21", "22", "23"]


def test_holding_only_the_jobs_that_hold_a_task_now() -> None:
    state = reduce(EVENTS)
    # 10 and 12 hold no task any more (every one resubmitted); monitor jobs hold none.
    assert state.jobs(plan(), holding=True) == ["11", "20", "21", "22"]


def test_a_stage_with_its_resubmissions_and_no_monitor_job() -> None:
    state = reduce(EVENTS)
    assert state.jobs(plan(), stage="train") == ["10", "20", "21"]
    assert state.jobs(plan(), stage="train", holding=True) == ["20", "21"]
    assert state.jobs(plan(), stage="eval") == ["11"]
