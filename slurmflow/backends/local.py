"""Run a plan on this machine with Slurm's semantics: the embedded default when there is no Slurm.

The scheduling (arrays, throttles, every dependency kind, kill-on-invalid-dep, GPU slots) is
FakeSlurm's, checked against real Slurm by the contract suite; here each task is a real process
running the same batch script, with the environment Slurm would give it. A task past its time
limit ends as Slurm ends it: SIGTERM to its process group, SIGKILL after `kill_wait` seconds,
state TIMEOUT.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slurmflow.backends.fake import FakeNode, FakeSlurm, _Task
from slurmflow.slurm.sbatch import render_script
from slurmflow.slurm.types import JobInfo, JobSpec, JobState
from slurmflow.slurm.units import time_hours


def detect_gpus() -> int:
    """GPUs NVML can see on this machine (0 without a driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no library, no driver, no device: no GPUs
        return 0


def _expand_output(pattern: str, t: _Task) -> str:
    # The filename patterns of man sbatch that slurmflow uses: %A array job, %a task, %j job, %x name.
    return (
        pattern.replace("%A", t.array_job_id or t.raw_id)
        .replace("%a", str(t.index if t.index is not None else 0))
        .replace("%j", t.raw_id)
        .replace("%x", t.spec.name)
    )


@dataclass
class LocalSlurm(FakeSlurm):
    """A one-node Slurm of this machine. `gpus` are slots handed out as CUDA_VISIBLE_DEVICES."""

    gpus: int = 0
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    requeue_delay: float = 0.0
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _free_gpus: dict[str, list[int]] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic)
    # Seconds between SIGTERM and SIGKILL when a task is stopped (Slurm's KillWait, 30 s by default).
    kill_wait: float = 10.0

    def __post_init__(self) -> None:
        self.nodes = [FakeNode("localhost", ("*",), gpus=self.gpus, cpus=self.cpus)]
        self._free_gpus = {"localhost": list(range(self.gpus))}
        self.default_partition = "local"

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        if script_path is None:
            fd, path = tempfile.mkstemp(prefix="slurmflow-", suffix=".sh")
            with os.fdopen(fd, "w") as f:
                f.write(render_script(spec))
            script_path = path
        return super().submit(spec, script_path)

    def _start(self, t: _Task) -> None:
        gpus = [self._free_gpus[t.node or "localhost"].pop(0) for _ in range(t.gpus)]
        env = dict(os.environ)
        env.update(
            SLURM_JOB_ID=t.raw_id,
            SLURM_JOB_NAME=t.spec.name,
            SLURM_RESTART_COUNT=str(t.restarts),
            SLURM_CPUS_PER_TASK=str(t.cpus),
            SLURMD_NODENAME="localhost",
            SLURM_JOB_GPUS=",".join(map(str, gpus)),
            CUDA_VISIBLE_DEVICES=",".join(map(str, gpus)),
        )
        if t.index is not None:
            env.update(SLURM_ARRAY_JOB_ID=t.array_job_id or t.raw_id, SLURM_ARRAY_TASK_ID=str(t.index))
        t.gpu_ids = gpus
        out_path = _expand_output(t.spec.output or "slurm-%j.out", t)
        if t.spec.chdir and not os.path.isabs(out_path):
            out_path = os.path.join(t.spec.chdir, out_path)
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "ab") as out:
            self._procs[t.job_id] = subprocess.Popen(
                ["bash", str(t.script_path)],
                cwd=t.spec.chdir or None,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _release(self, t: _Task) -> None:
        self._free_gpus[t.node or "localhost"].extend(t.gpu_ids)
        t.gpu_ids = []
        self._procs.pop(t.job_id, None)

    def _poll(self, t: _Task) -> int | None:
        proc = self._procs.get(t.job_id)
        if proc is None:
            return 1
        code = proc.poll()
        if code is None:
            return None
        self._release(t)
        return 128 - code if code < 0 else code

    def _stop(self, t: _Task) -> None:
        proc = self._procs.get(t.job_id)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=self.kill_wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()
        self._release(t)

    def advance(self, seconds: float = 0.0) -> None:
        """Move the clock to real time, reap finished processes and start what may start."""
        del seconds
        self.now = time.monotonic() - self._t0
        for t in self.tasks.values():
            limit = _limit_s(t.spec.time)
            if t.state is JobState.RUNNING and limit is not None and self.now - t.started >= limit:
                self._end(t, JobState.TIMEOUT, 0, 15)  # as sacct shows it: 0:15
                t.reason = "TimeLimit"
        self._tick()

    def drive(
        self,
        job_ids: Sequence[str],
        progress: Callable[[int, int], None] = lambda _done, _total: None,
        *,
        poll_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> list[JobInfo]:
        """Run the jobs to their end in this process (a foreground launch); `progress(done, total)`
        after each step. Returns what each task ended as."""
        ids = list(job_ids)
        while True:
            self.advance()
            jobs = self.query(ids).jobs
            done = sum(1 for j in jobs if j.state.final)
            progress(done, len(jobs))
            if done == len(jobs):
                return list(jobs)
            sleep(poll_s)


def exit_code(jobs: Sequence[JobInfo]) -> int:
    """A foreground local launch exits 1 when a task failed or ran out of time, as a script would."""
    return 1 if any(j.state in (JobState.FAILED, JobState.TIMEOUT) for j in jobs) else 0


def _limit_s(time_limit: str | None) -> float | None:
    hours = time_hours(time_limit)
    return None if hours is None else hours * 3600
