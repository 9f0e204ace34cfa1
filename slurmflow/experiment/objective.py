"""An experiment's `objective:` and `tracking:` sections -> model types.

objective: {metric: test_accuracy, mode: max}          # one
objective:                                             # or several: ranked in this order
  - {metric: eval.test_accuracy, mode: max}            # stage-qualified
  - {metric: train.loss, mode: min}
tracking: {mlflow: {uri: sqlite:///mlflow.db}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slurmflow.errors import UsageError
from slurmflow.experiment import schema
from slurmflow.experiment.schema import ObjectiveIn, TrackingIn
from slurmflow.model import MlflowTracking, Objective


def objectives(raw: Any, where: str = "objective") -> tuple[Objective, ...]:
    """The experiment's objectives, in ranking order (none: results are listed unranked)."""
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise UsageError(f"{where}: an empty list: give {{metric: NAME, mode: max}} or drop {where}")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if isinstance(raw, list) else where
        if isinstance(item, str):
            raise UsageError(f"{at}: {item!r} is a bare name: write {{metric: {item}, mode: max}} (or mode: min)")
        parsed = schema.convert(item, ObjectiveIn, at)
        out.append(Objective(parsed.metric, parsed.mode))
    metrics = [o.metric for o in out]
    dup = next((m for m in metrics if metrics.count(m) > 1), None)
    if dup:
        raise UsageError(f"{where}: {dup} is listed twice: keep one")
    return tuple(out)


def parse_objective_flag(text: str) -> Objective:
    """`--objective test_accuracy:max` (or `:min`; max when left out)."""
    metric, _, mode = text.rpartition(":") if text.endswith((":max", ":min")) else (text, "", "max")
    return objectives({"metric": metric, "mode": mode}, "--objective")[0]


def tracking(raw: Any) -> MlflowTracking | None:
    if raw is None:
        return None
    parsed = schema.convert(raw, TrackingIn, "tracking")
    if parsed.mlflow is None:
        return None
    return MlflowTracking(parsed.mlflow.uri, parsed.mlflow.experiment)


def to_json(objs: tuple[Objective, ...], track: MlflowTracking | None) -> Mapping[str, Any]:
    """What launch.json keeps of them, for commands that read a run without Hydra."""
    return {
        "objective": [{"metric": o.metric, "mode": o.mode} for o in objs],
        "tracking": None if track is None else {"mlflow": {"uri": track.uri, "experiment": track.experiment}},
    }
