"""Every job of a run, every time: `cancel` (whole run and --stage) reaches the jobs `slurmflow retry`
and the monitor's out-of-memory resubmission created, and the monitor's own jobs."""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from rich.console import Console

from slurmflow.backends import FakeSlurm, Outcome
from slurmflow.cli import commands
from slurmflow.model import RetryPolicy
from slurmflow.monitoring import loop, observe
from slurmflow.monitoring.monitor import tick
from slurmflow.monitoring.retry import retry
from slurmflow.run import schedulers
from slurmflow.rundir.events import Cancelled
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import JobSpec, JobState
from slurmflow.slurm.units import megabytes
from tests.component.test_monitor import (
    run,
    typed_writes,  # noqa: F401 (autouse: every write typed)
)


def campaign(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeSlurm, RunStore, dict[str, str]]:
    """Train task 1 fails (exit 3) and is retried by `slurmflow retry`, with its cancelled dependents;
    train task 2 runs out of memory and the monitor resubmits it with more. Every job started from
    then on runs for a long time, so the retried and resubmitted ones are live when cancelled.
    Returns node -> the job that now holds its task 1 or 2 (the new jobs)."""
    slow = {"yes": False}

    def program(spec: JobSpec, index: int | None, restarts: int) -> Outcome:
        if slow["yes"]:
            return Outcome(0, 10_000)
        if spec.name.endswith(".train.0") and index == 1:
            return Outcome(3, 2)
        if spec.name.endswith(".train.0") and index == 2 and megabytes(spec.mem or "1M") < 2048:
            return Outcome(0, 2, state=JobState.OUT_OF_MEMORY)
        return Outcome(0, 2)

    fake = FakeSlurm(program=program)
    store = run(tmp, fake, RetryPolicy(oom_mem_factor=2, oom_mem_cap="4G"), mem="1G")
    fake.advance(10)
    slow["yes"] = True
    first = tick(store, fake).actions
    assert ("resubmitted", "train.0") in [(a.kind, a.node) for a in first]  # task 2, with 2 GB
    assert list(retry(store, fake, stage=None, failed_only=False)) == ["train.0", "eval.0", "final"]
    loop.submit(store, fake, interval=30, partition="cpu", delay=1)
    fake.advance(2)
    state = store.state()
    new = {
        "train.0 (retry)": str(state.job_of("train.0", 1)),
        "train.0 (oom)": str(state.job_of("train.0", 2)),
        "eval.0 (retry)": str(state.job_of("eval.0", 1)),
        "final (retry)": str(state.job_of("final", None)),
        "monitor": state.monitor_jobs[0],
    }
    originals = set(state.submitted.values())
    assert len(set(new.values())) == 5 and not originals & set(new.values())
    for job in new.values():
        assert not all(t.state.final for t in fake.tasks.values() if (t.array_job_id or t.job_id) == job)
    monkeypatch.setattr(schedulers, "of_run", lambda store, via=None: fake)
    return fake, store, new


def cancel(store: RunStore, stage: str | None) -> dict[str, object]:
    out = io.StringIO()
    args = argparse.Namespace(run=str(store.root), runs_dir=str(store.root.parent), via=None, stage=stage, json=True)
    with redirect_stdout(out):
        assert commands.cmd_cancel(args, Console(file=io.StringIO())) == 0
    doc: dict[str, object] = json.loads(out.getvalue())
    return doc


def of_job(fake: FakeSlurm, job: str) -> list[JobState]:
    return [t.state for t in fake.tasks.values() if (t.array_job_id or t.job_id) == job]


def test_cancel_reaches_retried_resubmitted_and_monitor_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, store, new = campaign(tmp_path, monkeypatch)
    cancel(store, None)
    left = {t.job_id: t.state for t in fake.tasks.values() if not t.state.final}
    assert left == {}, left  # every live job of the run, the new ones and the monitor's included
    for what, job in new.items():
        assert JobState.CANCELLED in of_job(fake, job), what
    last = store.events()[-1]
    assert isinstance(last, Cancelled) and set(new.values()) <= set(last.job_ids)
    assert store.state().cancelled == {"train.0", "eval.0", "final", "handler"}


def test_cancel_stage_reaches_only_that_stage_and_its_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, store, new = campaign(tmp_path, monkeypatch)
    doc = cancel(store, "eval")
    assert of_job(fake, new["eval.0 (retry)"]) == [JobState.CANCELLED] * 2  # tasks 1 and 2, retried
    for what in ("train.0 (retry)", "train.0 (oom)", "monitor"):
        assert of_job(fake, new[what]) == [JobState.RUNNING], what
    assert of_job(fake, new["final (retry)"]) == [JobState.PENDING]
    assert doc["job_ids"] == [new["eval.0 (retry)"]]  # the only live job of the stage


def test_the_query_of_status_and_retry_follows_every_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, store, new = campaign(tmp_path, monkeypatch)
    st = observe.campaign(store, fake)
    train = {t.trial: (t.job_id, t.state) for t in st.tasks if t.stage == "train"}
    assert train[1] == (f"{new['train.0 (retry)']}_1", JobState.RUNNING)
    assert train[2] == (f"{new['train.0 (oom)']}_2", JobState.RUNNING)
    assert not st.done  # the monitor's own job is no task of the run
