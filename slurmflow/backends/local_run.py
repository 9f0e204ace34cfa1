"""A local run that outlives its terminal: the local engine's queue kept in the run directory, one
supervisor process per run that starts, reaps and limits the tasks, and the Backend every command
(`launch`, `status`, `logs`, `cancel`, `retry`, `resume`, `monitor`) uses on the run.

Files, in the run's `local/` directory (mode 0700, as the run):

    engine.json      the queue: settings, every task (spec, state, process group), ids, throttles
    engine.lock      taken (flock) around every read-change-write of engine.json
    supervisor.lock  held by the live supervisor for its whole life: free means none is running
    supervisor.log   what the supervisor said
    exits/           the exit code of each batch step, written by the step itself

A command changes the queue under the lock and leaves scheduling to the supervisor; it starts one
(detached with setsid, so closing the terminal stops nothing) when none holds supervisor.lock.
The supervisor steps the engine a few times a second, writes the queue when it changed, and
exits a little after everything has ended; `retry` or `resume` later starts a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from slurmflow.backends.local import LocalSlurm
from slurmflow.backends.sim import Task
from slurmflow.fsio import write_atomic
from slurmflow.slurm.capabilities import BASELINE, Capabilities
from slurmflow.slurm.types import (
    Attempt,
    ClusterConfig,
    ClusterInfo,
    Dependency,
    JobInfo,
    JobSpec,
    JobState,
    QueryResult,
)

if TYPE_CHECKING:
    from slurmflow.backends.base import Accounting

STATE = "engine.json"
LOCK = "engine.lock"
SUPERVISOR_LOCK = "supervisor.lock"
LOG = "supervisor.log"
EXITS = "exits"
STEP_S = 0.2  # how often the supervisor steps the engine
LINGER_S = 3.0  # how long it stays once everything has ended (a retry right after reuses it)
_STATES = {s.name: s for s in JobState}


class Settings(msgspec.Struct, frozen=True):
    devices: tuple[str, ...] = ()
    cpus: int = 1
    mem_mb: int | None = None
    kill_wait: float = 10.0


class _AttemptRecord(msgspec.Struct, frozen=True):
    """A past attempt of a task, in engine time (its job id is the task's)."""

    state: str
    submit: float | None
    start: float | None
    end: float | None
    node: str | None = None
    gpus: int = 0
    restart: int = 0
    exit_code: int | None = None
    signal: int | None = None


class _TaskRecord(msgspec.Struct):
    job_id: str
    raw_id: str
    array_job_id: str | None
    index: int | None
    spec: JobSpec
    user: str
    dependency: Dependency | None
    state: str
    reason: str | None
    exit_code: int | None
    signal: int | None
    node: str | None
    started: float
    eligible: float
    restarts: int
    cancelled_by: str | None
    dep_failed: bool
    gpu_ids: list[int]
    script_path: str | None
    held: bool
    released: bool
    pid: int | None
    # Since history: defaults, so that a queue written before still loads (its past attempts unknown).
    submitted: float | None = None
    finished: float | None = None
    attempts: list[_AttemptRecord] = msgspec.field(default_factory=list)


class _Queue(msgspec.Struct):
    settings: Settings
    t0: float  # the wall-clock time of engine time 0
    next_id: int = 1
    throttle: dict[str, int] = msgspec.field(default_factory=dict)
    stopping: dict[str, tuple[float, int]] = msgspec.field(default_factory=dict)
    token: str = ""
    tasks: list[_TaskRecord] = msgspec.field(default_factory=list)


_RECORD_FIELDS = tuple(f for f in _TaskRecord.__struct_fields__ if f not in ("state", "attempts"))
_ATTEMPT_FIELDS = tuple(f for f in _AttemptRecord.__struct_fields__ if f != "state")


def _attempt_record(a: Attempt) -> _AttemptRecord:
    return _AttemptRecord(state=a.state.name, **{f: getattr(a, f) for f in _ATTEMPT_FIELDS})


def _attempt(job_id: str, r: _AttemptRecord) -> Attempt:
    return Attempt(job_id=job_id, state=_STATES[r.state], **{f: getattr(r, f) for f in _ATTEMPT_FIELDS})


def _encode(engine: LocalSlurm, settings: Settings, t0: float) -> bytes:
    tasks = [
        _TaskRecord(
            state=t.state.name,
            attempts=[_attempt_record(a) for a in t.attempts],
            **{f: getattr(t, f) for f in _RECORD_FIELDS},
        )
        for t in engine.tasks.values()
    ]
    queue = _Queue(settings, t0, engine.next_id, dict(engine.throttle), dict(engine.stopping), engine.token, tasks)
    return msgspec.json.encode(queue)


def _engine(queue: _Queue, *, deferred: bool, exit_dir: Path) -> LocalSlurm:
    s = queue.settings
    engine = LocalSlurm(
        devices=s.devices,
        cpus=s.cpus,
        mem_mb=s.mem_mb,
        kill_wait=s.kill_wait,
        exit_dir=exit_dir,
        clock=time.time,
        now=time.time() - queue.t0,
        epoch=queue.t0,  # engine time is seconds since t0: history adds it back
        next_id=queue.next_id,
        deferred=deferred,
        stopping=dict(queue.stopping),
        token=queue.token or secrets.token_hex(4),
    )
    engine.throttle = dict(queue.throttle)
    for r in queue.tasks:
        fields = {f: getattr(r, f) for f in _RECORD_FIELDS}
        attempts = [_attempt(r.job_id, a) for a in r.attempts]
        engine.tasks[r.job_id] = Task(state=_STATES[r.state], attempts=attempts, **fields)
    return engine


class LocalRun:
    """The Backend of one local run: its engine's queue on disk, its supervisor started on demand."""

    def __init__(self, root: Path, python: str = sys.executable, supervisor: Sequence[str] | None = None) -> None:
        self.root = root
        self.python = python
        # The supervisor's command line, RUN_DIR appended: `slurmflow supervise`, which also applies
        # the run's retry policy (the command line owns it; this layer only starts it).
        self.supervisor = list(supervisor or [python, "-m", "slurmflow", "supervise"])

    @classmethod
    def create(cls, root: Path, settings: Settings, python: str = sys.executable) -> LocalRun:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (root / EXITS).mkdir(mode=0o700, exist_ok=True)
        run = cls(root, python)
        if not (root / STATE).exists():
            queue = _Queue(settings, time.time(), token=secrets.token_hex(4))
            write_atomic(root / STATE, msgspec.json.encode(queue).decode())
        return run

    # --- the queue on disk ------------------------------------------------------------------------

    def _load(self, *, deferred: bool = True) -> tuple[LocalSlurm, _Queue]:
        queue = msgspec.json.decode((self.root / STATE).read_bytes(), type=_Queue)
        return _engine(queue, deferred=deferred, exit_dir=self.root / EXITS), queue

    @contextlib.contextmanager
    def _changing(self) -> Iterator[LocalSlurm]:
        with _flock(self.root / LOCK):
            engine, queue = self._load()
            yield engine
            write_atomic(self.root / STATE, _encode(engine, queue.settings, queue.t0).decode())
        self.ensure_supervisor()

    def ensure_supervisor(self) -> bool:
        """Start the run's supervisor unless one is alive; True when one was started."""
        if supervisor_alive(self.root):
            return False
        with os.fdopen(os.open(self.root / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            subprocess.Popen(
                [*self.supervisor, str(self.root.parent)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # setsid: the terminal's hangup never reaches it
                close_fds=True,
            )
        return True

    # --- Backend ----------------------------------------------------------------------------------

    @property
    def runs_submitit(self) -> bool:
        return False

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        with self._changing() as engine:
            return engine.submit(spec, script_path)

    def query(self, job_ids: Sequence[str] = (), *, name: str | None = None) -> QueryResult:
        engine = self._load()[0]
        if engine.busy:
            self.ensure_supervisor()  # its supervisor was killed: a look at the run brings one back
        return engine.query(job_ids, name=name)

    def history(self, job_ids: Sequence[str]) -> tuple[Attempt, ...]:
        """The engine's own records, in wall-clock epoch seconds."""
        return self._load()[0].history(job_ids)

    def cancel(self, job_ids: Sequence[str]) -> None:
        with self._changing() as engine:
            engine.cancel(job_ids)

    def requeue(self, job_ids: Sequence[str], *, start_now: bool = False, hold: bool = False) -> None:
        with self._changing() as engine:
            engine.requeue(job_ids, start_now=start_now, hold=hold)

    def release(self, job_ids: Sequence[str]) -> None:
        with self._changing() as engine:
            engine.release(job_ids)

    def update_begin_now(self, job_id: str) -> None:
        with self._changing() as engine:
            engine.update_begin_now(job_id)

    def update_dependency(self, job_id: str, dependency: Dependency | None) -> None:
        with self._changing() as engine:
            engine.update_dependency(job_id, dependency)

    def exclude_nodes(self, job_id: str, nodes: Sequence[str]) -> None:
        with self._changing() as engine:
            engine.exclude_nodes(job_id, nodes)

    def config(self) -> ClusterConfig:
        return self._load()[0].config()

    def capabilities(self) -> Capabilities:
        return BASELINE

    def save_capabilities(self, path: Path) -> None:
        self._load()[0].save_capabilities(path)

    def cluster_info(self) -> ClusterInfo:
        return self._load()[0].cluster_info()

    def accounting(self) -> Accounting | None:
        return None

    @property
    def busy(self) -> bool:
        return self._load()[0].busy

    def wait(
        self,
        job_ids: Sequence[str],
        progress: Callable[[int, int], None] = lambda _done, _total: None,
        *,
        settle: bool = False,
        poll_s: float = STEP_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> list[JobInfo]:
        """Until every job has ended (`settle`: and every process group is gone); `progress(done,
        total)` after each look. Starts a supervisor if the run has none (it was killed)."""
        while True:
            engine = self._load()[0]
            jobs = list(engine.query(list(job_ids)).jobs)
            done = sum(1 for j in jobs if j.state.final)
            progress(done, len(jobs))
            if done == len(jobs) and not (settle and engine.busy):
                return jobs
            self.ensure_supervisor()
            sleep(poll_s)


def foreground(
    run: LocalRun,
    job_ids: Sequence[str],
    progress: Callable[[int, int], None] = lambda _done, _total: None,
    **kw: object,
) -> list[JobInfo]:
    """A launch that stays in the foreground: follow the run to its end. Ctrl-C cancels its jobs
    and waits until their processes are gone (no orphans), then goes on as an interrupt."""
    try:
        return run.wait(job_ids, progress, **kw)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        run.cancel(list(job_ids))
        run.wait(job_ids, settle=True, **kw)  # type: ignore[arg-type]
        raise


def supervisor_alive(root: Path) -> bool:
    try:
        with _flock(root / SUPERVISOR_LOCK, blocking=False):
            return False
    except BlockingIOError:
        return True


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool = True) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)  # closing releases the lock


def supervise(
    root: Path,
    *,
    on_step: Callable[[], bool] = lambda: False,
    step_s: float = STEP_S,
    linger_s: float = LINGER_S,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """The supervisor's loop; returns at once when another supervisor holds the run. `on_step`
    runs between steps, outside the lock (the retry policy's tick); while it returns True the
    supervisor stays, idle engine or not (a search that will submit more trials)."""
    try:
        holder = _flock(root / SUPERVISOR_LOCK, blocking=False)
        holder.__enter__()
    except BlockingIOError:
        return 0
    held = True
    engine: LocalSlurm | None = None
    seen: tuple[int, int, int] | None = None  # engine.json as last read or written
    held_bytes = b""  # its content then
    idle_since: float | None = None
    try:
        while True:
            with _flock(root / LOCK):
                st = (root / STATE).stat()
                if engine is None or (st.st_ino, st.st_mtime_ns, st.st_size) != seen:  # a command changed it
                    held_bytes = (root / STATE).read_bytes()
                    queue = msgspec.json.decode(held_bytes, type=_Queue)
                    procs = engine.procs if engine is not None else {}
                    engine = _engine(queue, deferred=False, exit_dir=root / EXITS)
                    engine.procs = procs  # the processes this supervisor started: still its children
                engine.advance()
                after = _encode(engine, queue.settings, queue.t0)
                if after != held_bytes:
                    write_atomic(root / STATE, after.decode())
                    held_bytes = after
                st = (root / STATE).stat()
                seen = (st.st_ino, st.st_mtime_ns, st.st_size)
                busy = engine.busy
            if on_step() or busy:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= linger_s:
                with _flock(root / LOCK):
                    st = (root / STATE).stat()
                    if (st.st_ino, st.st_mtime_ns, st.st_size) == seen:
                        # Nothing came in since the last step. The supervisor lock goes while the
                        # queue is still locked: a command that changes the queue after this
                        # finds no supervisor, and starts one.
                        holder.__exit__(None, None, None)
                        held = False
                        return 0
                idle_since = None  # a command changed the queue meanwhile: go on
            sleep(step_s)
    finally:
        if held:
            holder.__exit__(None, None, None)
