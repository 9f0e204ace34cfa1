"""The in-job GPU sampler: NVML readings of the task's own GPUs, appended to its trial directory.

The task wrapper starts a `Sampler` thread when its stage has GPUs. It holds one `nvmlInit()` for
its whole life (SLURM_NOTES: one NVML query costs ~0.1 ms, an nvidia-smi process ~14 ms), reads
every allocated GPU once per interval (NVML averages utilisation over up to 1 s, so faster adds
nothing), and flushes its file every few seconds so a killed job keeps its data. It never takes
the job down: any failure is written into the file as the reason it stopped.

NVML sees every GPU of the node and ignores CUDA_VISIBLE_DEVICES, so the allocated GPUs are mapped
explicitly (`select_gpus`). Readings come from a `Source`: NVML, or a scripted fake for tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from slurmflow.gpu import stats as gpustats
from slurmflow.gpu.stats import Reading
from slurmflow.model import GpuSampling, IdleRule

MIB = 1024 * 1024
PROCS_EVERY = 10  # samples between two process listings
MAX_READ_ERRORS = 5  # consecutive failed readings (a GPU fell off the bus) before the sampler stops


class SourceUnavailable(Exception):
    """No GPU readings on this node: why, in one line."""


@dataclass(frozen=True)
class GpuIdentity:
    index: int  # NVML's index on this node
    uuid: str
    name: str = ""
    minor: int | None = None  # N of /dev/nvidiaN: what Slurm's gres index counts on a File=/dev/nvidia[0-N] node
    mem_total_mib: int = 0
    pci: str | None = None


class Source(Protocol):
    def inventory(self) -> list[GpuIdentity]: ...

    def read(self, indices: Sequence[int]) -> list[Reading]: ...

    def processes(self, index: int) -> dict[int, int]: ...

    def close(self) -> None: ...


_UUID = re.compile(r"^(GPU|MIG)-", re.IGNORECASE)


def select_gpus(env: Mapping[str, str], inventory: Sequence[GpuIdentity]) -> tuple[list[GpuIdentity], str]:
    """The task's allocated GPUs among the node's, and how they were found. In order:
    SLURMFLOW_GPU_UUIDS; UUIDs in CUDA_VISIBLE_DEVICES; SLURM_JOB_GPUS (Slurm's gres indices,
    matched to /dev/nvidiaN minor numbers, which stay right when cgroups renumber
    CUDA_VISIBLE_DEVICES from 0); plain CUDA_VISIBLE_DEVICES indices last."""

    def by_uuid(ids: Sequence[str]) -> list[GpuIdentity]:
        out = []
        for want in ids:
            found = [g for g in inventory if g.uuid.lower().startswith(want.lower())]
            out.extend(found[:1])
        return out

    def words(name: str) -> list[str]:
        return [w.strip() for w in env.get(name, "").split(",") if w.strip()]

    if words("SLURMFLOW_GPU_UUIDS"):
        return by_uuid(words("SLURMFLOW_GPU_UUIDS")), "SLURMFLOW_GPU_UUIDS"
    cuda = words("CUDA_VISIBLE_DEVICES")
    if cuda and all(_UUID.match(w) for w in cuda):
        return by_uuid(cuda), "CUDA_VISIBLE_DEVICES (UUIDs)"
    for name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        ids = words(name)
        if ids and all(w.isdigit() for w in ids):
            minors = {g.minor: g for g in inventory if g.minor is not None}
            if len(minors) == len(inventory):
                return [minors[int(w)] for w in ids if int(w) in minors], f"{name} (device minor numbers)"
            return [inventory[int(w)] for w in ids if int(w) < len(inventory)], f"{name} (NVML indices)"
    if cuda and all(w.isdigit() for w in cuda):
        return [inventory[int(w)] for w in cuda if int(w) < len(inventory)], "CUDA_VISIBLE_DEVICES (indices)"
    return [], "no GPUs allocated (CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS are unset)"


class NvmlSource:
    """Readings from NVML (package nvidia-ml-py, module pynvml); one nvmlInit for its life."""

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise SourceUnavailable(f"nvidia-ml-py is not installed ({exc})") from exc
        self.nv: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise SourceUnavailable(f"NVML did not start: {exc}") from exc
        self._handles: dict[int, Any] = {}

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self.nv.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    def _optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nv.NVMLError:  # NOT_SUPPORTED on some boards (power on older GPUs, MIG)
            return None

    def inventory(self) -> list[GpuIdentity]:
        out = []
        for i in range(self.nv.nvmlDeviceGetCount()):
            try:
                h = self._handle(i)
            except self.nv.NVMLError:  # a GPU this job's cgroup hides: not ours anyway
                continue
            uuid = self.nv.nvmlDeviceGetUUID(h)
            name = self.nv.nvmlDeviceGetName(h)
            pci_info = self._optional(self.nv.nvmlDeviceGetPciInfo, h)
            pci = None if pci_info is None else pci_info.busId
            out.append(
                GpuIdentity(
                    index=i,
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    minor=self._optional(self.nv.nvmlDeviceGetMinorNumber, h),
                    mem_total_mib=int(self.nv.nvmlDeviceGetMemoryInfo(h).total // MIB),
                    pci=pci.decode() if isinstance(pci, bytes) else pci,
                )
            )
        return out

    def read(self, indices: Sequence[int]) -> list[Reading]:
        out = []
        for i in indices:
            h = self._handle(i)
            power = self._optional(self.nv.nvmlDeviceGetPowerUsage, h)
            temp = self._optional(self.nv.nvmlDeviceGetTemperature, h, self.nv.NVML_TEMPERATURE_GPU)
            out.append(
                Reading(
                    util=int(self.nv.nvmlDeviceGetUtilizationRates(h).gpu),
                    mem_mib=int(self.nv.nvmlDeviceGetMemoryInfo(h).used // MIB),
                    power_w=None if power is None else int(power) // 1000,  # NVML reports milliwatts
                    temp_c=None if temp is None else int(temp),
                )
            )
        return out

    def processes(self, index: int) -> dict[int, int]:
        procs = self._optional(self.nv.nvmlDeviceGetComputeRunningProcesses, self._handle(index)) or []
        return {int(p.pid): int(p.usedGpuMemory or 0) // MIB for p in procs}

    def close(self) -> None:
        with contextlib.suppress(self.nv.NVMLError):
            self.nv.nvmlShutdown()


_FAKE_LEVELS = {"busy": (90, 0.6), "half": (45, 0.3), "idle": (0, 0.02)}


class FakeSource:
    """A scripted node of four GPUs: `fake:busy*30,idle` is 30 busy readings then idle for good.
    Phases: busy (90-99 %), half (45-54 %), idle (0-2 %), error (the reading fails); the last phase
    lasts forever. `fake:noinit` fails to start, as NVML does on a node without a driver."""

    GPUS = 4
    TOTAL_MIB = 16384

    def __init__(self, pattern: str, host: str = "node") -> None:
        spec = pattern.removeprefix("fake").removeprefix(":") or "busy"
        if spec == "noinit":
            raise SourceUnavailable("NVML did not start: Driver Not Loaded (scripted by fake:noinit)")
        self.phases: list[tuple[str, int | None]] = []
        for part in spec.split(","):
            name, _, count = part.partition("*")
            if name not in (*_FAKE_LEVELS, "error"):
                raise ValueError(f"fake GPU phase {name!r} is not one of busy, half, idle, error")
            self.phases.append((name, int(count) if count else None))
        self.host = host
        self.step = 0
        self.last = self.phases[0][0]  # the phase of the latest reading

    def phase(self) -> str:
        left = self.step
        for name, count in self.phases:
            if count is None or left < count:
                return name
            left -= count
        return self.phases[-1][0]

    def inventory(self) -> list[GpuIdentity]:
        return [
            GpuIdentity(i, f"GPU-fake-{self.host}-{i}", "Fake GPU", minor=i, mem_total_mib=self.TOTAL_MIB)
            for i in range(self.GPUS)
        ]

    def read(self, indices: Sequence[int]) -> list[Reading]:
        name = self.last = self.phase()
        self.step += 1
        if name == "error":
            raise RuntimeError("GPU is lost (scripted by the fake source)")
        util, mem = _FAKE_LEVELS[name]
        jitter = (self.step * 7) % 10 if name != "idle" else self.step % 3
        return [Reading(util + jitter, int(self.TOTAL_MIB * mem) + i, 70 + util * 3, 40 + util // 3) for i in indices]

    def processes(self, index: int) -> dict[int, int]:
        return {} if self.last == "idle" else {1000 + index: int(self.TOTAL_MIB * 0.5)}

    def close(self) -> None:
        pass


def make_source(spec: str, host: str) -> Source:
    if spec.startswith("fake"):
        return FakeSource(spec, host)
    return NvmlSource()


class Sampler:
    """A daemon thread sampling the task's GPUs into `path`. `on_idle(why)` is called once when the
    stage's idle rule fires. `stopped` says why sampling ended early, if it did."""

    def __init__(
        self,
        path: Path,
        settings: GpuSampling,
        *,
        env: Mapping[str, str],
        meta: Mapping[str, Any],
        idle: IdleRule | None = None,
        on_idle: Callable[[str], None] | None = None,
        source_factory: Callable[[str, str], Source] = make_source,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path, self.settings, self.env, self.meta = path, settings, env, dict(meta)
        self.idle, self.on_idle = idle, on_idle
        self.source_factory, self.clock = source_factory, clock
        self.stopped: str | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slurmflow-gpu-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._sample()
        except BaseException as exc:  # the job matters more than its GPU statistics
            self.stopped = f"sampler error: {type(exc).__name__}: {exc}"
            try:
                with open(self.path, "a") as out:
                    out.write(gpustats.stop_line(0.0, self.stopped))
            except OSError:
                pass

    def _sample(self) -> None:
        t0 = self.clock()
        host = str(self.meta.get("host", "node"))
        head: dict[str, Any] = {**self.meta, "t0": round(t0, 3), "interval": self.settings.interval}
        head["source"] = self.settings.source
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as out:
            try:
                source = self.source_factory(self.settings.source, host)
                gpus, how = select_gpus(self.env, source.inventory())
            except (SourceUnavailable, ValueError) as exc:
                self.stopped = str(exc)
                out.write(gpustats.header_line({**head, "gpus": []}) + gpustats.stop_line(0.0, self.stopped))
                return
            head.update(mapped_by=how, gpus=[{"slot": n, **asdict(g)} for n, g in enumerate(gpus)])
            out.write(gpustats.header_line(head))
            if not gpus:
                self.stopped = how
                out.write(gpustats.stop_line(0.0, how))
                return
            out.flush()
            try:
                self._loop(out, source, gpus, t0)
            finally:
                source.close()

    def _loop(self, out: Any, source: Source, gpus: Sequence[GpuIdentity], t0: float) -> None:
        indices = [g.index for g in gpus]
        detector = gpustats.IdleDetector(self.idle) if self.idle else None
        procs: dict[int, dict[int, int]] = {}
        errors, last_flush, tick = 0, t0, 0
        while not self._stop.is_set():
            now = self.clock()
            dt = now - t0
            try:
                readings = source.read(indices)
                errors = 0
            except Exception as exc:
                errors += 1
                if errors >= MAX_READ_ERRORS:
                    self.stopped = f"{errors} readings in a row failed, last: {exc}"
                    out.write(gpustats.stop_line(dt, self.stopped))
                    return
                readings = []
            if readings:
                self.samples += 1
                out.write(gpustats.sample_lines(dt, readings))
                # Processes change rarely and cost an NVML call per GPU: every PROCS_EVERY samples.
                for slot, index in enumerate(indices if (self.samples - 1) % PROCS_EVERY == 0 else ()):
                    now_procs = source.processes(index)
                    if now_procs != procs.get(slot):
                        procs[slot] = now_procs
                        out.write(gpustats.procs_line(dt, slot, now_procs))
                if detector and detector.feed(now, [r.util for r in readings]) and self.on_idle and self.idle:
                    self.on_idle(self._idle_why(self.idle))
            if now - last_flush >= self.settings.flush:
                out.flush()
                last_flush = now
            tick += 1
            # Keep to the grid t0 + k*interval: no drift however long the reading took.
            self._stop.wait(max(0.0, t0 + tick * self.settings.interval - self.clock()))
        out.flush()

    @staticmethod
    def _idle_why(rule: IdleRule) -> str:
        which = "the task's GPUs all" if rule.gpus == "all" else "one of the task's GPUs"
        return f"{which} stayed below {rule.below:g}% utilisation for {_human(rule.for_s)}"


def _human(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def note(message: str) -> None:
    print(f"slurmflow task: {message}", file=sys.stderr, flush=True)
