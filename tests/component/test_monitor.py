"""The monitor against the in-memory Slurm: retry by policy, revive dependents, leave the rest alone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from slurmflow.backends import FakeSlurm, Outcome
from slurmflow.model import Resources, RetryPolicy, Stage, StageDep
from slurmflow.monitoring.monitor import tick
from slurmflow.planning import planner
from slurmflow.run.launch import context
from slurmflow.run.submitter import submit
from slurmflow.rundir.events import Event, EventBase, GaveUp, Resubmitted
from slurmflow.rundir.store import RunStore, plan_to_dict
from slurmflow.slurm.types import DepKind, JobSpec, JobState


@pytest.fixture(autouse=True)
def typed_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event the library writes here is a typed record: a plain mapping is accepted only for
    the in-job wrapper's transition, and never reaches this module's runs."""
    append = RunStore.append

    def typed(self: RunStore, event: Event | Mapping[str, Any]) -> None:
        assert isinstance(event, EventBase), f"an untyped event was written: {event!r}"
        append(self, event)

    monkeypatch.setattr(RunStore, "append", typed)


def run(
    tmp: Path, fake: FakeSlurm, retry: RetryPolicy, requeue: bool | None = None, mem: str | None = None
) -> RunStore:
    stages = {
        "train": Stage(
            "train", command="t", per_trial=True, resources=Resources(gpus=1, mem=mem), retry=retry, requeue=requeue
        ),
        "eval": Stage("eval", command="e", per_trial=True, deps=(StageDep(DepKind.AFTER_CORR, "train"),)),
        "final": Stage("final", command="f", deps=(StageDep(DepKind.AFTER_OK, "train"),)),
        "handler": Stage("handler", command="h", deps=(StageDep(DepKind.AFTER_NOT_OK, "train"),)),
    }
    plan = planner.plan("m", stages, 4, fake.cluster_info())
    store = RunStore.create(tmp / "runs", "m-1")
    store.write_json("plan.json", plan_to_dict(plan))
    store.write_json("launch.json", {"python": "python3", "cwd": str(tmp), "config_name": "c", "base_overrides": []})
    submit(plan, fake, store, context(store))
    return store


def tick_until_done(store: RunStore, fake: FakeSlurm) -> None:
    """Advance the fake's clock 3 s at a time and tick, until a tick finds the run over (at most 40)."""
    for _ in range(40):
        fake.advance(3)
        if tick(store, fake).done:
            return


def states(fake: FakeSlurm) -> dict[str, JobState]:
    return {f"{t.spec.name}:{t.index}": t.state for t in fake.tasks.values()}


def flaky(spec: JobSpec, index: int | None, restarts: int) -> Outcome:
    """Task 2 of train exits 75 on its first run, then succeeds."""
    if spec.name.endswith(".train.0") and index == 2 and restarts == 0:
        return Outcome(75, 2)
    return Outcome(0, 2)


def ids(store: RunStore) -> dict[str, str]:
    return store.state().submitted


def test_retryable_exit_code_is_retried_and_dependents_run(tmp_path: Path) -> None:
    fake = FakeSlurm(program=flaky)
    store = run(tmp_path, fake, RetryPolicy(exit_codes=(75,)))
    j = ids(store)
    fake.advance(5)
    assert fake.tasks[f"{j['train.0']}_2"].state is JobState.FAILED
    first = tick(store, fake)
    assert [(a.kind, a.task) for a in first.actions][:1] == [("requeued", f"{j['train.0']}_2")]
    rewired = {a.task for a in first.actions if a.kind == "rewired"}
    assert rewired == {f"{j['eval.0']}_2", j["final"]}  # the paired eval task and the after_ok fan-in only
    for _ in range(30):
        fake.advance(2)
        if tick(store, fake).done:
            break
    got = states(fake)
    assert all(s is JobState.COMPLETED for k, s in got.items() if "handler" not in k), got
    # The failure handler already fired on the first failure (afternotok): that is Slurm's semantics.
    assert fake.tasks[f"{j['train.0']}_2"].restarts == 1


def test_program_failure_is_not_retried(tmp_path: Path) -> None:
    fake = FakeSlurm(program=flaky)
    store = run(tmp_path, fake, RetryPolicy())
    j = ids(store)
    fake.advance(5)
    actions = tick(store, fake).actions
    assert [(a.kind, a.task) for a in actions] == [("gave_up", f"{j['train.0']}_2")]
    assert "not retried" in actions[0].why
    fake.advance(10)
    assert tick(store, fake).actions == ()  # reported once
    assert fake.tasks[f"{j['eval.0']}_2"].state is JobState.CANCELLED
    assert fake.tasks[j["final"]].state is JobState.CANCELLED
    assert fake.tasks[j["handler"]].state is JobState.COMPLETED  # the failure handler ran


def test_node_failure_requeued_by_slurm_starts_without_the_two_minute_hold(tmp_path: Path) -> None:
    fake = FakeSlurm(program=lambda spec, index, restarts: Outcome(0, 20))
    store = run(tmp_path, fake, RetryPolicy())
    train = ids(store)["train.0"]
    fake.advance(1)
    fake.stop_node("gpu1")  # requeue allowed: Slurm puts the tasks back itself, held ~120 s
    assert fake.tasks[f"{train}_0"].state is JobState.PENDING and fake.tasks[f"{train}_0"].reason == "BeginTime"
    released = [a for a in tick(store, fake).actions if a.kind == "released"]
    assert {a.task for a in released} == {f"{train}_{i}" for i in range(4)}
    assert not [a for a in tick(store, fake).actions if a.kind == "released"]  # once per restart
    for _ in range(30):
        fake.advance(5)
        if tick(store, fake).done:
            break
    assert fake.now < 120  # well before the hold would have ended
    assert all(t.state is JobState.COMPLETED for t in fake.tasks.values() if "handler" not in t.spec.name)


def test_no_requeue_stage_is_given_up_with_the_reason(tmp_path: Path) -> None:
    fake = FakeSlurm(program=lambda spec, index, restarts: Outcome(0, 20))
    store = run(tmp_path, fake, RetryPolicy(), requeue=False)
    fake.advance(1)
    fake.stop_node("gpu1")
    actions = tick(store, fake).actions
    assert {a.kind for a in actions} == {"gave_up"} and "requeue: false" in actions[0].why


def test_cancelled_by_a_person_is_never_retried(tmp_path: Path) -> None:
    fake = FakeSlurm(program=lambda spec, index, restarts: Outcome(0, 20))
    store = run(tmp_path, fake, RetryPolicy(infra=5))
    victim = f"{ids(store)['train.0']}_1"
    fake.advance(1)
    fake.cancel([victim])
    actions = tick(store, fake).actions
    assert fake.tasks[victim].state is JobState.CANCELLED and all(a.task != victim for a in actions)


def test_retry_resubmits_only_unsuccessful_tasks_and_their_dependents(tmp_path: Path) -> None:
    from slurmflow.monitoring.retry import retry
    from slurmflow.monitoring.status import summarise

    broken = {"yes": True}

    def program(spec: JobSpec, index: int | None, restarts: int) -> Outcome:
        failing = broken["yes"] and spec.name.endswith(".train.0") and index in (1, 2)
        return Outcome(3 if failing else 0, 2)

    fake = FakeSlurm(program=program)
    store = run(tmp_path, fake, RetryPolicy())
    fake.advance(10)
    broken["yes"] = False  # the bug is fixed; retry only what did not succeed
    new = retry(store, fake, stage=None, failed_only=False)
    assert list(new) == ["train.0", "eval.0", "final"]  # not the handler, which completed
    arrays = {
        k: next(t.spec.array for t in fake.tasks.values() if (t.array_job_id or t.job_id) == v) for k, v in new.items()
    }
    assert arrays == {"train.0": "1-2", "eval.0": "1-2", "final": None}
    fake.advance(20)
    state = store.state()
    st = summarise(
        "m-1",
        store.plan(),
        state.submitted,
        fake.query(state.jobs(store.plan(), holding=True)).jobs,
        logs_dir="l",
        started=0,
        now=1,
        moved=state.moved,
    )
    counts = {s.stage: s.counts for s in st.stages}
    assert counts["train"] == {"COMPLETED": 4} and counts["eval"] == {"COMPLETED": 4}
    assert counts["final"] == {"COMPLETED": 1}
    assert retry(store, fake, stage=None, failed_only=False) == {}  # nothing left


def test_retry_failed_only_leaves_cancelled_tasks(tmp_path: Path) -> None:
    from slurmflow.monitoring.retry import retry

    fake = FakeSlurm(program=flaky)
    store = run(tmp_path, fake, RetryPolicy())
    fake.advance(10)
    assert list(retry(store, fake, stage=None, failed_only=True)) == ["train.0"]


def needs_2g(spec: JobSpec, index: int | None, restarts: int) -> Outcome:
    """Training runs out of memory below 2 GB."""
    from slurmflow.slurm.units import megabytes

    if spec.name.endswith(".train.0") and megabytes(spec.mem or "1M") < 2048:
        return Outcome(0, 2, state=JobState.OUT_OF_MEMORY)
    return Outcome(0, 2)


def test_out_of_memory_is_resubmitted_with_more_memory_and_dependents_follow(tmp_path: Path) -> None:
    fake = FakeSlurm(program=needs_2g)
    store = run(tmp_path, fake, RetryPolicy(oom_mem_factor=1.5, oom_mem_cap="4G"), mem="1G")
    fake.advance(5)
    first = tick(store, fake).actions
    assert [(a.kind, a.mem) for a in first if isinstance(a, Resubmitted)] == [("resubmitted", "1536M")]
    assert len(first) == 1  # 1G x 1.5: still too small
    tick_until_done(store, fake)
    events = store.events()
    assert [e.mem for e in events if isinstance(e, Resubmitted)] == ["1536M", "2304M"]
    state = store.state()
    latest = {t.job_id: t for t in fake.tasks.values()}
    for i in range(4):
        assert latest[f"{state.job_of('train.0', i)}_{i}"].state is JobState.COMPLETED
        assert latest[f"{state.job_of('eval.0', i)}_{i}"].state is JobState.COMPLETED
    assert latest[str(state.job_of("final", None))].state is JobState.COMPLETED


def preempted_first(times: int) -> Any:
    """Trial 1's training is preempted on its first `times` jobs (each new job, not each restart)."""
    jobs: list[str] = []

    def program(spec: JobSpec, index: int | None, restarts: int) -> Outcome:
        if spec.name.endswith(".train.0") and index == 1 and restarts == 0:
            jobs.append(spec.name)
            if len(jobs) <= times:
                return Outcome(0, 2, state=JobState.PREEMPTED)
        return Outcome(0, 2)

    return program


def test_a_preempted_task_is_resubmitted_as_a_new_job_and_dependents_follow(tmp_path: Path) -> None:
    """Not requeued: Slurm records a requeued preempted job PREEMPTED again when it next ends, even
    with exit 0, and its afterok dependents never run (seen on 24.11)."""
    fake = FakeSlurm(program=preempted_first(1))
    store = run(tmp_path, fake, RetryPolicy(infra=2))
    tick_until_done(store, fake)
    events = store.events()
    moved = [e for e in events if isinstance(e, Resubmitted)]
    assert [(e.indices, e.mem) for e in moved] == [((1,), None)] and moved[0].why.startswith("PREEMPTED")
    assert not any(e.kind == "requeued" for e in events)
    state = store.state()
    latest = {t.job_id: t for t in fake.tasks.values()}
    assert state.job_of("train.0", 1) == moved[0].job_id != state.job_of("train.0", 0)
    for i in range(4):
        assert latest[f"{state.job_of('train.0', i)}_{i}"].state is JobState.COMPLETED
        assert latest[f"{state.job_of('eval.0', i)}_{i}"].state is JobState.COMPLETED
    assert latest[str(state.job_of("final", None))].state is JobState.COMPLETED


def test_a_task_preempted_on_every_new_job_is_given_up_after_its_infra_retries(tmp_path: Path) -> None:
    fake = FakeSlurm(program=preempted_first(9))
    store = run(tmp_path, fake, RetryPolicy(infra=2))
    tick_until_done(store, fake)
    events = store.events()
    assert len([e for e in events if isinstance(e, Resubmitted)]) == 2
    gave_up = [e for e in events if isinstance(e, GaveUp)]
    assert len(gave_up) == 1 and "PREEMPTED: 2 retries used" in gave_up[0].why


def test_out_of_memory_at_the_cap_gives_up(tmp_path: Path) -> None:
    fake = FakeSlurm(program=needs_2g)
    store = run(tmp_path, fake, RetryPolicy(oom_mem_factor=2, oom_mem_cap="1G"), mem="1G")
    fake.advance(5)
    actions = tick(store, fake).actions
    assert {a.kind for a in actions} == {"gave_up"} and "cap" in actions[0].why
