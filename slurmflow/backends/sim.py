"""Slurm's scheduling semantics, shared by the in-memory fake and the local engine.

It reproduces the Slurm behaviour slurmflow depends on (verified on a real cluster and kept honest
by the shared contract suite in tests/contract): array tasks, the throttle, afterok / afternotok /
afterany / aftercorr / singleton, DependencyNeverSatisfied and --kill-on-invalid-dep, requeue with
a BeginTime delay that does NOT revive failed dependents, dependency updates, holds, excluded
nodes, GPU and CPU slots per node, and the GrpTRES=gres/gpu account cap (pending reason
AssocGrpGRES). What a running task does is a subclass's: FakeSlurm plays scripted outcomes in
simulated time, LocalSlurm runs real processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from slurmflow.backends import attempts
from slurmflow.errors import SlurmError
from slurmflow.fsio import write_json_atomic
from slurmflow.slurm import text as slurm_text
from slurmflow.slurm.capabilities import BASELINE, Capabilities
from slurmflow.slurm.types import (
    Attempt,
    ClusterConfig,
    ClusterInfo,
    Dependency,
    DepKind,
    JobInfo,
    JobSpec,
    JobState,
    QueryResult,
)

if TYPE_CHECKING:
    from slurmflow.backends.base import Accounting


@dataclass
class Node:
    name: str
    partitions: tuple[str, ...]
    gpus: int
    cpus: int = 8
    up: bool = True


@dataclass
class Task:
    job_id: str
    raw_id: str
    array_job_id: str | None
    index: int | None
    spec: JobSpec
    user: str
    dependency: Dependency | None
    state: JobState = JobState.PENDING
    reason: str | None = "None"
    exit_code: int | None = None
    signal: int | None = None
    node: str | None = None
    started: float = 0.0
    ends: float = 0.0
    eligible: float = 0.0
    restarts: int = 0
    cancelled_by: str | None = None
    # Once Slurm finds a dependency unsatisfiable it remembers that: a requeued parent that later
    # succeeds does not revive the child; only a dependency update does (verified on 22.05 and 24.11).
    dep_failed: bool = False
    gpu_ids: list[int] = field(default_factory=list)  # the GPU slots a running task holds (local backend)
    script_path: str | None = None
    pid: int | None = None  # the process (group) of a running task, where there is one (local engine)
    # requeuehold (or --hold): never scheduled, dependency not judged, until released
    held: bool = False
    released: bool = False
    # For history: when the current attempt was queued (submit or requeue) and ended (None: it has
    # not; None too for a task from before these were kept), and the attempts before it.
    submitted: float | None = None
    finished: float | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        return self.spec.gpus_per_task

    @property
    def cpus(self) -> int:
        return self.spec.cpus_per_task or 1


def default_nodes() -> list[Node]:
    """The mini cluster's layout (docker/slurm-cluster)."""
    return [
        Node("gpu1", ("gpu",), gpus=4),
        Node("gpu2", ("gpu",), gpus=4),
        Node("cpu1", ("cpu",), gpus=0),
    ]


@dataclass
class Scheduler:
    """Slurm's scheduling over a set of nodes; what a running task does is the subclass's (hooks
    `_start`, `_poll`, `_stop`). `now` is the scheduler's clock; `advance()` lets time pass."""

    nodes: list[Node] = field(default_factory=default_nodes)
    user: str = "alice"
    default_account: str = "lab-a"
    default_partition: str = "gpu"
    max_array_size: int = 1001
    # A requeued job waits for BeginTime before it may start again (about 120 s on a real cluster).
    requeue_delay: float = 120.0
    gpu_caps: dict[str, int] = field(default_factory=dict)
    now: float = 0.0
    version: str = "fake"
    tasks: dict[str, Task] = field(default_factory=dict)
    next_id: int = 1
    # Deferred: operations change the queue and leave scheduling to whoever runs `advance()` (the
    # local engine's supervisor, while a command changes the run's persisted queue).
    deferred: bool = False
    throttle: dict[str, int] = field(default_factory=dict)
    # The epoch time of scheduler time 0, which history's times count from: 0 for the fake, whose
    # simulated clock is reported as is.
    epoch: float = 0.0

    # --- Backend ------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        partition = spec.partition or self.default_partition
        if not any(partition in n.partitions or "*" in n.partitions for n in self.nodes):
            raise SlurmError(["sbatch"], 1, "", "sbatch: error: invalid partition specified: " + partition)
        if spec.dependency:
            for parent in spec.dependency.parents():
                if not any(
                    t.job_id == parent or t.array_job_id == parent or t.raw_id == parent for t in self.tasks.values()
                ):
                    raise SlurmError(
                        ["sbatch"],
                        1,
                        "",
                        "sbatch: error: Batch job submission failed: Job dependency problem",
                    )
        base = self._new_id()
        indices: list[int | None] = [None]
        if spec.array:
            indices = list(slurm_text.expand_indices(spec.array))
            if max(i for i in indices if i is not None) >= self.max_array_size:
                raise SlurmError(
                    ["sbatch"],
                    1,
                    "",
                    "sbatch: error: Batch job submission failed: Invalid job array specification",
                )
            if "%" in spec.array:
                self.throttle[base] = int(spec.array.rsplit("%", 1)[1])
        for idx in indices:
            raw = base if idx is None or idx == indices[-1] else self._new_id()
            job_id = base if idx is None else f"{base}_{idx}"
            self.tasks[job_id] = Task(
                job_id,
                raw,
                base if idx is not None else None,
                idx,
                spec,
                self.user,
                spec.dependency,
                eligible=self.now,
                script_path=script_path,
                submitted=self.now,
            )
        self._schedule()
        return base

    def query(self, job_ids: Sequence[str] = (), *, name: str | None = None) -> QueryResult:
        wanted = set(job_ids)
        rows = [
            self._info(t)
            for t in self.tasks.values()
            if (not wanted or t.job_id in wanted or (t.array_job_id or t.job_id) in wanted)
            and (name is None or t.spec.name == name)
        ]
        return QueryResult(tuple(rows))

    def history(self, job_ids: Sequence[str]) -> tuple[Attempt, ...]:
        """The scheduler's own records: each task's past attempts, then its current one; ids are
        read as sacct reads them (attempts.history)."""
        return attempts.history(self.tasks.values(), job_ids, self.epoch)

    def cancel(self, job_ids: Sequence[str]) -> None:
        for t in self._select(job_ids):
            if not t.state.final:
                self._end(t, JobState.CANCELLED, 0, 15 if t.state is JobState.RUNNING else 0)
                t.cancelled_by = self.user
        self._schedule()

    def requeue(self, job_ids: Sequence[str], *, start_now: bool = False, hold: bool = False) -> None:
        for t in self._select(job_ids):
            if t.state is JobState.PENDING:
                raise SlurmError(["scontrol", "requeue"], 1, "", "Requested operation is presently disabled")
            self._requeue(t)
            t.held = hold
            if start_now:
                t.eligible = self.now
        self._schedule()

    def update_begin_now(self, job_id: str) -> None:
        for t in self._select([job_id]):
            t.eligible = self.now
        self._schedule()

    def release(self, job_ids: Sequence[str]) -> None:
        for t in self._select(job_ids):
            t.held, t.released = False, True
        self._schedule()

    def update_dependency(self, job_id: str, dependency: Dependency | None) -> None:
        targets = self._select([job_id])
        if not targets or any(t.state is not JobState.PENDING for t in targets):
            raise SlurmError(["scontrol", "update"], 1, "", "Job is no longer pending execution")
        for t in targets:
            t.dependency = dependency
            t.dep_failed = False
            t.reason = "None"
        self._schedule()

    def exclude_nodes(self, job_id: str, nodes: Sequence[str]) -> None:
        for t in self._select([job_id]):
            t.spec = replace(t.spec, exclude=(*t.spec.exclude, *nodes))

    def capabilities(self) -> Capabilities:
        """Behaves as the newest Slurm: a dependency on an unknown job is rejected."""
        return BASELINE

    def save_capabilities(self, path: Path) -> None:
        write_json_atomic(path, self.capabilities().to_dict())

    @property
    def runs_submitit(self) -> bool:
        return False  # no Slurm here: callable stages run through the job script

    def accounting(self) -> Accounting | None:
        return None  # no associations: budgets and submit limits are Slurm's to enforce

    def config(self) -> ClusterConfig:
        return ClusterConfig(self.version, self.max_array_size, 60000, 300)

    def cluster_info(self) -> ClusterInfo:
        gpus: dict[str, int] = {}
        for n in self.nodes:
            for p in n.partitions:
                gpus[p] = max(gpus.get(p, 0), n.gpus)
        return ClusterInfo(
            max_array_size=self.max_array_size,
            partition_gpus=gpus,
            default_partition=self.default_partition,
            accounts=frozenset({self.default_account, *self.gpu_caps}),
            version=self.version,
            max_job_count=60000,
        )

    def advance(self, seconds: float = 1.0) -> None:
        """Let simulated time pass, one second at a time, ending and starting jobs as Slurm would."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + 1.0)
            self._tick()

    def _tick(self) -> None:
        for t in self.tasks.values():
            if t.state is JobState.RUNNING:
                code = self._poll(t)
                if code is not None:
                    self._end(t, self._ended_as(t, code), code, 0)
        self._schedule()

    # --- simulation ---------------------------------------------------------------------------

    def _new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id - 1)

    def _select(self, job_ids: Sequence[str]) -> list[Task]:
        wanted = set(job_ids)
        return [t for t in self.tasks.values() if t.job_id in wanted or (t.array_job_id or "") in wanted]

    def _family(self, job_id: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.job_id == job_id or t.array_job_id == job_id or t.raw_id == job_id]

    def _end(self, t: Task, state: JobState, code: int, sig: int) -> None:
        if t.state is JobState.RUNNING:
            self._stop(t)
        t.state, t.exit_code, t.signal, t.finished = state, code, sig, self.now
        t.reason = "None" if state is not JobState.FAILED else "NonZeroExitCode"

    def _stop(self, t: Task) -> None:
        """A running task is ended early (cancel, node failure, requeue)."""

    def _requeue(self, t: Task, ended_as: JobState = JobState.REQUEUED) -> None:
        """Back to the queue; the attempt that ends here is kept (attempts.close), in the state that
        ended it: REQUEUED for an explicit requeue, NODE_FAIL for a lost node."""
        if t.state is JobState.RUNNING:
            self._stop(t)
        attempts.close(t, ended_as, self.now)
        t.state, t.node, t.exit_code, t.signal = JobState.PENDING, None, None, None
        t.restarts += 1
        t.eligible = self.now + self.requeue_delay
        t.reason = "BeginTime"

    def _dep_status(self, t: Task) -> bool | None:
        """True: satisfied; False: can never be satisfied; None: not yet."""
        dep = t.dependency
        if dep is None:
            return True
        results = [self._clause(t, c.kind, c.job_ids) for c in dep.clauses]
        if dep.any_of:
            return True if any(r is True for r in results) else (False if all(r is False for r in results) else None)
        return False if any(r is False for r in results) else (True if all(r is True for r in results) else None)

    def _clause(self, t: Task, kind: DepKind, ids: tuple[str, ...]) -> bool | None:
        if kind is DepKind.SINGLETON:
            rivals = [
                o
                for o in self.tasks.values()
                if o.spec.name == t.spec.name and o.user == t.user and o.raw_id < t.raw_id and not o.state.final
            ]
            return None if rivals else True
        verdicts: list[bool | None] = []
        for parent in ids:
            family = self._family(parent)
            if kind is DepKind.AFTER_CORR and t.index is not None:
                family = [p for p in family if p.index == t.index] or family
            done = all(p.state.final for p in family)
            ok = [p.state is JobState.COMPLETED for p in family]
            if kind in (DepKind.AFTER_OK, DepKind.AFTER_CORR):
                verdicts.append(
                    False
                    if any(p.state.final and not p.state.succeeded for p in family)
                    else (True if all(ok) else None)
                )
            elif kind is DepKind.AFTER_NOT_OK:
                verdicts.append(None if not done else (not all(ok)))
            else:  # AFTER_ANY
                verdicts.append(True if done else None)
        return False if any(v is False for v in verdicts) else (True if all(v is True for v in verdicts) else None)

    def _schedule(self) -> None:
        if self.deferred:
            return
        for t in sorted(self.tasks.values(), key=lambda x: (int(x.array_job_id or x.job_id), x.index or 0)):
            if t.state is not JobState.PENDING:
                continue
            if t.held or ("--hold" in t.spec.extra_args and not t.released):
                t.reason = "JobHeldUser"
                continue
            status = False if t.dep_failed else self._dep_status(t)
            if status is False:
                t.dep_failed = True
                if t.spec.kill_on_invalid_dep:
                    self._end(t, JobState.CANCELLED, 0, 0)
                t.reason = "DependencyNeverSatisfied"
                continue
            if status is None:
                t.reason = "Dependency"
                continue
            if t.eligible > self.now:
                t.reason = "BeginTime"
                continue
            if t.array_job_id and t.array_job_id in self.throttle:
                running = sum(1 for o in self._family(t.array_job_id) if o.state is JobState.RUNNING)
                if running >= self.throttle[t.array_job_id]:
                    t.reason = "JobArrayTaskLimit"
                    continue
            account = t.spec.account or self.default_account
            cap = self.gpu_caps.get(account)
            if cap is not None and t.gpus:
                used = sum(
                    o.gpus
                    for o in self.tasks.values()
                    if o.state is JobState.RUNNING and (o.spec.account or self.default_account) == account
                )
                if used + t.gpus > cap:
                    t.reason = "AssocGrpGRES"
                    continue
            node = self._fit(t)
            if node is None:
                t.reason = "Resources"
                continue
            t.state, t.node, t.reason = JobState.RUNNING, node.name, "None"
            t.started = self.now
            self._start(t)

    # Hooks: what a running task does (FakeSlurm plays a scripted outcome; LocalSlurm runs a process).

    def _start(self, t: Task) -> None:
        """A task has just been given its node and state RUNNING."""

    def _poll(self, t: Task) -> int | None:
        """The exit code of a running task that has ended; None while it runs."""
        return None

    def _ended_as(self, t: Task, code: int) -> JobState:
        return JobState.COMPLETED if code == 0 else JobState.FAILED

    def _fit(self, t: Task) -> Node | None:
        partition = t.spec.partition or self.default_partition
        for node in self.nodes:
            if not node.up or node.name in t.spec.exclude:
                continue
            if partition not in node.partitions and "*" not in node.partitions:
                continue
            running = [o for o in self.tasks.values() if o.node == node.name and o.state is JobState.RUNNING]
            if (
                sum(o.gpus for o in running) + t.gpus <= node.gpus
                and sum(o.cpus for o in running) + t.cpus <= node.cpus
            ):
                return node
        return None

    def _info(self, t: Task) -> JobInfo:
        return JobInfo(
            job_id=t.job_id,
            name=t.spec.name,
            state=t.state,
            array_job_id=t.array_job_id,
            array_task_id=t.index,
            raw_id=t.raw_id,
            exit_code=t.exit_code,
            signal=t.signal,
            reason=t.reason,
            nodes=t.node,
            account=t.spec.account or self.default_account,
            user=t.user,
            partition=t.spec.partition or self.default_partition,
            restarts=t.restarts,
            cancelled_by=t.cancelled_by,
        )
