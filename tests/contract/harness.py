"""One contract, three schedulers: the same scenarios run against the in-memory FakeSlurm, the local
engine (a run's queue and its supervisor, real processes) and the real mini cluster. A `Work` is what a job does, written once as a bash script (for Slurm) and as an
Outcome (for the fake), so both sides are told the same story."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slurmflow.backends import Backend, FakeSlurm, Outcome, SlurmCLI
from slurmflow.backends.local_run import LocalRun, Settings
from slurmflow.slurm.runner import SubprocessRunner
from slurmflow.slurm.types import Attempt, JobInfo, JobSpec, JobState

Jobs = dict[str, JobInfo]
History = tuple[Attempt, ...]


@dataclass(frozen=True)
class Work:
    """Sleep `seconds`, then exit `fail_code` for the listed array tasks (or always, for a plain job
    with fail=True), unless `succeed_after_restart` and this is a restart."""

    seconds: int = 1
    fail_tasks: frozenset[int] = frozenset()
    fail: bool = False
    fail_code: int = 3
    succeed_after_restart: bool = False

    def script(self) -> str:
        failing = "|".join(str(i) for i in sorted(self.fail_tasks)) or "-1"
        lines = [f"sleep {self.seconds}"]
        if self.succeed_after_restart:
            lines.append('[ "${SLURM_RESTART_COUNT:-0}" -ge 1 ] && exit 0')
        if self.fail:
            lines.append(f"exit {self.fail_code}")
        lines += [
            f'case "${{SLURM_ARRAY_TASK_ID:-none}}" in {failing}) exit {self.fail_code};; esac',
            "exit 0",
        ]
        return "\n".join(lines)

    def outcome(self, index: int | None, restarts: int) -> Outcome:
        if self.succeed_after_restart and restarts >= 1:
            return Outcome(0, self.seconds)
        failed = self.fail or (index is not None and index in self.fail_tasks)
        return Outcome(self.fail_code if failed else 0, self.seconds)


class Harness(Protocol):
    backend: Backend
    kind: str
    gpu_nodes: str  # how the names of nodes with GPUs begin

    def submit(self, name: str, work: Work, **spec: Any) -> str: ...
    def jobs(self, job_id: str) -> Jobs: ...
    def wait(self, job_id: str, done: Callable[[Jobs], bool], timeout: float, what: str) -> Jobs: ...
    def stays(self, job_id: str, holds: Callable[[Jobs], bool], passes: int, timeout: float, what: str) -> Jobs: ...
    def history(self, job_ids: Sequence[str], done: Callable[[History], bool], timeout: float, what: str) -> History:
        """backend.history once `done` holds: accounting records a job seconds after the
        controller has it (slurmdbd is fed asynchronously)."""
        ...

    def stop_node(self, node: str) -> None: ...
    def start_node(self, node: str) -> None: ...
    def set_gpu_cap(self, account: str, gpus: int | None) -> None: ...
    def as_user(self, user: str, account: str) -> Harness: ...


def all_final(count: int) -> Callable[[Jobs], bool]:
    return lambda jobs: len(jobs) >= count and all(j.state.final for j in jobs.values())


@dataclass
class _Base:
    backend: Any
    user: str = "alice"
    account: str = "lab-a"
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    submitted: list[str] = field(default_factory=list)
    gpu_nodes: str = "gpu"

    def spec(self, name: str, work: Work, **spec: Any) -> JobSpec:
        return JobSpec(
            name=f"ct-{self.token}-{name}",
            script=work.script(),
            account=self.account,
            output="/dev/null",
            **spec,
        )

    def jobs(self, job_id: str) -> Jobs:
        return self.backend.query([job_id]).by_id()  # type: ignore[no-any-return]


@dataclass
class FakeHarness(_Base):
    kind: str = "fake"
    works: dict[str, Work] = field(default_factory=dict)

    @classmethod
    def create(cls) -> FakeHarness:
        harness = cls(backend=None)
        harness.backend = FakeSlurm(program=harness._program)
        return harness

    def _program(self, spec: JobSpec, index: int | None, restarts: int) -> Outcome:
        return self.works[spec.name].outcome(index, restarts)

    def submit(self, name: str, work: Work, **spec: Any) -> str:
        s = self.spec(name, work, **spec)
        self.works[s.name] = work
        job_id: str = self.backend.submit(s)
        self.submitted.append(job_id)
        return job_id

    def wait(self, job_id: str, done: Callable[[Jobs], bool], timeout: float, what: str) -> Jobs:
        for _ in range(int(timeout) + 1):
            jobs = self.jobs(job_id)
            if done(jobs):
                return jobs
            self.backend.advance(1.0)
        raise AssertionError(f"fake: {what} not reached in {timeout} simulated s: {summary(jobs)}")

    def history(self, job_ids: Sequence[str], done: Callable[[History], bool], timeout: float, what: str) -> History:
        for _ in range(int(timeout) + 1):
            got: History = self.backend.history(job_ids)
            if done(got):
                return got
            self.backend.advance(1.0)
        raise AssertionError(f"fake: {what} not reached in {timeout} simulated s: {attempts(got)}")

    def stays(self, job_id: str, holds: Callable[[Jobs], bool], passes: int, timeout: float, what: str) -> Jobs:
        """`holds` is true now and after `passes` scheduling passes (a second of simulated time each)."""
        jobs = self.jobs(job_id)
        for _ in range(passes):
            assert holds(jobs), f"fake: {what} no longer holds: {summary(jobs)}"
            self.backend.advance(1.0)
            jobs = self.jobs(job_id)
        assert holds(jobs), f"fake: {what} no longer holds: {summary(jobs)}"
        return jobs

    def stop_node(self, node: str) -> None:
        self.backend.stop_node(node)

    def start_node(self, node: str) -> None:
        self.backend.start_node(node)

    def set_gpu_cap(self, account: str, gpus: int | None) -> None:
        self.backend.set_gpu_cap(account, gpus)

    def as_user(self, user: str, account: str) -> FakeHarness:
        self.backend.user = user
        return dataclasses.replace(self, user=user, account=account)


@dataclass
class _WallClock(_Base):
    """A scheduler that runs in real time: submit, then poll what it says every `poll_s` seconds."""

    kind: str = ""
    poll_s: float = 1.0

    def submit(self, name: str, work: Work, **spec: Any) -> str:
        job_id: str = self.backend.submit(self.spec(name, work, **spec))
        self.submitted.append(job_id)
        return job_id

    def wait(self, job_id: str, done: Callable[[Jobs], bool], timeout: float, what: str) -> Jobs:
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs(job_id)
            if done(jobs):
                return jobs
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.kind}: {what} not reached in {timeout} s: {summary(jobs)}")
            time.sleep(self.poll_s)

    def history(self, job_ids: Sequence[str], done: Callable[[History], bool], timeout: float, what: str) -> History:
        deadline = time.monotonic() + timeout
        while True:
            got: History = self.backend.history(job_ids)
            if done(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.kind}: {what} not reached in {timeout} s: {attempts(got)}")
            time.sleep(self.poll_s)


@dataclass
class RealHarness(_WallClock):
    """Drives the mini cluster from the host: Slurm commands run inside the container as a
    non-root user; faults and limits are applied as root, as an operator would."""

    kind: str = "slurm"
    container: str = "slurmflow-mini"

    @classmethod
    def create(cls, container: str, user: str = "alice", account: str = "lab-a") -> RealHarness:
        runner = SubprocessRunner(prefix=("docker", "exec", "-i", "-u", user, container), timeout=60)
        return cls(backend=SlurmCLI(runner), user=user, account=account, container=container)

    def root(self, *argv: str) -> str:
        done = subprocess.run(
            ["docker", "exec", self.container, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise AssertionError(f"{argv}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def _cycles(self) -> int:
        """slurmctld's main scheduler passes so far (sdiag): the passes that judge dependencies."""
        out = self.root("sdiag")
        main = out.split("Main schedule statistics", 1)[1]
        return int(main.split("Total cycles:", 1)[1].split()[0])

    def stays(self, job_id: str, holds: Callable[[Jobs], bool], passes: int, timeout: float, what: str) -> Jobs:
        """`holds` stays true while slurmctld runs `passes` more scheduling passes: a state that
        Slurm would change on its next pass is caught, not slipped past by checking too soon."""
        start, deadline = self._cycles(), time.monotonic() + timeout
        while True:
            jobs = self.jobs(job_id)
            assert holds(jobs), f"slurm: {what} no longer holds: {summary(jobs)}"
            if self._cycles() >= start + passes:
                return jobs
            if time.monotonic() > deadline:
                raise AssertionError(f"slurm: fewer than {passes} scheduling passes in {timeout} s")
            time.sleep(1.0)

    def stop_node(self, node: str) -> None:
        self.root("cluster-node", "stop", node)

    def start_node(self, node: str) -> None:
        self.root("cluster-node", "start", node)
        self.root("cluster-ready", "--wait", "90")

    def set_gpu_cap(self, account: str, gpus: int | None) -> None:
        value = "gres/gpu=-1" if gpus is None else f"gres/gpu={gpus}"
        self.root("sacctmgr", "-i", "modify", "account", account, "set", f"GrpTRES={value}")

    def as_user(self, user: str, account: str) -> RealHarness:
        other = RealHarness.create(self.container, user, account)
        other.token = self.token
        other.submitted = self.submitted
        return other

    def cleanup(self) -> None:
        if self.submitted:
            self.root("scancel", *self.submitted)


# The local engine's supervisor without a run around it: the engine alone, no retry policy.
_SUPERVISE = "import pathlib, sys; from slurmflow.backends.local_run import supervise; sys.exit(supervise(pathlib.Path(sys.argv[1]) / 'local'))"


@dataclass
class LocalHarness(_WallClock):
    """The local engine as a run uses it: commands change its queue on disk, its detached
    supervisor runs the processes. Single user, one node, no accounts: the scenarios about
    nodes, users and account caps are Slurm's alone (marked `not_local`)."""

    kind: str = "local"
    poll_s: float = 0.1
    gpu_nodes: str = "localhost"

    @classmethod
    def create(cls, root: Path) -> LocalHarness:
        run = LocalRun.create(root / "local", Settings(devices=("0", "1", "2", "3"), cpus=4, kill_wait=2.0))
        run.supervisor = [sys.executable, "-c", _SUPERVISE]
        return cls(backend=run)

    def stays(self, job_id: str, holds: Callable[[Jobs], bool], passes: int, timeout: float, what: str) -> Jobs:
        """`holds` stays true for `passes` seconds: five supervisor steps each."""
        deadline = time.monotonic() + min(timeout, float(passes))
        while True:
            jobs = self.jobs(job_id)
            assert holds(jobs), f"local: {what} no longer holds: {summary(jobs)}"
            if time.monotonic() >= deadline:
                return jobs
            time.sleep(self.poll_s)

    def stop_node(self, node: str) -> None:
        raise NotImplementedError("the local engine has one node, this machine")

    def start_node(self, node: str) -> None:
        raise NotImplementedError("the local engine has one node, this machine")

    def set_gpu_cap(self, account: str, gpus: int | None) -> None:
        raise NotImplementedError("the local engine keeps no accounts")

    def as_user(self, user: str, account: str) -> LocalHarness:
        raise NotImplementedError("the local engine runs as its one user")

    def cleanup(self) -> None:
        if self.submitted:
            self.backend.cancel(self.submitted)
            self.backend.wait(self.submitted, settle=True, poll_s=0.1)


def summary(jobs: Jobs) -> str:
    return ", ".join(f"{k}={v.state.name}({v.reason})" for k, v in sorted(jobs.items())) or "no jobs"


def attempts(history: History) -> str:
    return ", ".join(f"{a.job_id}#{a.restart}={a.state.name}" for a in history) or "no attempts"


def states(jobs: Jobs, ids: Sequence[str]) -> list[JobState]:
    return [jobs[i].state for i in ids]
