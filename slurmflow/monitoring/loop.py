"""The monitor's three ways of running, over the one tick of `monitoring.monitor`:

- in the foreground (`slurmflow monitor RUN`): `follow` ticks until the run has ended, backing off
  while nothing happens; `--once` ticks once (from cron, say);
- as a small self-resubmitting Slurm job (`--as-job`): `submit` queues the first link, and each
  link runs `tick_and_reschedule`.

Each link of the chain ticks once, then submits its successor `interval` seconds later, until the
run has ended. A link whose tick raised, whatever the exception, records it (`tick_failed`, shown
by `status`), still submits its successor and then exits non-zero, so Slurm's accounting shows the
failure while the chain goes on: only a tick that finds the run ended stops it. A successor Slurm
refuses for good ends the chain, said in the log (`reschedule_failed`). `singleton` on one
name keeps at most one link queued or running.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from slurmflow.backends.base import Backend
from slurmflow.errors import CommandError, CommandTimeout, ControllerFull, ControllerUnavailable, SubmissionAmbiguous
from slurmflow.monitoring.monitor import Tick, one_line, tick
from slurmflow.rundir.events import MonitorJob, RescheduleFailed, TickFailed
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.backoff import Backoff
from slurmflow.slurm.types import Dependency, DepKind, JobSpec, JobState

# The foreground loop ticks every `interval` seconds while actions happen, and waits 1.5 times
# longer after each quiet tick, up to `max_interval`: one batched query per tick whatever the size.
QUIET_FACTOR = 1.5

# A successor refused by a controller that does not answer (restarting, overloaded) is asked for
# again after BACKOFF_S, doubling up to MAX_BACKOFF_S, for PATIENCE_S in all: well inside the
# link's 10-minute time limit. Before each new try the successor is looked up by name, as the
# refused sbatch may have reached the controller (two successors would make two chains).
BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
PATIENCE_S = 300.0
TRANSIENT = (ControllerUnavailable, ControllerFull, SubmissionAmbiguous, CommandTimeout)


def job_name(run_id: str) -> str:
    return f"sf.{run_id}.monitor"


def spec(store: RunStore, *, interval: float, partition: str | None, delay: float, python: str) -> JobSpec:
    """The next link: `slurmflow monitor RUN --once --reschedule interval`, `delay` seconds from now."""
    # In the job, Slurm's commands are local: no prefix, whatever the launch used.
    argv = [python, "-m", "slurmflow", "monitor", str(store.root), "--once", "--via", ""]
    argv += ["--reschedule", str(interval)]
    if partition:
        argv += ["--partition", partition]
    return JobSpec(
        name=job_name(store.run_id),
        script="exec " + " ".join(shlex.quote(a) for a in argv),
        partition=partition,
        cpus_per_task=1,
        mem="512M",
        time="10:00",
        output=str(store.logs_dir.joinpath("monitor.out")),
        dependency=Dependency.on(DepKind.SINGLETON),
        extra_args=("--open-mode=append", f"--begin=now+{max(1, int(delay))}"),
        comment=f"slurmflow:{store.run_id}:monitor",
    )


def submit(
    store: RunStore,
    backend: Backend,
    *,
    interval: float,
    partition: str | None,
    delay: float,
    python: str = sys.executable,
    clock: Callable[[], float] = time.time,
) -> str:
    """Submit a link of the chain and record it (`monitor_job`: the run's jobs include it)."""
    job_id = backend.submit(spec(store, interval=interval, partition=partition, delay=delay, python=python))
    store.append(MonitorJob(job_id=job_id, t=clock()))
    return job_id


@dataclass(frozen=True)
class Link:
    """What one link of the chain did."""

    tick: Tick | None  # None: the tick raised
    successor: str | None  # the next link's job id; None once the run has ended (or it was refused)
    error: BaseException | None = None  # what the tick raised, or what refused the successor

    @property
    def exit_code(self) -> int:
        return 1 if self.error is not None else 0


def tick_and_reschedule(
    store: RunStore,
    backend: Backend,
    *,
    interval: float,
    partition: str | None,
    this_job: str | None = None,
    python: str = sys.executable,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Link:
    """One link: tick, then submit the successor unless the tick found the run ended."""
    me = f"monitor job {this_job}" if this_job else "monitor job"
    result: Tick | None = None
    error: BaseException | None = None
    try:
        result = tick(store, backend, clock=clock)
    except Exception as exc:  # anything at all: the chain must outlive our bugs and Slurm's hiccups
        error = exc
        store.append(TickFailed(task=me, node="monitor", why=one_line(exc), t=clock()))
    if result is not None and result.done:
        return Link(result, None)

    def attempt(tries: int) -> str:
        if tries:  # the refused sbatch may have reached the controller: two successors, two chains
            found = queued_successor(store, backend, this_job)
            if found:
                store.append(MonitorJob(job_id=found, reconciled=True, t=clock()))
                return found
        return submit(
            store, backend, interval=interval, partition=partition, delay=interval, python=python, clock=clock
        )

    backoff = Backoff(start=BACKOFF_S, cap=MAX_BACKOFF_S, patience=PATIENCE_S, sleep=sleep)
    try:
        return Link(result, backoff.run(attempt, transient=TRANSIENT), error)
    except CommandError as exc:
        why = f"the next monitor job could not be submitted, so the chain ends: {one_line(exc)}"
        store.append(RescheduleFailed(task=me, node="monitor", why=why, t=clock()))
        return Link(result, None, error or exc)


def queued_successor(store: RunStore, backend: Backend, this_job: str | None) -> str | None:
    """A link of this run's chain already waiting in the queue, other than this one."""
    try:
        found = backend.query(name=job_name(store.run_id)).jobs
    except CommandError:
        return None  # the controller is still away: the next try asks again
    waiting = {j.base_id for j in found if j.state is JobState.PENDING and j.base_id != this_job}
    return max(waiting, key=int) if waiting else None


def follow(
    store: RunStore,
    backend: Backend,
    *,
    interval: float,
    max_interval: float,
    once: bool = False,
    show: Callable[[Tick], None] = lambda _t: None,
    unavailable: Callable[[CommandError, float], None] = lambda _e, _w: None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    step: Callable[..., Tick] = tick,
) -> int:
    """Tick until the run has ended (or once); the exit status of `slurmflow monitor`.

    A controller that does not answer (slurmctld restarting: running jobs survive it) or a query
    that failed is tried again `interval` later, never acted on; `--once` then exits 1. A refused
    action does not get here: the tick records it and goes on."""
    wait = interval
    while True:
        try:
            result = step(store, backend, clock=clock)
        except CommandError as exc:
            unavailable(exc, wait)
            if once:
                return 1
            sleep(wait)
            continue
        show(result)
        if once or result.done:
            return 0
        wait = interval if result.actions else min(max_interval, wait * QUIET_FACTOR)
        sleep(wait)
