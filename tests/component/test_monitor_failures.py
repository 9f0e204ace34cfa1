"""A monitor that cannot die quietly: an action Slurm refuses is an event and is tried again on a
later tick; the --as-job chain reschedules itself whatever its tick raised."""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rich.console import Console

from slurmflow.backends import FakeSlurm
from slurmflow.cli import commands, views
from slurmflow.errors import ControllerUnavailable, SlurmError
from slurmflow.model import RetryPolicy
from slurmflow.monitoring.monitor import tick
from slurmflow.monitoring.observe import campaign
from slurmflow.run import schedulers
from slurmflow.rundir.events import ActionFailed, MonitorJob, RescheduleFailed, Rewired, TickFailed
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import Dependency, JobSpec, JobState, QueryResult
from tests.component.test_monitor import (
    flaky,
    run,
    states,
    typed_writes,  # noqa: F401 (autouse: every write typed)
)


@dataclass
class Refusing(FakeSlurm):
    """Refuses the next call of each named method once, as a loaded controller does."""

    refuse: set[str] = field(default_factory=set)
    query_error: Exception | None = None

    def _refused(self, method: str, argv: list[str]) -> None:
        if method in self.refuse:
            self.refuse.discard(method)
            raise SlurmError(argv, 1, "", "slurm_update error: Socket timed out on send/recv operation")

    def update_dependency(self, job_id: str, dependency: Dependency | None) -> None:
        self._refused("update_dependency", ["scontrol", "update", f"JobId={job_id}", "Dependency=..."])
        super().update_dependency(job_id, dependency)

    def release(self, job_ids: Sequence[str]) -> None:
        self._refused("release", ["scontrol", "release", ",".join(job_ids)])
        super().release(job_ids)

    def query(self, job_ids: Sequence[str] = (), *, name: str | None = None) -> QueryResult:
        if self.query_error is not None:
            exc, self.query_error = self.query_error, None
            raise exc
        return super().query(job_ids, name=name)


def rendered(store: RunStore, backend: FakeSlurm) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(views.status_view(campaign(store, backend)))
    return buffer.getvalue()


@pytest.mark.parametrize("method", ["update_dependency", "release"])
def test_a_refused_step_of_a_rewire_is_an_event_and_a_later_tick_finishes_it(tmp_path: Path, method: str) -> None:
    fake = Refusing(program=flaky, refuse={method})
    store = run(tmp_path, fake, RetryPolicy(exit_codes=(75,)))
    j = store.state().submitted
    fake.advance(5)
    assert fake.tasks[f"{j['eval.0']}_2"].state is JobState.CANCELLED  # revived by a rewire
    first = tick(store, fake)  # returns: the refusal does not end the tick
    failed = store.state().failures
    assert [(e.task, e.action) for e in failed] == [(f"{j['eval.0']}_2", "rewire")]
    assert failed[0].why.startswith("scontrol ") and "Socket timed out" in failed[0].why
    assert "\n" not in failed[0].why
    # The other actions of the tick went on: the requeue, and the rewire of `final`.
    assert {(a.kind, a.task) for a in first.actions} >= {
        ("requeued", f"{j['train.0']}_2"),
        ("rewired", j["final"]),
        ("action_failed", f"{j['eval.0']}_2"),
    }
    assert not first.done
    shown = [a for a in campaign(store, fake).actions if isinstance(a, ActionFailed)]
    assert len(shown) == 1 and "action_failed (rewire)" in rendered(store, fake)
    for _ in range(30):
        fake.advance(2)
        if tick(store, fake).done:
            break
    got = states(fake)
    assert all(s is JobState.COMPLETED for k, s in got.items() if "handler" not in k), got
    rewired = [e.task for e in store.events() if isinstance(e, Rewired)]
    assert rewired.count(f"{j['eval.0']}_2") == 1  # finished once, on a later tick


def monitor_args(store: RunStore) -> argparse.Namespace:
    return argparse.Namespace(
        run=str(store.root),
        runs_dir=str(store.root.parent),
        via=None,
        as_job=False,
        once=True,
        reschedule=5.0,
        partition="cpu",
        interval=5.0,
        max_interval=300.0,
        json=False,
    )


@pytest.mark.parametrize("error", [RuntimeError("a bug of ours"), ControllerUnavailable(["squeue"], 1, "", "down")])
def test_a_monitor_job_whose_tick_raised_still_submits_its_successor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    fake = Refusing(program=flaky, query_error=error)
    store = run(tmp_path, fake, RetryPolicy(exit_codes=(75,)))
    monkeypatch.setattr(schedulers, "of_run", lambda store, via=None: fake)
    code = commands.cmd_monitor(monitor_args(store), Console(file=io.StringIO()))
    assert code != 0  # Slurm's accounting shows the failed link
    successors = [t for t in fake.tasks.values() if t.spec.name == "sf.m-1.monitor"]
    assert len(successors) == 1 and "--reschedule 5.0" in successors[0].spec.script
    events = store.events()
    failed, successor = events[-2:]
    assert isinstance(failed, TickFailed) and isinstance(successor, MonitorJob)
    assert type(error).__name__ in failed.why or "down" in failed.why
    assert "tick_failed" in rendered(store, fake)


def test_the_chain_ends_only_when_the_run_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Refusing(program=flaky)
    store = run(tmp_path, fake, RetryPolicy(exit_codes=(75,)))
    monkeypatch.setattr(schedulers, "of_run", lambda store, via=None: fake)
    links = 0
    for _ in range(30):
        fake.advance(2)
        before = len(store.state().monitor_jobs)
        assert commands.cmd_monitor(monitor_args(store), Console(file=io.StringIO())) == 0
        after = len(store.state().monitor_jobs)
        if after == before:
            break
        links += 1
    assert links >= 2 and all(s is JobState.COMPLETED for k, s in states(fake).items() if "handler" not in k)


@dataclass
class NoSbatch(Refusing):
    """Once `away`, sbatch is refused as by a controller that does not answer; with `creates`, the
    job was made all the same (the answer was lost, not the request)."""

    away: bool = False
    creates: bool = False

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        if not self.away:
            return super().submit(spec, script_path)
        if self.creates:
            super().submit(spec, script_path)
        raise ControllerUnavailable(["sbatch"], 1, "", "sbatch: error: Unable to contact slurm controller")


def test_a_successor_refused_for_minutes_ends_the_chain_said_in_the_log(tmp_path: Path) -> None:
    from slurmflow.monitoring import loop as monitor_job

    fake = NoSbatch(program=flaky)
    store = run(tmp_path, fake, RetryPolicy(exit_codes=(75,)))
    fake.away = True
    pauses: list[float] = []
    link = monitor_job.tick_and_reschedule(store, fake, interval=5, partition=None, sleep=pauses.append)
    assert link.successor is None and link.exit_code == 1
    assert len(pauses) > 5 and sum(pauses) <= monitor_job.PATIENCE_S and max(pauses) == monitor_job.MAX_BACKOFF_S
    last = store.events()[-1]
    assert isinstance(last, RescheduleFailed) and "Unable to contact slurm controller" in last.why


def test_a_successor_that_reached_slurm_is_found_not_submitted_twice(tmp_path: Path) -> None:
    from slurmflow.monitoring import loop as monitor_job

    fake = NoSbatch(program=flaky)
    store = run(tmp_path, fake, RetryPolicy(exit_codes=(75,)))
    fake.advance(5)
    fake.away = fake.creates = True
    for node in fake.nodes:
        node.up = False  # the successor waits in the queue, as its --begin makes it on a real cluster
    link = monitor_job.tick_and_reschedule(store, fake, interval=5, partition=None, sleep=lambda s: None)
    successors = [t for t in fake.tasks.values() if t.spec.name == "sf.m-1.monitor"]
    assert len(successors) == 1 and link.successor == successors[0].job_id and link.exit_code == 0
    assert store.state().monitor_jobs == [link.successor]  # recorded: `cancel` reaches it
