"""The reducer (pure, over the event log) and RunState.jobs: the one answer to "which Slurm jobs
belong to this run"."""

from __future__ import annotations

import time

from slurmflow.backends import FakeSlurm
from slurmflow.model import Plan, Stage, StageDep
from slurmflow.planning import planner
from slurmflow.rundir.events import (
    ActionFailed,
    Cancelled,
    ControllerBusy,
    Event,
    GaveUp,
    GpuIdle,
    Intent,
    LaunchComplete,
    MonitorJob,
    Refused,
    Released,
    Requeued,
    RequeueFailed,
    RescheduleFailed,
    Resubmitted,
    Rewired,
    Skipped,
    Submitted,
    TickFailed,
)
from slurmflow.rundir.state import reduce, task_index
from slurmflow.slurm.types import DepKind


def plan() -> Plan:
    stages = {
        "train": Stage("train", command="t", per_trial=True),
        "eval": Stage("eval", command="e", per_trial=True, deps=(StageDep(DepKind.AFTER_CORR, "train"),)),
        "final": Stage("final", command="f", deps=(StageDep(DepKind.AFTER_OK, "train"),)),
    }
    return planner.plan("m", stages, 2, FakeSlurm().cluster_info())


EVENTS: list[Event] = [
    Submitted(node="train.0", job_id="10"),
    Submitted(node="eval.0", job_id="11"),
    Submitted(node="final", job_id="12"),
    MonitorJob(job_id="13"),
    # Both train tasks out of memory: one new job; then task 1 again: the first holds only task 0.
    Resubmitted(node="train.0", task="20 (2 task(s))", indices=(0, 1), job_id="20", why="OUT_OF_MEMORY"),
    Resubmitted(node="train.0", task="21 (1 task(s))", indices=(1,), job_id="21", why="OUT_OF_MEMORY"),
    Resubmitted(node="final", task="22 (1 task(s))", indices=(None,), job_id="22", why="slurmflow retry"),
    MonitorJob(job_id="23"),
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


# A campaign's history: launch (one submission ambiguous, resolved by name on resume), a retryable
# failure requeued and its dependents rewired (one rewire refused once), an out-of-memory
# resubmission, a `slurmflow retry`, a monitor job chain, an idle GPU, a cancel.
HISTORY: list[Event] = [
    Intent(node="train.0", t=100.0),
    Submitted(node="train.0", job_id="10", t=101.0),
    Intent(node="eval.0", t=102.0),
    ControllerBusy(node="eval.0", retry_in=1.0, t=102.5),
    Submitted(node="eval.0", job_id="11", reconciled=True, t=104.0),
    Intent(node="final", t=105.0),
    Refused(node="final", why="MaxJobCount", slurm="Resource temporarily unavailable", t=105.5),
    Intent(node="final", t=200.0),
    Submitted(node="final", job_id="12", t=201.0),
    Skipped(node="handler", why="a parent already ended so it can never run"),
    LaunchComplete(t=202.0),
    MonitorJob(job_id="13", t=203.0),
    Requeued(task="10_1", node="train.0", why="exit code 75 is retryable: retry 1 of 2", t=300.0),
    ActionFailed(task="11_1", node="eval.0", action="rewire", why="Socket timed out", t=300.1),
    Rewired(task="12", node="final", why="its parent train.0 was retried", t=300.2),
    MonitorJob(job_id="14", t=301.0),
    Rewired(task="11_1", node="eval.0", why="its parent train.0 was retried", t=330.0),
    Released(task="10_0", node="train.0", marker="10_0#1", why="its 2-minute hold was lifted", t=331.0),
    Requeued(task="10_1", node="train.0", why="retry 2 of 2", exclude="gpu3", t=360.0),
    RequeueFailed(task="10_0", node="train.0", why="scontrol requeue: exit code 1", t=361.0),
    Resubmitted(
        task="20 (1 task(s))", node="train.0", indices=(0,), job_id="20", mem="1536M", why="OUT_OF_MEMORY", t=400.0
    ),
    GpuIdle(task="20_0", node="train.0", action="warn", why="GPU 0 below 10% for 30 min", t=450.0),
    GaveUp(task="10_1", node="train.0", why="retry.max_retries reached", t=500.0),
    Resubmitted(
        task="21 (1 task(s))", node="train.0", indices=(1,), job_id="21", mem="1G", why="slurmflow retry", t=600
    ),
    TickFailed(task="monitor job 14", node="monitor", why="RuntimeError: a bug", t=610.0),
    RescheduleFailed(task="monitor job 14", node="monitor", why="the chain ends", t=611.0),
    Cancelled(nodes=("eval.0", "train.0"), job_ids=("11", "20", "21"), t=700.0),
]


def test_the_reducer_over_a_campaign_s_history() -> None:
    state = reduce(HISTORY)
    assert state.submitted == {"train.0": "10", "eval.0": "11", "final": "12"}
    assert state.intents == set() and state.skipped == {"handler"} and state.complete
    assert state.started == 100.0
    assert state.monitor_jobs == ["13", "14"]
    # Task 0 of train is in job 20 (out of memory), task 1 in job 21 (`slurmflow retry`).
    assert state.moved == {("train.0", 0): "20", ("train.0", 1): "21"}
    assert state.job_of("train.0", 0) == "20" and state.job_of("train.0", 1) == "21"
    assert state.job_of("eval.0", 1) == "11"
    assert state.resubmissions == {"train.0": ["20", "21"]}
    assert state.mem == {"train.0": "1G"}  # the latest resubmission's
    # Retries: two requeues and a resubmission of task 1, one resubmission of task 0, the rewires.
    assert state.retried[("train.0", 1)] == 3 and state.retried[("train.0", 0)] == 1
    assert state.retried[("eval.0", 1)] == 1 and state.retried[("final", None)] == 1
    assert state.node_retried == {"train.0": 4, "eval.0": 1, "final": 1}
    assert state.oom == {("train.0", 0): 1}
    assert state.requeues == {"10_1": 2}
    assert state.rewires == {"12": 1, "11_1": 1} and state.rewiring == set()  # the refused one was finished
    assert state.gave_up == {"10_1"} and state.released == {"10_0#1"}
    assert [(f.task, f.action) for f in state.failures] == [("11_1", "rewire")]
    assert [e.task for e in state.gpu_idle] == ["20_0"]
    assert state.cancelled == {"eval.0", "train.0"} and state.cancelled_jobs == {"11", "20", "21"}
    assert [a.kind for a in state.actions] == [
        "requeued",
        "action_failed",
        "rewired",
        "rewired",
        "requeued",
        "requeue_failed",
        "resubmitted",
        "gpu_idle",
        "gave_up",
        "resubmitted",
        "tick_failed",
        "reschedule_failed",
    ]  # `released` is not shown by status
    assert state.jobs(plan()) == ["10", "11", "12", "13", "14", "20", "21"]
    assert state.jobs(plan(), holding=True) == ["11", "12", "20", "21"]


def test_a_refused_rewire_is_left_to_finish_and_an_intent_without_a_job_is_kept() -> None:
    state = reduce([*HISTORY[:14], Intent(node="report", t=900.0)])
    assert state.rewiring == {"11_1"} and state.intents == {"report"}


def test_apply_continues_a_reduction() -> None:
    state = reduce(HISTORY[:20])
    for event in HISTORY[20:]:
        state.apply(event)
    assert state == reduce(HISTORY)


def test_the_reducer_is_deterministic_and_fast() -> None:
    many = [e for _ in range(500) for e in HISTORY]  # 13,500 events
    start = time.perf_counter()
    first = reduce(many)
    elapsed = time.perf_counter() - start
    assert first == reduce(many)
    assert elapsed < 1.0, elapsed  # about 10 ms here
    assert reduce([]).started is None and reduce([]).jobs(plan()) == []


def test_task_index() -> None:
    assert task_index("10_3") == 3 and task_index("12") is None and task_index("3 task(s) of train.0") is None
