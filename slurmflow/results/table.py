"""Results as rows: one flat record per trial, filters (`--where`, `--top`), several runs side by
side with the parameters that differ, and the CSV and JSON a script reads. Pure."""

from __future__ import annotations

import csv
import io
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slurmflow.errors import UsageError
from slurmflow.results.collect import RunResults, TrialResult, params

Row = dict[str, Any]

_OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
    "==": operator.eq,
    "=": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_WHERE = re.compile(r"^\s*([\w.\-/]+)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$")
FIXED = ("run", "rank", "trial", "state")
COST = ("elapsed_s", "retries", "gpu_hours_allocated", "gpu_hours_used", "gpu_efficiency")


def _r(v: float | None, n: int = 4) -> float | None:
    return None if v is None else round(v, n)


def row(run: RunResults, t: TrialResult) -> Row:
    """One trial as a flat record: run, rank, trial, state, its parameters, metrics, cost."""
    out: Row = {"run": run.run_id, "rank": t.rank, "trial": t.index, "state": t.state}
    out.update({f"param.{k}": v for k, v in {**params(run.base_overrides), **t.params}.items()})
    out.update({k: (None if math.isnan(v) else v) for k, v in t.metrics.items()})
    out.update(
        elapsed_s=_r(t.elapsed_s, 1),
        retries=t.retries,
        gpu_hours_allocated=_r(t.gpu_hours_allocated),
        gpu_hours_used=_r(t.gpu_hours_used),
        gpu_efficiency=_r(t.gpu_efficiency, 3),
        trial_id=t.trial_id,
        overrides=" ".join(t.overrides),
    )
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def where(expr: str, known: Iterable[str]) -> Callable[[Row], bool]:
    """`test_accuracy>0.8`, `state=FAILED`, `lr=0.1` (a parameter, without its `param.` prefix).
    Numbers compare as numbers, anything else as text. A name no row has is a UsageError."""
    m = _WHERE.match(expr)
    if not m:
        raise UsageError(f"--where {expr!r}: write NAME OP VALUE, OP one of = != < <= > >= (e.g. test_accuracy>0.8)")
    name, op, text = m.groups()
    names = set(known)
    key = name if name in names else f"param.{name}" if f"param.{name}" in names else None
    if key is None:
        shown = ", ".join(sorted(n.removeprefix("param.") for n in names)[:20])
        raise UsageError(f"--where {expr!r}: no column {name!r} (columns: {shown})")
    want = _number(text)
    compare = _OPS[op]

    def test(r: Row) -> bool:
        value = r.get(key)
        if value is None:
            return op == "!=" and text not in ("", "null", "None")
        got = _number(str(value)) if not isinstance(value, (int, float)) else float(value)
        if want is not None and got is not None:
            return compare(got, want)
        return compare(str(value), text)

    return test


@dataclass(frozen=True)
class Table:
    """What `slurmflow results` shows: rows best first, and which columns matter."""

    rows: list[Row]
    params: list[str]  # parameter columns whose values differ between rows
    constant: dict[str, Any]  # parameters every row has with one value
    objectives: list[str]  # objective columns, in ranking order
    metrics: list[str]  # the other metric columns
    runs: list[RunResults]

    @property
    def columns(self) -> list[str]:
        lead = ["run"] if len(self.runs) > 1 else []
        return [*lead, "rank", "trial", "state", *self.params, *self.objectives, *self.metrics, *COST]


def build(runs: Sequence[RunResults], *, filters: Sequence[str] = (), top: int | None = None) -> Table:
    rows = [row(run, t) for run in runs for t in run.trials]
    known = {k for r in rows for k in r}
    for expr in filters:
        test = where(expr, known or FIXED)
        rows = [r for r in rows if test(r)]
    if len(runs) > 1:  # side by side: ranked rows of every run by the first run's objective, then the rest
        obj = runs[0].objectives[0] if runs[0].objectives else None
        if obj is not None:
            key = obj.metric if any(obj.metric in r for r in rows) else obj.metric.split(".")[-1]
            scored = [r for r in rows if r["rank"] is not None and r.get(key) is not None]
            scored.sort(key=lambda r: -obj.sign * float(r[key]))
            rows = scored + [r for r in rows if r not in scored]
    if top is not None:
        rows = [r for r in rows if r["rank"] is not None][:top]
    params = sorted({k for r in rows for k in r if k.startswith("param.")})
    values = {p: Counter(str(r.get(p)) for r in rows) for p in params}
    differing = [p for p in params if len(values[p]) > 1]
    constant = {p.removeprefix("param."): rows[0].get(p) for p in params if p not in differing and rows}
    objectives = []
    for run in runs:
        for o in run.objectives:
            name = next((m for m in run.metric_names if m == o.metric or o.metric.endswith("." + m)), o.metric)
            if name not in objectives:
                objectives.append(name)
    skip = set(FIXED) | set(COST) | {"trial_id", "overrides"} | set(objectives)
    metrics = list(dict.fromkeys(k for r in rows for k in r if k not in skip and not k.startswith("param.")))
    return Table(rows, differing, constant, objectives, metrics, list(runs))


def to_csv(table: Table) -> str:
    cols = table.columns + [p for p in (f"param.{k}" for k in table.constant) if p not in table.columns]
    cols += ["trial_id", "overrides"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(table.rows)
    return buf.getvalue()


def summary(run: RunResults) -> dict[str, Any]:
    """A run in a few numbers: states, the best trial and its objective values, cost."""
    states = Counter(t.state for t in run.trials)
    best = run.best
    return {
        "run_id": run.run_id,
        "experiment": run.experiment,
        "objectives": [{"metric": o.metric, "mode": o.mode} for o in run.objectives],
        "trials": len(run.trials),
        "states": dict(states),
        "best": None
        if best is None
        else {"trial": best.index, "overrides": list(best.overrides), "objective": list(best.objective)},
        "gpu_hours_allocated": _r(sum(t.gpu_hours_allocated for t in run.trials)),
        "times_from": run.source,
    }


def to_json(table: Table) -> dict[str, Any]:
    return {"runs": [summary(r) for r in table.runs], "columns": table.columns, "trials": table.rows}
