"""Run a plan on this machine with Slurm's semantics: the embedded default when there is no Slurm.

The scheduling (arrays, throttles, every dependency kind, kill-on-invalid-dep, GPU and CPU slots)
is `sim.Scheduler`'s, checked against real Slurm by the contract suite; here each task is a real
process (its own session) running the same batch script, with the environment Slurm would give it.
A task's processes are all that carry its tag in their environment (SLURMFLOW_LOCAL_TASK, which
every descendant inherits, in whatever session or process group it puts itself), found through
/proc where there is one, and its process group elsewhere: the local counterpart of Slurm's
process tracking. Limits end a task as Slurm ends it: past its time limit, SIGTERM to all of
them, SIGKILL after `kill_wait` seconds, state TIMEOUT (0:15); over its `mem` (their resident
memory, as Slurm's OverMemoryKill counts it), SIGKILL, state OUT_OF_MEMORY.

A process started by an earlier engine (the supervisor of the run restarted) cannot be waited for:
the batch step writes its exit code beside the run's engine state (`exit_dir`), and it is read
from there.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from slurmflow.backends.sim import Node, Scheduler, Task
from slurmflow.slurm.sbatch import render_script
from slurmflow.slurm.types import ClusterInfo, JobInfo, JobSpec, JobState
from slurmflow.slurm.units import megabytes, time_hours

HOST = "localhost"
# How the batch step reports its exit code to whichever engine runs then (a shell line; $1 the
# script, $2 the file).
_STEP = 'bash "$1"; code=$?; printf %s "$code" > "$2.tmp" && mv "$2.tmp" "$2"; exit "$code"'


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


def visible_gpus(environ: dict[str, str] | None = None, count: Callable[[], int] = detect_gpus) -> tuple[str, ...]:
    """The GPUs this process may use, as CUDA names them: CUDA_VISIBLE_DEVICES when it is set
    (indices or UUIDs; empty: none), else every device NVML sees."""
    env = os.environ if environ is None else environ
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return tuple(d.strip() for d in listed.split(",") if d.strip())
    return tuple(str(i) for i in range(count()))


def machine_mem_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return None


def _expand_output(pattern: str, t: Task) -> str:
    # The filename patterns of man sbatch that slurmflow uses: %A array job, %a task, %j job, %x name.
    return (
        pattern.replace("%A", t.array_job_id or t.raw_id)
        .replace("%a", str(t.index if t.index is not None else 0))
        .replace("%j", t.raw_id)
        .replace("%x", t.spec.name)
    )


TAG_ENV = "SLURMFLOW_LOCAL_TASK"


def tagged_processes(prefix: str, proc: Path = Path("/proc")) -> dict[str, list[int]] | None:
    """Live processes whose environment carries a task tag starting with `prefix`, by tag; None
    where there is no /proc. (A zombie's environment reads empty: it is not counted.)"""
    if not proc.is_dir():
        return None
    needle = f"{TAG_ENV}={prefix}".encode()
    out: dict[str, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue  # ended while we looked, or not ours
        at = env.find(needle)
        if at < 0 or (at > 0 and env[at - 1] != 0):
            continue
        start = at + len(TAG_ENV) + 1
        end = env.find(b"\0", start)
        out.setdefault(env[start : end if end >= 0 else None].decode(), []).append(int(entry.name))
    return out


def rss_mb(pids: Sequence[int], proc: Path = Path("/proc")) -> int:
    """Resident memory of these processes together, in MB."""
    total_kb = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in (proc / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb // 1024


@dataclass
class LocalSlurm(Scheduler):
    """A one-node Slurm of this machine. `gpus` slots are handed out as CUDA_VISIBLE_DEVICES,
    naming `devices` (default 0..gpus-1)."""

    gpus: int = 0
    devices: tuple[str, ...] = ()
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    mem_mb: int | None = field(default_factory=lambda: machine_mem_mb())
    requeue_delay: float = 0.0
    # Seconds between SIGTERM and SIGKILL when a task is stopped (Slurm's KillWait, 30 s by default).
    kill_wait: float = 10.0
    exit_dir: Path | None = None  # where batch steps write their exit codes (a restartable engine)
    clock: Callable[[], float] = time.monotonic
    # The resident memory of running tasks is read this often (a scan of /proc).
    mem_every_s: float = 1.0
    # Tasks told to stop (SIGTERM): tag -> (when, in engine time; process group). SIGKILL once
    # kill_wait has passed and anything of them is left.
    stopping: dict[str, tuple[float, int]] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(4))  # the tags of this engine's tasks
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)  # ours, by pid
    _t0: float = 0.0
    _mem_read: float = float("-inf")
    _scan: dict[str, list[int]] | None = None
    _scanned: bool = False

    def __post_init__(self) -> None:
        if not self.devices:
            self.devices = tuple(str(i) for i in range(self.gpus))
        self.gpus = len(self.devices)
        self.nodes = [Node(HOST, ("*",), gpus=self.gpus, cpus=self.cpus)]
        self.default_partition = "local"
        self.version = "local"
        self._t0 = self.clock() - self.now
        if not self.epoch:  # history reports wall-clock times: engine time 0 was this long ago
            self.epoch = time.time() - self.now

    def cluster_info(self) -> ClusterInfo:
        return replace(super().cluster_info(), partition_gpus={"*": self.gpus}, cpus=self.cpus, mem_mb=self.mem_mb)

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        if script_path is None:
            fd, path = tempfile.mkstemp(prefix="slurmflow-", suffix=".sh")
            with os.fdopen(fd, "w") as f:
                f.write(render_script(spec))
            script_path = path
        return super().submit(spec, script_path)

    # --- processes ------------------------------------------------------------------------------

    def _free_slots(self) -> list[int]:
        used = {g for o in self.tasks.values() if o.state is JobState.RUNNING for g in o.gpu_ids}
        return [i for i in range(self.gpus) if i not in used]

    def _start(self, t: Task) -> None:
        t.gpu_ids = self._free_slots()[: t.gpus]
        names = ",".join(self.devices[i] for i in t.gpu_ids)
        env = dict(os.environ)
        env.update(
            SLURM_JOB_ID=t.raw_id,
            SLURM_JOB_NAME=t.spec.name,
            SLURM_RESTART_COUNT=str(t.restarts),
            SLURM_CPUS_PER_TASK=str(t.cpus),
            SLURMD_NODENAME=HOST,
            SLURM_JOB_GPUS=names,
            CUDA_VISIBLE_DEVICES=names,
        )
        env[TAG_ENV] = self._tag(t)
        if t.index is not None:
            env.update(SLURM_ARRAY_JOB_ID=t.array_job_id or t.raw_id, SLURM_ARRAY_TASK_ID=str(t.index))
        out_path = _expand_output(t.spec.output or "slurm-%j.out", t)
        if t.spec.chdir and not os.path.isabs(out_path):
            out_path = os.path.join(t.spec.chdir, out_path)
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        argv = ["bash", str(t.script_path)]
        if self.exit_dir is not None:
            self.exit_dir.mkdir(parents=True, exist_ok=True)
            exit_file = self._exit_file(t)
            exit_file.unlink(missing_ok=True)
            argv = ["bash", "-c", _STEP, "slurmflow-step", str(t.script_path), str(exit_file)]
        with open(out_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=t.spec.chdir or None,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[proc.pid] = proc
        t.pid = proc.pid

    def _exit_file(self, t: Task) -> Path:
        assert self.exit_dir is not None
        return self.exit_dir / f"{t.job_id}.{t.restarts}"

    def _tag(self, t: Task) -> str:
        return f"{self.token}:{t.job_id}:{t.restarts}"

    def _members(self) -> dict[str, list[int]] | None:
        """This engine's tasks' processes, by tag: one /proc scan per step, only when asked for."""
        if not self._scanned:
            self._scan, self._scanned = tagged_processes(f"{self.token}:"), True
        return self._scan

    def _alive(self, tag: str, pgid: int) -> bool:
        members = self._members()
        return bool(members.get(tag)) if members is not None else _group_alive(pgid)

    def _signal(self, tag: str, pgid: int, sig: int) -> None:
        _signal_group(pgid, sig)
        for pid in (self._members() or {}).get(tag, []):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _poll(self, t: Task) -> int | None:
        proc = self.procs.get(t.pid) if t.pid is not None else None
        if proc is not None:
            code = proc.poll()
            if code is None:
                return None
            self.procs.pop(proc.pid, None)
            t.pid = None
            return 128 - code if code < 0 else code
        # Started by an earlier engine: the step's exit file, or it is gone without one.
        if t.pid is not None and _group_alive(t.pid):
            return None
        t.pid = None
        if self.exit_dir is not None:
            with contextlib.suppress(OSError, ValueError):
                return int(self._exit_file(t).read_text())
        return 1

    def _stop(self, t: Task) -> None:
        """SIGTERM to every process of the task now; SIGKILL after kill_wait (Slurm's KillWait) to
        whatever is left (`_reap`). Never waits: a stop is as quick as scancel."""
        if t.pid is None:
            return
        tag = self._tag(t)
        self._signal(tag, t.pid, 15)
        self.stopping[tag] = (self.now, t.pid)
        t.pid = None

    def _reap(self) -> None:
        for tag, (since, pgid) in list(self.stopping.items()):
            proc = self.procs.get(pgid)
            if proc is not None and proc.poll() is not None:
                del self.procs[pgid]
            if not self._alive(tag, pgid):
                del self.stopping[tag]
            elif self.now - since >= self.kill_wait:
                self._signal(tag, pgid, 9)

    def _limits(self) -> None:
        read_mem = self.now - self._mem_read >= self.mem_every_s
        if read_mem:
            self._mem_read = self.now
        for t in self.tasks.values():
            if t.state is not JobState.RUNNING:
                continue
            limit = _limit_s(t.spec.time)
            if limit is not None and self.now - t.started >= limit:
                self._end(t, JobState.TIMEOUT, 0, 15)  # as sacct shows it: 0:15
                t.reason = "TimeLimit"
            elif read_mem and t.spec.mem and t.pid is not None:
                members = self._members()
                if members is not None and rss_mb(members.get(self._tag(t), [])) > megabytes(t.spec.mem):
                    self._end(t, JobState.OUT_OF_MEMORY, 0, 9)
                    t.reason = "OutOfMemory"

    def advance(self, seconds: float = 0.0) -> None:
        """Move the clock to real time, end tasks past their limits, reap finished processes and
        start what may start."""
        del seconds
        self.now = self.clock() - self._t0
        self._scanned = False  # processes are looked up afresh each step
        self._limits()
        self._tick()
        self._scanned = False  # a task stopped in this step is looked for after its signal
        self._reap()

    @property
    def busy(self) -> bool:
        """Something is left to do: a task not final, or a process group still being stopped."""
        return bool(self.stopping) or any(not t.state.final for t in self.tasks.values())


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_code(jobs: Sequence[JobInfo]) -> int:
    """A foreground local launch exits 1 when a task failed, ran out of time or of memory."""
    bad = (JobState.FAILED, JobState.TIMEOUT, JobState.OUT_OF_MEMORY)
    return 1 if any(j.state in bad for j in jobs) else 0


def _limit_s(time_limit: str | None) -> float | None:
    hours = time_hours(time_limit)
    return None if hours is None else hours * 3600
