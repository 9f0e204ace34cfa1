"""An experiment's `stages:` section -> model Stages: the declared shape (schema.py) first, then
what each value means to Slurm (names, durations, sizes, options slurmflow owns).

Every refusal is one UsageError line naming the field path (`stages.train.resources.gpus`).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from slurmflow.errors import UsageError
from slurmflow.experiment import schema
from slurmflow.experiment.schema import CheckpointIn, GpuIdleIn, GpuSamplingIn, ResourcesIn, RetryIn, StageIn
from slurmflow.model import Checkpoint, GpuSampling, IdleRule, Resources, RetryPolicy, Stage, StageDep
from slurmflow.slurm import units
from slurmflow.slurm.reserved import check_extra
from slurmflow.slurm.types import DepKind

DEP_FIELDS = {
    "after_ok": DepKind.AFTER_OK,
    "after_not_ok": DepKind.AFTER_NOT_OK,
    "after_any": DepKind.AFTER_ANY,
    "after_corr": DepKind.AFTER_CORR,
}
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}\Z", re.ASCII)  # names go into job names and paths
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_.-]+\Z", re.ASCII)
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,:&|!*\[\]()-]+\Z", re.ASCII)
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z", re.ASCII)
_PHASE = r"(busy|half|idle|error)(\*\d+)?"
_FAKE_SOURCE = re.compile(rf"^fake(:(noinit|{_PHASE}(,{_PHASE})*))?\Z", re.ASCII)


def _names(value: str | list[str] | None, where: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value or [])
    for n in names:
        if not NAME.match(n):
            raise UsageError(f"{where}: {n!r} is not a stage name")
    return names


def _slurm_name(value: str, where: str, *, several: bool = False) -> str:
    # A partition may be a list (`cpu,gpu`): the job starts in whichever can run it first.
    parts = value.split(",") if several else [value]
    if not all(_SLURM_NAME.match(p) for p in parts):
        raise UsageError(f"{where}: {value!r} is not a Slurm name: use letters, digits, . _ -")
    return value


def _extra(extra: list[str], where: str, *, checkpoint: bool) -> tuple[str, ...]:
    check_extra(extra, where, checkpoint=checkpoint)  # first: `-J name` gets its reason, not the shape
    for e in extra:
        if not e.startswith("--"):
            raise UsageError(f"{where}: {e!r} is not a long sbatch option: write options such as '--nice=10'")
        if "\n" in e or "\r" in e or "\0" in e:
            raise UsageError(f"{where}: {e!r} contains a line break")
        # Each entry is one sbatch argument: '--nice 10' would reach sbatch as one unknown option.
        name = e.split("=", 1)[0]
        if re.search(r"\s", name):
            fix = "=".join(name.split(None, 1))
            raise UsageError(f"{where}: {e!r} has a space in the option name: write {fix!r}")
    return tuple(extra)


def resources(raw: ResourcesIn | None, where: str, *, checkpoint: bool = False) -> Resources:
    if raw is None:
        return Resources()
    if raw.constraint is not None and not _CONSTRAINT.match(raw.constraint):
        raise UsageError(f"{where}.constraint: {raw.constraint!r} is not a Slurm feature expression")
    return Resources(
        partition=None if raw.partition is None else _slurm_name(raw.partition, f"{where}.partition", several=True),
        account=None if raw.account is None else _slurm_name(raw.account, f"{where}.account"),
        qos=None if raw.qos is None else _slurm_name(raw.qos, f"{where}.qos"),
        gpus=raw.gpus,
        cpus=raw.cpus,
        mem=None if raw.mem is None else units.memory(raw.mem, f"{where}.mem"),
        time=None if raw.time is None else units.time_limit(raw.time, f"{where}.time"),
        constraint=raw.constraint,
        extra=_extra(raw.extra, f"{where}.extra", checkpoint=checkpoint),
    )


def retry(raw: RetryIn | None, where: str) -> RetryPolicy:
    if raw is None:
        return RetryPolicy()
    given = {
        k: getattr(raw, k)
        for k in ("infra", "exclude_failed_node", "exit_retries", "timeouts", "oom_retries", "oom_mem_factor")
        if getattr(raw, k) is not None
    }
    if raw.oom_mem_cap is not None:
        given["oom_mem_cap"] = units.memory(raw.oom_mem_cap, f"{where}.oom_mem_cap")
    if "oom_mem_factor" in given:
        given["oom_mem_factor"] = float(given["oom_mem_factor"])
    return RetryPolicy(**given, exit_codes=tuple(raw.exit_codes))


def checkpoint(raw: bool | CheckpointIn | None, where: str) -> Checkpoint | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        return Checkpoint()
    sig = raw.signal.upper().removeprefix("SIG")
    if sig not in schema.CHECKPOINT_SIGNALS:
        raise UsageError(f"{where}.signal: {raw.signal!r} is not one of {', '.join(schema.CHECKPOINT_SIGNALS)}")
    return Checkpoint(signal=sig, seconds=raw.seconds, grace=raw.grace, max_restarts=raw.max_restarts)


def gpu_sampling(raw: bool | GpuSamplingIn | None, where: str) -> GpuSampling:
    if raw is None or raw is True:
        return GpuSampling()
    if raw is False:
        return GpuSampling(enabled=False)
    out: dict[str, Any] = {"enabled": raw.enabled}
    if raw.interval is not None:
        out["interval"] = units.seconds(raw.interval, f"{where}.interval")
        if not 0.1 <= out["interval"] <= 3600:
            raise UsageError(f"{where}.interval: {raw.interval!r} must be from 0.1 s to 1 h (1 s is NVML's own window)")
    if raw.flush is not None:
        out["flush"] = units.seconds(raw.flush, f"{where}.flush")
    if raw.source is not None:
        if raw.source != "nvml" and not _FAKE_SOURCE.match(raw.source):
            raise UsageError(
                f"{where}.source: {raw.source!r} is not nvml or fake:<phases> (busy, half, idle or error, "
                "each with an optional *count: fake:busy*30,idle)"
            )
        out["source"] = raw.source
    return GpuSampling(**out)


def gpu_idle(raw: bool | GpuIdleIn | None, where: str) -> IdleRule | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        raise UsageError(f"{where}: expected a mapping such as {{below: 5, for: 10m, action: cancel}}, or false")
    out: dict[str, Any] = {"action": raw.action, "gpus": raw.gpus}
    if raw.below is not None:
        out["below"] = float(raw.below)
    if raw.for_ is not None:
        out["for_s"] = units.seconds(raw.for_, f"{where}.for")
    return IdleRule(**out)


_APP_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z", re.ASCII)


def _command(raw: StageIn, where: str) -> None:
    given = [k for k in ("command", "argv", "callable", "app") if getattr(raw, k) is not None]
    if len(given) != 1:
        which = "both " + " and ".join(given) if given else "none"
        raise UsageError(f"{where}: give exactly one of command, argv, callable or app (this stage has {which})")
    if raw.overrides is not None and raw.app is None:
        raise UsageError(f"{where}.overrides: only a Hydra app stage (app: path/to/app.py) takes overrides")
    if raw.app is not None:
        app = raw.app
        script = app.endswith(".py") or "/" in app
        if not app.strip() or "\0" in app or "\n" in app or (not script and not _APP_MODULE.match(app)):
            raise UsageError(
                f"{where}.app: {app!r} is not a Python script path (jobs/train.py) or a module (pkg.train)"
            )
        for o in raw.overrides or []:
            if not o or "\n" in o or "\0" in o:
                raise UsageError(f"{where}.overrides: {o!r} is not a Hydra override (key=value)")
    if raw.command is not None:
        if not raw.command.strip():
            raise UsageError(f"{where}.command: expected a non-empty command line")
        try:
            shlex.split(raw.command)
        except ValueError as exc:
            raise UsageError(f"{where}.command: {exc}: balance the quotes") from exc
    if raw.argv is not None and (not raw.argv or not raw.argv[0]):
        raise UsageError(f"{where}.argv: expected a list of words, the program first: [python, train.py]")
    if raw.callable is not None and not _CALLABLE.match(raw.callable):
        raise UsageError(f"{where}.callable: {raw.callable!r} is not of the form package.module:function")


def parse_stage(name: str, body: object) -> Stage:
    """One stage as the user wrote it (plain YAML data) -> a model Stage, or a one-line UsageError."""
    where = f"stages.{name}"
    if not NAME.match(name):
        raise UsageError(
            f"stages: {name!r} is not a stage name: use up to 64 letters, digits, _ and -, starting with a letter"
        )
    if not isinstance(body, dict):
        raise UsageError(f"{where}: expected a mapping with a command (or argv, or a callable)")
    raw = schema.convert(body, StageIn, where)
    _command(raw, where)
    deps = tuple(
        StageDep(kind, parent)
        for field, kind in DEP_FIELDS.items()
        for parent in _names(getattr(raw, field), f"{where}.{field}")
    )
    wants_checkpoint = raw.checkpoint not in (None, False)
    res = resources(raw.resources, f"{where}.resources", checkpoint=wants_checkpoint)
    if raw.gpu_idle not in (None, False) and not res.gpus:
        raise UsageError(f"{where}.gpu_idle: the stage asks for no GPUs: set resources.gpus or drop gpu_idle")
    return Stage(
        name=name,
        command=raw.command,
        argv=None if raw.argv is None else tuple(raw.argv),
        callable=raw.callable,
        app=raw.app,
        app_overrides=tuple(raw.overrides or ()),
        per_trial=raw.per_trial,
        deps=deps,
        singleton=raw.singleton,
        resources=res,
        max_parallel=raw.max_parallel,
        requeue=raw.requeue,
        retry=retry(raw.retry, f"{where}.retry"),
        checkpoint=checkpoint(raw.checkpoint, f"{where}.checkpoint"),
        gpu=gpu_sampling(raw.gpu_sampling, f"{where}.gpu_sampling"),
        gpu_idle=gpu_idle(raw.gpu_idle, f"{where}.gpu_idle"),
        metrics_file=metrics_file(raw.metrics_file, f"{where}.metrics_file"),
    )


def metrics_file(path: str | None, where: str) -> str | None:
    """A path inside the trial directory: relative, without '..'."""
    if path is None:
        return None
    parts = path.replace("\\", "/").split("/")
    if not path or path.startswith("/") or ".." in parts:
        raise UsageError(f"{where}: {path!r} must be a path inside the trial directory (relative, no '..')")
    return path
