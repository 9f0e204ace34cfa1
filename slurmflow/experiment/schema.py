"""The declared shape of what users write: experiment stages and quota files.

Validated by msgspec (`msgspec.convert`, strict): a boolean is a boolean (`'false'` is refused, not
read as true), whole numbers are whole, unknown fields are refused, and every refusal names the
field's path. msgspec was chosen over pydantic and OmegaConf structured configs because it is
strict by default, reports the path of the failing field, imports in about a millisecond (these
types are also read in jobs on compute nodes, see events.py) and is one small wheel.

This module holds shapes and simple bounds only; meaning (Slurm names, durations, sizes, the
dependency graph) is checked where the shapes become model types (experiment/config.py, quota/file.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect as mi

from slurmflow.errors import UsageError

T = TypeVar("T")

Whole = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Names = str | list[str] | None


class _Shape(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class ResourcesIn(_Shape, frozen=True):
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: Whole = 0
    cpus: Positive | None = None
    mem: str | Whole | None = None
    time: str | Whole | None = None
    constraint: str | None = None
    extra: list[str] = []


class RetryIn(_Shape, frozen=True):
    infra: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    exclude_failed_node: bool | None = None
    exit_codes: list[Annotated[int, msgspec.Meta(ge=1, le=255)]] = []
    exit_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    timeouts: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    oom_mem_factor: Annotated[float, msgspec.Meta(gt=1, le=16)] | None = None
    oom_mem_cap: str | Whole | None = None
    oom_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None


CHECKPOINT_SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP")


class CheckpointIn(_Shape, frozen=True):
    signal: str = "USR1"
    seconds: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 120
    grace: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 60
    max_restarts: Annotated[int, msgspec.Meta(ge=0, le=100)] = 3


class GpuSamplingIn(_Shape, frozen=True):
    enabled: bool = True
    interval: str | float | None = None
    flush: str | float | None = None
    source: str | None = None


class GpuIdleIn(_Shape, frozen=True):
    below: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    for_: str | float | None = msgspec.field(default=None, name="for")
    action: Literal["warn", "cancel"] = "warn"
    gpus: Literal["all", "any"] = "all"


class StageIn(_Shape, frozen=True):
    command: str | None = None
    argv: list[str] | None = None
    callable: str | None = None
    app: str | None = None
    overrides: list[str] | None = None
    per_trial: bool = False
    after_ok: Names = None
    after_not_ok: Names = None
    after_any: Names = None
    after_corr: Names = None
    singleton: bool = False
    resources: ResourcesIn | None = None
    max_parallel: Positive | None = None
    requeue: bool | None = None
    retry: RetryIn | None = None
    checkpoint: bool | CheckpointIn | None = None
    gpu_sampling: bool | GpuSamplingIn | None = None
    gpu_idle: bool | GpuIdleIn | None = None
    metrics_file: str | None = None


class ObjectiveIn(_Shape, frozen=True):
    metric: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][\w./-]*$")]
    mode: Literal["max", "min"] = "max"


class MlflowIn(_Shape, frozen=True):
    uri: str | None = None  # a tracking URI; unset: an SQLite store beside the runs directory
    experiment: str | None = None  # the MLflow experiment; unset: the slurmflow experiment's name


class TrackingIn(_Shape, frozen=True):
    mlflow: MlflowIn | None = None


# Slurm stores association limits as 32-bit counts (INFINITE is 2^32 - 1).
QuotaCount = Annotated[int, msgspec.Meta(ge=0, le=4_294_967_294)] | Literal["unlimited"] | None


class QuotaLimitsIn(_Shape, frozen=True):
    gpus: QuotaCount = None
    gpu_hours: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | Literal["unlimited"] | None = None
    max_running_jobs: QuotaCount = None
    max_submit_jobs: QuotaCount = None
    qos: str | list[str] | None = None


class QuotaAccountIn(QuotaLimitsIn, frozen=True):
    users: dict[str, Any] | None = None  # user name -> QuotaLimitsIn, converted one by one (paths)


class QuotaFileIn(_Shape, frozen=True):
    accounts: dict[str, QuotaAccountIn | None]
    cluster: str | None = None


_PARTS = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")


def _steps(suffix: str | None) -> list[str | int]:
    return [int(index) if index else key for key, index in _PARTS.findall(suffix or "") if key or index]


def _path(where: str, suffix: str | None) -> str:
    out = where
    for step in _steps(suffix):
        out += f"[{step}]" if isinstance(step, int) else f".{step}"
    return out.lstrip(".") or "quota file"  # the root of a document (only quota files are converted whole)


def _value_at(raw: Any, suffix: str | None) -> Any:
    value = raw
    for step in _steps(suffix):
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _members(t: mi.Type) -> list[mi.Type]:
    return [m for m in t.types if not isinstance(m, mi.NoneType)] if isinstance(t, mi.UnionType) else [t]


def _type_at(kind: type[Any], suffix: str | None) -> mi.Type | None:
    """The declared type at an error's path (for wording what the field takes)."""
    t: mi.Type | None = mi.type_info(kind)
    for step in _steps(suffix):
        nxt: mi.Type | None = None
        for m in _members(t) if t is not None else []:
            if isinstance(m, mi.StructType) and isinstance(step, str):
                nxt = next((f.type for f in m.fields if step in (f.name, f.encode_name)), None)
            elif isinstance(m, mi.ListType) and isinstance(step, int):
                nxt = m.item_type
            elif isinstance(m, mi.DictType):
                nxt = m.value_type
            if nxt is not None:
                break
        t = nxt
    return t


def _n(x: float | None) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else str(x)


def _bounds(t: mi.IntType | mi.FloatType) -> str:
    low, high = _n(t.ge if t.ge is not None else t.gt), _n(t.le)
    if low and high:
        return f" above {low}, at most {high}" if t.gt is not None else f" from {low} to {high}"
    if low:
        return f" above {low}" if t.gt is not None else f" >= {low}"
    return f" <= {high}" if high else ""


def describe(t: mi.Type) -> str:
    """What a declared type takes, in words: 'a whole number from 0 to 100 or unlimited'."""
    words = []
    for m in _members(t):
        if isinstance(m, mi.BoolType):
            words.append("true or false (unquoted)")
        elif isinstance(m, mi.IntType):
            words.append("a whole number" + _bounds(m))
        elif isinstance(m, mi.FloatType):
            words.append("a number" + _bounds(m))
        elif isinstance(m, mi.StrType):
            words.append("a string")
        elif isinstance(m, mi.LiteralType):
            words.append(" or ".join(str(v) for v in m.values))
        elif isinstance(m, mi.StructType):
            words.append("a mapping of " + ", ".join(sorted(f.encode_name for f in m.fields)))
        elif isinstance(m, mi.ListType):
            item = describe(m.item_type)
            for one, many in (("a whole number", "whole numbers"), ("a number", "numbers"), ("a string", "strings")):
                item = item.replace(one, many)
            words.append(f"a list of {item}")
        elif isinstance(m, mi.DictType):
            words.append("a mapping")
        else:
            words.append("a value")
    return " or ".join(dict.fromkeys(words))


def explain(exc: msgspec.ValidationError, raw: Any, kind: type[Any], where: str) -> str:
    """One line for a validation error: the field's path, what was wrong, and how to fix it."""
    text = str(exc)
    at = re.search(r" - at `\$(.*)`$", text)
    suffix = at.group(1) if at else None
    path = _path(where, suffix)
    declared = _type_at(kind, suffix)
    unknown = re.match(r"Object contains unknown field `(.+?)`", text)
    if unknown:
        known = f" (known: {describe(declared).removeprefix('a mapping of ')})" if declared else ""
        return f"{path}: unknown field {unknown.group(1)!r}{known}: remove it or fix its name"
    missing = re.match(r"Object missing required field `(.+?)`", text)
    if missing:
        return f"{path}: missing required field {missing.group(1)!r}: add it"
    got = _value_at(raw, suffix)
    shown = f" (got {got!r:.60})" if suffix else f" (got {type(got).__name__})"
    want = describe(declared) if declared is not None else text.split(" - at ")[0]
    hint = ": write true or false without quotes" if "true or false" in want and isinstance(got, str) else ""
    return f"{path}: expected {want}{shown}{hint}"


def convert(raw: Any, kind: type[T], where: str) -> T:
    """`raw` (plain YAML data) as `kind`, or a UsageError naming the field path under `where`."""
    try:
        return msgspec.convert(raw, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise UsageError(explain(exc, raw, kind, where)) from None


# `search:` (experiment/search.py gives the fields their meaning: the params' grammar, durations,
# the sampler's and pruner's names). A sampler or pruner is a name, or a mapping of `name:` and
# the keyword arguments of its Optuna class, which are Optuna's to define: hence dict[str, Any].
class SearchIn(_Shape, frozen=True):
    params: dict[str, Any]  # config key -> Hydra Optuna-sweeper text, read one by one (paths)
    n_trials: Positive
    batch: Positive = 1
    sampler: str | dict[str, Any] = "tpe"
    pruner: str | dict[str, Any] | None = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=4_294_967_295)] | None = None  # numpy's seed range
    storage: str | None = None
    study_name: str | None = None
    max_gpu_hours: Annotated[float, msgspec.Meta(gt=0, le=1e9)] | None = None
    deadline: str | float | None = None
    prune_stage: str | None = None
    grace: str | float = 0
