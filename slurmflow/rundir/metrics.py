"""Metrics a task reports: the in-job API (`from slurmflow import log, summary`) and the reader.

A task appends JSON lines to a file of its own in its trial directory (or stage directory, for a
single job):

  metrics/<stage>.<job id>.<restart>.<rank>.jsonl
    {"t": 1733.2, "step": 3, "m": {"loss": 0.41, "accuracy": 0.82}}   log(step=3, loss=..., ...)
    {"t": 1790.0, "final": {"test_accuracy": 0.91}}                   summary(test_accuracy=...)

One file per process attempt: no two writers share a file, so concurrent tasks of a trial and
the ranks of one task never interleave, and nothing needs a lock (which NFS may not honour).
Each record is one `write` of one line to a file opened with O_APPEND; a task killed mid-write
leaves at most a partial last line, which the reader skips. No network: the files live beside
the task's other outputs on the shared file system.

The reader folds every file of a stage: attempts in the order they began, a later attempt's
value for a step replacing an earlier one's (a requeued task that resumes from a checkpoint
logs its steps again), and a metric's final value is its last `summary` value, or else its value
at the highest step. A task that cannot import slurmflow writes `metrics.json` (or the stage's
`metrics_file`) instead: the wrapper folds it in as the stage's final values when the task ends.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

METRICS_DIR = "metrics"
_warned: list[bool] = []


@dataclass
class StageMetrics:
    """What one stage of one trial reported."""

    final: dict[str, float] = field(default_factory=dict)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> step -> value

    def values(self) -> dict[str, float]:
        """Final values: a summary's, else the curve's value at its highest step."""
        out = {name: pts[max(pts)] for name, pts in self.curves.items() if pts}
        out.update(self.final)
        return out


def numbers(doc: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric values of a JSON object, nested keys joined with '.'; booleans and strings
    are not metrics and are left out."""
    out: dict[str, float] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, Mapping):
            out.update(numbers(value, name + "."))
    return out


def _checked(metrics: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)  # numpy and torch scalars
            except (TypeError, ValueError):
                raise TypeError(f"slurmflow.log: metric {name}={value!r} is not a number") from None
        out[name] = float(value)
    return out


def _json_value(v: float) -> float | str:
    return v if math.isfinite(v) else repr(v)  # JSON has no nan/inf: "nan", "inf", "-inf"


class Writer:
    """The metrics file of this process (created on first use)."""

    def __init__(self, directory: Path, stage: str, attempt: str) -> None:
        self.path = directory / METRICS_DIR / f"{stage}.{attempt}.jsonl"
        self._fd: int | None = None
        self._steps: dict[str, int] = {}

    def _write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())

    def log(self, step: int | None, metrics: Mapping[str, Any]) -> None:
        values = _checked(metrics)
        if step is None:  # one more than the last step this process logged any of these metrics at
            step = max((self._steps.get(k, -1) for k in values), default=-1) + 1
        for k in values:
            self._steps[k] = step
        self._write({"t": time.time(), "step": int(step), "m": {k: _json_value(v) for k, v in values.items()}})

    def summary(self, metrics: Mapping[str, Any]) -> None:
        values = _checked(metrics)
        self._write({"t": time.time(), "final": {k: _json_value(v) for k, v in values.items()}})


def _attempt_name(env: Mapping[str, str]) -> str:
    job = env.get("SLURM_ARRAY_JOB_ID") and f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    job = job or env.get("SLURM_JOB_ID") or f"pid{os.getpid()}"
    return f"{job}.{env.get('SLURM_RESTART_COUNT', '0')}.{env.get('SLURM_PROCID', '0')}"


_writers: dict[tuple[str, str, str], Writer] = {}


def writer(env: Mapping[str, str] | None = None) -> Writer | None:
    """This process's writer, from the environment the task wrapper sets; None outside a task."""
    env = os.environ if env is None else env
    where = env.get("SLURMFLOW_TRIAL_DIR") or env.get("SLURMFLOW_WORKDIR")
    stage = env.get("SLURMFLOW_STAGE")
    if not where or not stage:
        if not _warned:
            _warned.append(True)
            print("slurmflow.log: not inside a slurmflow task; metrics are not recorded", file=sys.stderr)
        return None
    key = (where, stage, _attempt_name(env))
    if key not in _writers:
        _writers[key] = Writer(Path(where), stage, key[2])
    return _writers[key]


def log(step: int | None = None, **metrics: Any) -> None:
    """Record metrics at a step (a curve point): `log(step=epoch, loss=0.4, accuracy=0.81)`.
    Without `step`, this process's next step. Values must be numbers."""
    w = writer()
    if w is not None:
        w.log(step, metrics)


def summary(**metrics: Any) -> None:
    """Record a task's final metrics: `summary(test_accuracy=0.91)`. Called again, the later
    value of a metric wins."""
    w = writer()
    if w is not None:
        w.summary(metrics)


PRUNE_MARKER = ".pruned"  # in a trial's directory, written by the search when it prunes the trial


def should_stop(trial_dir: str | os.PathLike[str] | None = None) -> bool:
    """True once a `search:` pruned this trial: its tasks are about to be cancelled (after the
    search's `grace`), so a job that checks between steps can save and exit cleanly. Always False
    outside a search trial."""
    where = trial_dir or os.environ.get("SLURMFLOW_TRIAL_DIR")
    return where is not None and os.path.exists(os.path.join(where, PRUNE_MARKER))


# --- reading ----------------------------------------------------------------------------------


class _Record(msgspec.Struct):
    """One line of a metrics file: a curve point (step, m) or final values (final)."""

    t: float = 0.0
    step: int | None = None
    m: dict[str, float | str] | None = None
    final: dict[str, float | str] | None = None


_decoder = msgspec.json.Decoder(_Record)


def _num(v: float | str) -> float | None:
    if isinstance(v, float):
        return v
    try:
        return float(v)  # "nan", "inf", "-inf" as written for JSON
    except ValueError:
        return None


def _records(path: str) -> list[_Record]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    try:
        return _decoder.decode_lines(data)  # the common case: every line whole
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    out = []
    for line in data.splitlines():
        try:
            out.append(_decoder.decode(line))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # a partial last line (a task killed mid-write), or a line not ours
    return out


def fold(records: Iterable[_Record], into: StageMetrics) -> None:
    curves, final = into.curves, into.final
    for rec in records:
        if rec.m is not None and rec.step is not None:
            for name, v in rec.m.items():
                x = v if isinstance(v, float) else _num(v)
                if x is not None:
                    pts = curves.get(name)
                    if pts is None:
                        pts = curves[name] = {}
                    pts[rec.step] = x
        elif rec.final is not None:
            for name, v in rec.final.items():
                x = v if isinstance(v, float) else _num(v)
                if x is not None:
                    final[name] = x


def read(directory: str | os.PathLike[str]) -> dict[str, StageMetrics]:
    """Every stage's metrics in a trial (or stage) directory: stage -> StageMetrics."""
    try:
        files = [e for e in os.scandir(os.path.join(directory, METRICS_DIR)) if e.name.endswith(".jsonl")]
    except OSError:
        return {}
    by_stage: dict[str, list[tuple[float, list[_Record]]]] = {}
    for entry in files:
        recs = _records(entry.path)
        if recs:
            by_stage.setdefault(entry.name.split(".", 1)[0], []).append((recs[0].t, recs))
    out: dict[str, StageMetrics] = {}
    for stage, attempts in by_stage.items():
        m = out[stage] = StageMetrics()
        attempts.sort(key=lambda a: a[0])  # attempts in the order they began
        for _, recs in attempts:
            fold(recs, m)
    return out


def pick_up(directory: Path, stage: str, path: Path, since: float, env: Mapping[str, str]) -> bool:
    """Fold a metrics file a task wrote itself (`metrics.json`, or the stage's `metrics_file`)
    into the stage's metrics, when the task wrote or changed it; False when there was none.
    Called by the task wrapper when the stage's command ends."""
    try:
        if path.stat().st_mtime < since - 1:  # written by an earlier task, not this one
            return False
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    values = numbers(doc)
    if values:
        Writer(directory, stage, _attempt_name(env) + ".file").summary(values)
    return bool(values)
