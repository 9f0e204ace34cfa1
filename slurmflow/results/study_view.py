"""A `search:` run's Optuna study in a few numbers: how far it got, its best trial(s), the history
of its objective and which parameters mattered. What `results`, `report` and `status` show.

Everything but `load` is pure over an `optuna.Study` (read once, `get_trials(deepcopy=False)`),
so it runs in milliseconds on a study built in memory. `load` is the one place that opens a run's
study, through the search engine's own `open_study`: the storage (SQLite, journal, URL) and the
study's name stay its business. Optuna is imported only for a run that has a search, so a run
without one costs nothing and needs no Optuna.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slurmflow.errors import SlurmflowError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from slurmflow.rundir.store import RunStore

TRIAL_ATTR = "slurmflow_trial"  # the user attribute naming the slurmflow trial of an Optuna trial
IMPORTANCE_TOP = 5  # parameters named in one line of `results`
FRONT_NAMED = 5  # Pareto-front trials named in one line of `status`
SEP = " \N{MIDDLE DOT} "


class StudyUnavailable(SlurmflowError):
    """The run has a search but its study cannot be read (Optuna missing, storage unreadable).

    A reader shows the reason where the study would be, and everything else as usual: the
    trials' own results never depend on the study."""


@dataclass(frozen=True)
class BestTrial:
    """A best trial: the single objective's best, or one trial of the Pareto front."""

    number: int  # Optuna's trial number
    trial: int | None  # the slurmflow trial; None: the Optuna trial does not say
    values: tuple[float, ...]  # one per objective, in the study's order
    params: Mapping[str, Any]  # as Optuna sampled them

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "trial": self.trial,
            "values": [_finite(v) for v in self.values],
            "params": {k: _jsonable(v) for k, v in self.params.items()},
        }


@dataclass(frozen=True)
class HistoryPoint:
    """One completed trial, in the order trials completed, and the best values up to it.

    With several objectives each one's best so far is its own (not the Pareto front's): one
    history figure per objective reads as the single-objective one does."""

    number: int
    trial: int | None
    values: tuple[float, ...]
    best: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "trial": self.trial,
            "values": [_finite(v) for v in self.values],
            "best": [_finite(v) for v in self.best],
        }


@dataclass(frozen=True)
class StudySummary:
    """What a reader shows of a study. `best` holds the single objective's best trial, or the
    Pareto front (several objectives), best first by the first objective; empty until a trial
    completes. `importances` holds one mapping per objective (parameter -> share, summing to 1,
    most important first), or None with `importance_note` saying why."""

    study_name: str
    target: int | None  # the number of trials the search asks for (launch.json's search.n_trials)
    directions: tuple[str, ...]  # "minimize" | "maximize", one per objective
    objectives: tuple[str, ...]  # the objectives' names, one per direction
    complete: int
    running: int
    pruned: int
    failed: int
    waiting: int
    best: tuple[BestTrial, ...]
    history: tuple[HistoryPoint, ...]
    importances: tuple[Mapping[str, float], ...] | None
    importance_note: str | None = None

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    @property
    def finished(self) -> int:
        """Trials that ended one way or another: what counts towards the target, as each one
        took its share of the budget whether it completed, was pruned or failed."""
        return self.complete + self.pruned + self.failed

    @property
    def total(self) -> int:
        return self.finished + self.running + self.waiting

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON values (a non-finite number becomes null: strict JSON)."""
        return {
            "study_name": self.study_name,
            "target": self.target,
            "directions": list(self.directions),
            "objectives": list(self.objectives),
            "counts": {
                "complete": self.complete,
                "running": self.running,
                "pruned": self.pruned,
                "failed": self.failed,
                "waiting": self.waiting,
            },
            "finished": self.finished,
            "best": [b.to_dict() for b in self.best],
            "history": [h.to_dict() for h in self.history],
            "importances": None
            if self.importances is None
            else [{k: _finite(v) for k, v in m.items()} for m in self.importances],
            "importance_note": self.importance_note,
        }


# --- the pure part ------------------------------------------------------------------------------


def summarize(
    study: optuna.Study,
    target: int | None,
    *,
    objectives: Sequence[str] | None = None,
    importances: bool = True,
) -> StudySummary:
    """The study's summary. `objectives` names its objectives (the experiment's metrics; by
    default the study's own metric names). `importances=False` skips the one costly part, for
    a view that never shows them (`status --watch` redraws every few seconds)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(TRIAL_ATTR in t.user_attrs for t in trials):  # a search's own: not an orphan of a dead ask
        trials = [t for t in trials if TRIAL_ATTR in t.user_attrs]
    directions = tuple(d.name.lower() for d in study.directions)
    states = [t.state for t in trials]
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    if importances:
        found, why = _importances(study, done, directions)
    else:
        found, why = None, "not computed for this view"
    return StudySummary(
        study_name=study.study_name,
        target=target,
        directions=directions,
        objectives=_names(objectives, study, len(directions)),
        complete=states.count(TrialState.COMPLETE),
        running=states.count(TrialState.RUNNING),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        waiting=states.count(TrialState.WAITING),
        best=_best(study, directions) if done else (),
        history=history(done, directions),
        importances=found,
        importance_note=why,
    )


def slurmflow_trial(t: FrozenTrial) -> int | None:
    """The slurmflow trial an Optuna trial ran as; None where the attribute is missing or odd
    (a trial added to the study by hand)."""
    value = t.user_attrs.get(TRIAL_ATTR)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def history(done: Sequence[FrozenTrial], directions: Sequence[str]) -> tuple[HistoryPoint, ...]:
    """Completed trials in the order they completed (Optuna's number breaks ties and stands in
    for a missing time), each with every objective's best value so far. Completion order, not
    trial number: trials run in parallel batches and finish out of order, and the best-so-far
    line is only monotone in the order results arrived."""
    order = sorted(done, key=lambda t: (t.datetime_complete is None, t.datetime_complete or 0, t.number))
    better: list[Callable[[float, float], float]] = [max if d == "maximize" else min for d in directions]
    out: list[HistoryPoint] = []
    best: tuple[float, ...] = ()
    for t in order:
        values = tuple(float(v) for v in (t.values or ()))
        if len(values) != len(directions):
            continue  # a trial told with the wrong number of values: Optuna refuses those, skip it too
        best = values if not best else tuple(pick(b, v) for pick, b, v in zip(better, best, values, strict=True))
        out.append(HistoryPoint(t.number, slurmflow_trial(t), values, best))
    return tuple(out)


def study_line(summary: StudySummary, *, label: str = "study") -> str:
    """The study in one line: `study: 37/40 done · 2 running · 5 pruned · best loss 0.12 (trial 17)`.

    "done" counts every finished trial (completed, pruned or failed): each took its share of
    the target. Failed and waiting trials are named only when there are some."""
    done = f"{summary.finished}/{summary.target}" if summary.target is not None else str(summary.finished)
    parts = [f"{done} done", f"{summary.running} running", f"{summary.pruned} pruned"]
    if summary.failed:
        parts.append(f"{summary.failed} failed")
    if summary.waiting:
        parts.append(f"{summary.waiting} waiting")
    if not summary.best:
        parts.append("no trial completed yet")
    elif not summary.multi:
        b = summary.best[0]
        parts.append(f"best {summary.objectives[0]} {number(b.values[0])} ({trial_name(b)})")
    else:
        named = ", ".join(str(b.trial) if b.trial is not None else f"#{b.number}" for b in summary.best[:FRONT_NAMED])
        more = f", +{len(summary.best) - FRONT_NAMED}" if len(summary.best) > FRONT_NAMED else ""
        parts.append(f"Pareto front of {len(summary.best)} (trials {named}{more})")
    return f"{label}: " + SEP.join(parts)


def importance_lines(summary: StudySummary, *, top: int = IMPORTANCE_TOP) -> list[str]:
    """The most important parameters, one line per objective (or why there are none)."""
    if summary.importances is None:
        return [f"importance: {summary.importance_note or 'not computed'}"]
    out = []
    for name, found in zip(summary.objectives, summary.importances, strict=False):
        shown = ", ".join(f"{p} {v:.2f}" for p, v in list(found.items())[:top])
        more = f" (+{len(found) - top} more)" if len(found) > top else ""
        head = f"importance for {name}" if summary.multi else "importance"
        out.append(f"{head}: {shown or 'none'}{more}")
    return out


def trial_name(b: BestTrial) -> str:
    """How a reader names a trial: slurmflow's number, Optuna's where slurmflow's is unknown."""
    return f"trial {b.trial}" if b.trial is not None else f"Optuna trial #{b.number}"


def number(v: float) -> str:
    return f"{v:.4g}"


def _names(given: Sequence[str] | None, study: optuna.Study, n: int) -> tuple[str, ...]:
    """One name per objective: the experiment's, else the study's metric names, else generic."""
    names = list(given or ())
    if len(names) < n:
        with warnings.catch_warnings():  # metric_names is marked experimental: not the reader's concern
            warnings.simplefilter("ignore")
            own = study.metric_names
        if own and len(own) == n:
            names = list(own)
    generic = ["value"] if n == 1 else [f"objective {i}" for i in range(n)]
    return tuple((names + generic[len(names) :])[:n])


def _best(study: optuna.Study, directions: Sequence[str]) -> tuple[BestTrial, ...]:
    """Optuna's own answer (it knows about constraints): `best_trial`, or the Pareto front
    `best_trials` ordered by the first objective (best first), then by number."""
    if len(directions) == 1:
        try:
            found = [study.best_trial]
        except ValueError:  # no feasible completed trial
            return ()
    else:
        sign = -1.0 if directions[0] == "maximize" else 1.0
        found = sorted(study.best_trials, key=lambda t: (sign * float((t.values or [0.0])[0]), t.number))
    return tuple(
        BestTrial(t.number, slurmflow_trial(t), tuple(float(v) for v in t.values or ()), dict(t.params)) for t in found
    )


def _importances(
    study: optuna.Study, done: Sequence[FrozenTrial], directions: Sequence[str]
) -> tuple[tuple[Mapping[str, float], ...] | None, str | None]:
    """Optuna's `get_param_importances` (its default evaluator), one mapping per objective, or
    None and why. Several objectives: each is asked on its own, through `target`, negated where
    it is maximised (the default evaluator reads a target as lower is better; others ignore the
    sign). Optuna's failures here (too few trials of some distribution, a parameter with a single
    value) are a reason to show, never a crash of the command that shows them."""
    from optuna.importance import get_param_importances

    if len(done) < 2:
        return None, f"needs 2 completed trials ({len(done)} so far)"
    params = {p for t in done for p in t.params}
    if len(params) < 2:
        return None, f"needs more than one parameter (the search has {len(params)})"
    out: list[dict[str, float]] = []
    try:
        with warnings.catch_warnings():  # Optuna's remarks (too few trials, experimental) go to stderr otherwise
            warnings.simplefilter("ignore")
            if len(directions) == 1:
                out.append(_sorted(get_param_importances(study)))
            else:
                for i, d in enumerate(directions):
                    out.append(_sorted(get_param_importances(study, target=_target(i, d == "maximize"))))
    except Exception as exc:  # Optuna's own failure, whatever its type: shown as the reason
        return None, f"Optuna could not compute them: {type(exc).__name__}: {exc}"
    return tuple(out), None


def _target(i: int, maximise: bool) -> Callable[[FrozenTrial], float]:
    sign = -1.0 if maximise else 1.0
    return lambda t: sign * float((t.values or [math.nan] * (i + 1))[i])


def _sorted(found: Mapping[str, float]) -> dict[str, float]:
    """Most important first; plain floats (Optuna hands back numpy's)."""
    return dict(sorted(((str(k), float(v)) for k, v in found.items()), key=lambda kv: -kv[1]))


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _jsonable(v: Any) -> Any:
    """A sampled parameter as JSON: Optuna's categorical choices are None, bool, int, float or
    str; anything else is shown as text."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return _finite(v)
    return str(v)


# --- reading a run ------------------------------------------------------------------------------


def load(store: RunStore, *, importances: bool = True) -> StudySummary | None:
    """The summary of a run's study; None when the run has no search (then nothing is imported).

    Raises StudyUnavailable when the run has one that cannot be read: Optuna not installed, the
    storage unreadable (a database locked or gone)."""
    launch = store.read_json("launch.json")
    search = launch.get("search")
    if not isinstance(search, Mapping):
        return None
    target = search.get("n_trials")
    names = [str(o["metric"]) for o in launch.get("objective") or () if isinstance(o, Mapping) and "metric" in o]
    try:
        from slurmflow.search.study import open_study

        study = open_study(store)
    except (ImportError, SlurmflowError) as exc:
        raise StudyUnavailable(f"the study cannot be read: {exc}") from exc
    except Exception as exc:  # the storage's own errors (SQLAlchemy, journal): a reason, not a traceback
        raise StudyUnavailable(f"the study cannot be read: {type(exc).__name__}: {exc}") from exc
    if study is None:
        return None
    return summarize(
        study,
        target if isinstance(target, int) and not isinstance(target, bool) else None,
        objectives=names,
        importances=importances,
    )
