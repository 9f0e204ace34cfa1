"""The only module that composes Hydra configs: experiments in, validated model types out.

A launch composes the experiment ONCE (with the non-sweep overrides), parses sweep overrides
with Hydra's own grammar (`a,b`, `range()`, `choice()`, `glob()`), and composes one
representative per distinct config-group choice to validate the sweep. Each task composes its
own trial config in the job, from a snapshot of the config directory (about 95 ms a compose:
10,000 trials composed at plan time would take 16 minutes).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, QuotedString, Transformer, ValueType
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from slurmflow.errors import UsageError
from slurmflow.model import Checkpoint, DepKind, GpuSampling, IdleRule, Resources, RetryPolicy, Stage, StageDep
from slurmflow.reserved import check_extra
from slurmflow.sweep import Axis
from slurmflow.trialcfg import command_argv

DEP_FIELDS = {
    "after_ok": DepKind.AFTER_OK,
    "after_not_ok": DepKind.AFTER_NOT_OK,
    "after_any": DepKind.AFTER_ANY,
    "after_corr": DepKind.AFTER_CORR,
}
STAGE_FIELDS = {
    "command",
    "callable",
    "per_trial",
    "singleton",
    "resources",
    "max_parallel",
    "requeue",
    "retry",
    "checkpoint",
    "gpu_sampling",
    "gpu_idle",
    *DEP_FIELDS,
}
RETRY_FIELDS = {
    "infra",
    "exclude_failed_node",
    "exit_codes",
    "exit_retries",
    "timeouts",
    "oom_mem_factor",
    "oom_mem_cap",
    "oom_retries",
}
RESOURCE_FIELDS = {"partition", "account", "qos", "gpus", "cpus", "mem", "time", "constraint", "extra"}
_STAGE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,:&|!*\[\]()-]+$")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_HUMAN_TIME = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day)s?$", re.IGNORECASE)
# Characters a shell would act on. slurmflow never runs a shell, but a value carrying these is a
# mistake or an attack; it is refused before anything is written or submitted.
_SHELL = re.compile(r"[;&|`$<>\n\r\0]|\$\(")


@dataclass(frozen=True)
class Experiment:
    """A composed, validated experiment."""

    name: str
    config_dir: Path
    config_name: str
    base_overrides: tuple[str, ...]
    axes: tuple[Axis, ...]
    stages: Mapping[str, Stage]
    config: Any  # the base DictConfig (sweep keys at their defaults)


def _human_seconds(m: re.Match[str]) -> float:
    """Seconds in a _HUMAN_TIME match: '90s', '30m', '1.5h', '1d'."""
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)[0].lower()]


def slurm_time(value: object, where: str) -> str:
    """'30m' -> '00:30:00', '2h' -> '02:00:00', '1d' -> '1-00:00:00'; Slurm's own forms pass through."""
    text = str(value).strip()
    if _SLURM_TIME.match(text):
        return text
    m = _HUMAN_TIME.match(text)
    if not m:
        raise UsageError(f"{where}: time limit {text!r} is not valid: write 30m, 2h, 1d or Slurm's H:MM:SS")
    seconds = int(_human_seconds(m))
    if seconds <= 0:
        raise UsageError(f"{where}: time limit {text!r} must be positive")
    days, rest = divmod(seconds, 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def seconds(value: object, where: str) -> float:
    """A duration in seconds: a number of seconds, '90s', '30m', '2h', '1d' or Slurm's H:MM:SS."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise UsageError(f"{where}: {value!r} must be a positive number of seconds")
        return float(value)
    text = str(value).strip()
    m = _HUMAN_TIME.match(text)
    if m:
        out = _human_seconds(m)
    elif _SLURM_TIME.match(text) and ":" in text:
        out = (Resources(time=text).hours() or 0.0) * 3600
    else:
        raise UsageError(f"{where}: {text!r} is not a duration: write 30s, 10m, 2h or a number of seconds")
    if out <= 0:
        raise UsageError(f"{where}: {text!r} must be positive")
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    try:
        return list(OverridesParser.create().parse_overrides(list(overrides)))
    except HydraException as exc:
        raise UsageError(f"override syntax: {_one_line(exc)}") from exc


def _check_shell(value: str, where: str) -> None:
    if _SHELL.search(value):
        raise UsageError(
            f"{where}: {value!r} contains shell control characters; slurmflow passes values as single "
            "arguments, never through a shell: remove them"
        )


def _axis(ov: Override, config_dir: Path) -> Axis:
    key = ov.key_or_group
    group_dir = config_dir / key.replace(".", "/")
    group = group_dir.is_dir()
    if not ov.is_sweep_override():  # a sweep block entry with one value
        value = ov.get_value_element_as_str()
        _check_shell(value, f"sweep {key}")
        return Axis(key, (value,), group, None if group else (_plain(ov.value()),))
    if ov.value_type == ValueType.INTERVAL_SWEEP:
        raise UsageError(f"sweep {key}: interval() needs an optimising sweeper; list values or use range()")
    if ov.value_type == ValueType.GLOB_CHOICE_SWEEP:
        if not group:
            raise UsageError(f"sweep {key}: glob() selects config-group options, and {key} is not a config group")
        options = sorted(p.stem for p in group_dir.glob("*.yaml"))
        glob = ov.value()
        assert isinstance(glob, Glob)
        values = list(glob.filter(options))
        typed = None
    else:
        # One pass (a shuffle() sweep must give the strings and the typed values in one order):
        # the strings go into trials' overrides, the values as Hydra types them (0.3, 'a b', [1, 2])
        # are what the job sets (trialcfg.py).
        elements = list(ov.sweep_iterator())
        values = [Transformer.str(e) for e in elements]
        typed = None if group else tuple(_plain(e) for e in elements)
    if not values:
        raise UsageError(f"sweep {key}: yields no values; give at least one")
    for v in values:
        _check_shell(v, f"sweep {key}")
    return Axis(key, tuple(values), group, typed)


def _plain(value: Any) -> Any:
    """A parsed override value as Hydra applies it: quoted strings become their text."""
    if isinstance(value, QuotedString):
        return value.text
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _compose(config_dir: Path, config_name: str, overrides: Sequence[str]) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None, job_name="slurmflow"):
            return compose(config_name=config_name, overrides=list(overrides))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(
            f"malformed YAML in {config_dir}{where}: {getattr(exc, 'problem', exc)}; fix the file"
        ) from exc
    except (HydraException, OmegaConfBaseException) as exc:
        msg = _one_line(exc)
        cause = exc.__cause__
        if isinstance(cause, yaml.YAMLError):
            raise UsageError(f"malformed YAML: {_one_line(cause)}; fix the file") from exc
        if "not in struct" in str(exc) or "Could not override" in msg:
            key = re.search(r"Could not override '([^']+)'", msg)
            name = key.group(1) if key else msg
            # The missing key may sit inside the value: `a={b: 1}` where a has no b.
            inner: BaseException | None = exc
            while inner is not None:
                full = getattr(inner, "full_key", None)
                name = full if full and full.startswith(name + ".") else name
                inner = inner.__cause__
            raise UsageError(
                f"override {name}: no such key in the config; fix the name, or add it with +{name}=..."
            ) from exc
        if "Cannot find primary config" in msg:
            raise UsageError(
                f"config {config_name!r} not found in {config_dir}: check -cd/--config-dir and -cn/--config-name"
            ) from exc
        raise UsageError(f"config: {msg}") from exc


def _as_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f"{where}: expected a stage name or a list of stage names")


def _fields(raw: object, where: str, known: set[str], expected: str) -> dict[str, Any]:
    """A config section as a dict of known fields, or a one-line error naming the field."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected {expected}")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UsageError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return raw


def _whole(value: object, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{where}: {value!r} must be a whole number from {low} to {high}")
    return value


def _resources(raw: object, where: str, *, checkpoint: bool = False) -> Resources:
    if raw is None:
        return Resources()
    raw = _fields(raw, where, RESOURCE_FIELDS, "a mapping of partition, gpus, cpus, mem, time, ...")
    out: dict[str, Any] = {}
    for key in ("partition", "account", "qos"):
        if raw.get(key) is not None:
            value = str(raw[key])
            _check_shell(value, f"{where}.{key}")
            # A partition may be a list (`cpu,gpu`): the job starts in whichever can run it first.
            names = value.split(",") if key == "partition" else [value]
            if not all(_SLURM_NAME.match(n) for n in names):
                raise UsageError(f"{where}.{key}: {value!r} is not a Slurm name: use letters, digits, . _ -")
            out[key] = value
    if raw.get("constraint") is not None:
        value = str(raw["constraint"])
        _check_shell(value, f"{where}.constraint")
        if not _CONSTRAINT.match(value):
            raise UsageError(f"{where}.constraint: {value!r} is not a Slurm feature expression")
        out["constraint"] = value
    for key in ("gpus", "cpus"):
        if raw.get(key) is not None:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"{where}.{key}: {value!r} must be a whole number >= 0")
            out[key] = value
    if raw.get("mem") is not None:
        mem = str(raw["mem"])
        if not _MEM.match(mem):
            raise UsageError(f"{where}.mem: {mem!r} is not a size: write 4G, 512M or 1T")
        out["mem"] = mem
    if raw.get("time") is not None:
        out["time"] = slurm_time(raw["time"], f"{where}.time")
    extra = raw.get("extra") or []
    if isinstance(extra, list):  # before the shape check: `-J name` gets the reason, not the shape
        check_extra(extra, f"{where}.extra", checkpoint=checkpoint)
    if not isinstance(extra, list) or not all(isinstance(e, str) and e.startswith("--") for e in extra):
        raise UsageError(f"{where}.extra: expected a list of sbatch options such as ['--nice=10']")
    for e in extra:
        if "\n" in e or "\0" in e:
            raise UsageError(f"{where}.extra: {e!r} contains a line break")
        # Each entry is one sbatch argument: '--nice 10' would reach sbatch as one unknown option.
        name = e.split("=", 1)[0]
        if re.search(r"\s", name):
            fix = "=".join(name.split(None, 1))
            raise UsageError(f"{where}.extra: {e!r} has a space in the option name: write {fix!r}")
    out["extra"] = tuple(extra)
    return Resources(**out)


def _retry(raw: object, where: str) -> RetryPolicy:
    if raw is None:
        return RetryPolicy()
    raw = _fields(raw, where, RETRY_FIELDS, f"a mapping of {', '.join(sorted(RETRY_FIELDS))}")
    out: dict[str, Any] = {}
    if raw.get("oom_mem_factor") is not None:
        factor = raw["oom_mem_factor"]
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 1 < factor <= 16:
            raise UsageError(f"{where}.oom_mem_factor: {factor!r} must be a number above 1 (at most 16)")
        out["oom_mem_factor"] = float(factor)
    if raw.get("oom_mem_cap") is not None:
        cap = str(raw["oom_mem_cap"])
        if not _MEM.match(cap):
            raise UsageError(f"{where}.oom_mem_cap: {cap!r} is not a size: write 64G or 512M")
        out["oom_mem_cap"] = cap
    for key in ("infra", "exit_retries", "timeouts", "oom_retries"):
        if key in raw:
            out[key] = _whole(raw[key], f"{where}.{key}", 0, 100)
    if "exclude_failed_node" in raw:
        out["exclude_failed_node"] = bool(raw["exclude_failed_node"])
    codes = raw.get("exit_codes", [])
    if not isinstance(codes, list) or not all(isinstance(c, int) and 1 <= c <= 255 for c in codes):
        raise UsageError(f"{where}.exit_codes: expected a list of exit codes from 1 to 255")
    out["exit_codes"] = tuple(codes)
    return RetryPolicy(**out)


CHECKPOINT_FIELDS = {"signal", "seconds", "grace", "max_restarts"}
CHECKPOINT_SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP")


def _checkpoint(raw: object, where: str) -> Checkpoint | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        return Checkpoint()
    raw = _fields(raw, where, CHECKPOINT_FIELDS, f"true or a mapping of {', '.join(sorted(CHECKPOINT_FIELDS))}")
    sig = str(raw.get("signal", "USR1")).upper().removeprefix("SIG")
    if sig not in CHECKPOINT_SIGNALS:
        raise UsageError(f"{where}.signal: {sig!r} is not one of {', '.join(CHECKPOINT_SIGNALS)}")
    out: dict[str, Any] = {"signal": sig}
    for key, top in (("seconds", 65535), ("grace", 3600), ("max_restarts", 100)):
        if key in raw:
            out[key] = _whole(raw[key], f"{where}.{key}", 0, top)
    return Checkpoint(**out)


GPU_SAMPLING_FIELDS = {"enabled", "interval", "flush", "source"}
IDLE_FIELDS = {"below", "for", "action", "gpus"}
_PHASE = r"(busy|half|idle|error)(\*\d+)?"
_FAKE_SOURCE = re.compile(rf"^fake(:(noinit|{_PHASE}(,{_PHASE})*))?$")


def _gpu_sampling(raw: object, where: str) -> GpuSampling:
    if raw is None or raw is True:
        return GpuSampling()
    if raw is False:
        return GpuSampling(enabled=False)
    raw = _fields(
        raw, where, GPU_SAMPLING_FIELDS, f"true, false or a mapping of {', '.join(sorted(GPU_SAMPLING_FIELDS))}"
    )
    out: dict[str, Any] = {"enabled": bool(raw.get("enabled", True))}
    if "interval" in raw:
        out["interval"] = seconds(raw["interval"], f"{where}.interval")
        if not 0.1 <= out["interval"] <= 3600:
            raise UsageError(
                f"{where}.interval: {raw['interval']!r} must be from 0.1 s to 1 h (1 s is NVML's own window)"
            )
    if "flush" in raw:
        out["flush"] = seconds(raw["flush"], f"{where}.flush")
    if "source" in raw:
        source = str(raw["source"])
        if source != "nvml" and not _FAKE_SOURCE.match(source):
            raise UsageError(
                f"{where}.source: {source!r} is not nvml or fake:<phases> (busy, half, idle or error, "
                "each with an optional *count: fake:busy*30,idle)"
            )
        out["source"] = source
    return GpuSampling(**out)


def _gpu_idle(raw: object, where: str) -> IdleRule | None:
    if raw is None or raw is False:
        return None
    raw = _fields(raw, where, IDLE_FIELDS, f"a mapping of {', '.join(sorted(IDLE_FIELDS))}")
    out: dict[str, Any] = {}
    if "below" in raw:
        below = raw["below"]
        if not isinstance(below, (int, float)) or isinstance(below, bool) or not 0 < below <= 100:
            raise UsageError(f"{where}.below: {below!r} must be a utilisation percentage above 0, at most 100")
        out["below"] = float(below)
    if "for" in raw:
        out["for_s"] = seconds(raw["for"], f"{where}.for")
    action = str(raw.get("action", "warn"))
    if action not in ("warn", "cancel"):
        raise UsageError(f"{where}.action: {action!r} must be warn or cancel")
    gpus = str(raw.get("gpus", "all"))
    if gpus not in ("all", "any"):
        raise UsageError(f"{where}.gpus: {gpus!r} must be all (the task's GPUs all idle) or any (one idle)")
    return IdleRule(**out, action=action, gpus=gpus)


def parse_stage(name: str, raw: object) -> Stage:
    where = f"stages.{name}"
    if not _STAGE_NAME.match(name):
        raise UsageError(f"{where}: stage names use letters, digits, _ and -, starting with a letter")
    raw = _fields(raw, where, STAGE_FIELDS, "a mapping with a command (or a callable)")
    command, func = raw.get("command"), raw.get("callable")
    if (command is None) == (func is None):
        raise UsageError(f"{where}: give exactly one of command or callable")
    if command is not None:
        if not isinstance(command, str) or not command.strip():
            raise UsageError(f"{where}.command: expected a non-empty command line")
        try:
            shlex.split(command)
        except ValueError as exc:
            raise UsageError(f"{where}.command: {exc}: balance the quotes") from exc
    if func is not None and (not isinstance(func, str) or not _CALLABLE.match(func)):
        raise UsageError(f"{where}.callable: {func!r} is not of the form package.module:function")
    deps = tuple(
        StageDep(kind, parent)
        for field, kind in DEP_FIELDS.items()
        for parent in _as_list(raw.get(field), f"{where}.{field}")
    )
    max_parallel = raw.get("max_parallel")
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise UsageError(f"{where}.max_parallel: {max_parallel!r} must be a whole number >= 1")
    checkpoint = raw.get("checkpoint") not in (None, False)
    resources = _resources(raw.get("resources"), f"{where}.resources", checkpoint=checkpoint)
    if raw.get("gpu_idle") and not resources.gpus:
        raise UsageError(f"{where}.gpu_idle: the stage asks for no GPUs: set resources.gpus or drop gpu_idle")
    return Stage(
        name=name,
        command=command,
        callable=func,
        per_trial=bool(raw.get("per_trial", False)),
        deps=deps,
        singleton=bool(raw.get("singleton", False)),
        resources=resources,
        max_parallel=max_parallel,
        requeue=raw.get("requeue"),
        retry=_retry(raw.get("retry"), f"{where}.retry"),
        checkpoint=_checkpoint(raw.get("checkpoint"), f"{where}.checkpoint"),
        gpu=_gpu_sampling(raw.get("gpu_sampling"), f"{where}.gpu_sampling"),
        gpu_idle=_gpu_idle(raw.get("gpu_idle"), f"{where}.gpu_idle"),
    )


def load(config_dir: Path, config_name: str, overrides: Sequence[str]) -> Experiment:
    """Compose, split sweeps off, validate. Raises UsageError with a one-line message."""
    config_dir = config_dir.resolve()
    if not config_dir.is_dir():
        raise UsageError(f"config directory {config_dir} does not exist: pass -cd/--config-dir")
    parsed = parse_overrides(overrides)
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    for o in parsed:
        if not o.is_sweep_override():
            _check_shell(o.get_value_element_as_str(), f"override {o.key_or_group}")
    cfg = _compose(config_dir, config_name, [b for b in base if b is not None])
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)

    # The config's own sweep block, then the command line: a key given on the command line
    # (swept or fixed) replaces the config's sweep of that key, as in Hydra's --multirun.
    cli_keys = {o.key_or_group for o in parsed}
    sweep_block = raw.get("sweep") or {}
    if not isinstance(sweep_block, dict):
        raise UsageError("sweep: expected a mapping of key: values (e.g. model.lr: 1e-3,3e-4)")
    block_lines = []
    for key, value in sweep_block.items():
        if key in cli_keys:
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        block_lines.append(f"{key}={text}")
    sweeps = parse_overrides(block_lines) + [o for o in parsed if o.is_sweep_override()]
    axes = tuple(_axis(o, config_dir) for o in sweeps)

    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise UsageError("stages: the experiment defines no stages; add at least one under stages:")
    stages = {name: parse_stage(str(name), body) for name, body in stages_raw.items()}
    name = str(raw.get("name") or config_name)
    if not _STAGE_NAME.match(name):
        raise UsageError(f"name: {name!r} must use letters, digits, _ and -, starting with a letter")
    return Experiment(name, config_dir, config_name, tuple(b for b in base if b), axes, stages, cfg)


def validate_trials(exp: Experiment, representatives: Sequence[Sequence[str]]) -> None:
    """Compose one representative trial per distinct config-group choice and resolve every stage
    command in it: an unknown sweep key or a broken interpolation fails here, before submission."""
    group_keys = {a.key for a in exp.axes if a.group}
    for overrides in representatives:
        if any(o.split("=", 1)[0].lstrip("+~") in group_keys for o in overrides):
            cfg = _compose(exp.config_dir, exp.config_name, [*exp.base_overrides, *overrides])
        else:
            # Only values change: set them on the config composed at load (a compose costs ~0.1 s).
            cfg = _with_values(exp.config, overrides)
        for stage in exp.stages.values():
            if stage.command:
                try:
                    command_argv(stage.command, cfg)
                except UsageError as exc:
                    raise UsageError(f"stages.{stage.name}.command: {exc}") from exc


_ABSENT = object()


def _with_values(base: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The base config with `key=value` overrides applied, checked as Hydra would: a key must exist
    unless added with `+`; values are parsed by Hydra's grammar."""
    cfg = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    assert isinstance(cfg, DictConfig)
    for ov in parse_overrides(overrides):
        key = ov.key_or_group
        if not ov.is_add() and OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            raise UsageError(f"sweep {key}: no such key in the config; fix the name, or add it with +{key}=...")
        OmegaConf.update(cfg, key, ov.value(), force_add=True)
    return cfg


def trial_config(exp_dir: Path, config_name: str, overrides: Sequence[str]) -> DictConfig:
    """A trial's config, composed from a snapshot of the config directory (in the job)."""
    return _compose(exp_dir, config_name, overrides)


def to_yaml(cfg: DictConfig | ListConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=False)
