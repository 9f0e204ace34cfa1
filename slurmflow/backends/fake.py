"""An in-memory Slurm for tests: Slurm's scheduling (sim.Scheduler) in simulated time, no
processes. What a job does is decided by `program(spec, task_index, restart_count) -> Outcome`,
since there is no script to run; node failures and account GPU caps are injected by the test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from slurmflow.backends.sim import Node, Scheduler, Task
from slurmflow.slurm.types import JobSpec, JobState

# A test names a node of the fake as a node of any scheduler.
FakeNode = Node


@dataclass(frozen=True)
class Outcome:
    exit_code: int = 0
    seconds: float = 1.0
    state: JobState | None = None  # e.g. OUT_OF_MEMORY; by default COMPLETED or FAILED by exit code


Program = Callable[[JobSpec, "int | None", int], Outcome]


@dataclass
class FakeSlurm(Scheduler):
    """Backend implementation with a simulated clock; call `advance()` to let time pass."""

    program: Program = field(default=lambda spec, index, restarts: Outcome())
    _outcomes: dict[str, Outcome] = field(default_factory=dict)

    def _start(self, t: Task) -> None:
        outcome = self._outcomes[t.job_id] = self.program(t.spec, t.index, t.restarts)
        t.ends = self.now + outcome.seconds

    def _poll(self, t: Task) -> int | None:
        return self._outcomes[t.job_id].exit_code if t.ends <= self.now else None

    def _ended_as(self, t: Task, code: int) -> JobState:
        return self._outcomes[t.job_id].state or super()._ended_as(t, code)

    # --- faults and limits --------------------------------------------------------------------

    def stop_node(self, name: str) -> None:
        node = next(n for n in self.nodes if n.name == name)
        node.up = False
        for t in self.tasks.values():
            if t.node == name and t.state is JobState.RUNNING:
                if t.spec.requeue is False:
                    self._end(t, JobState.NODE_FAIL, 0, 15)
                else:
                    self._requeue(t, JobState.NODE_FAIL)  # as accounting records the lost attempt
        self._schedule()

    def start_node(self, name: str) -> None:
        next(n for n in self.nodes if n.name == name).up = True
        self._schedule()

    def set_gpu_cap(self, account: str, gpus: int | None) -> None:
        if gpus is None:
            self.gpu_caps.pop(account, None)
        else:
            self.gpu_caps[account] = gpus
        self._schedule()
