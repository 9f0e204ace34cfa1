"""The Optuna study of a `search:` run: where it is stored, and the study-side steps the monitor
takes (ask for trials, tell outcomes, judge a running trial for pruning).

The study is the source of truth for which trials were asked for: each Optuna trial carries the
run's trial number (user attribute `slurmflow_trial`) from the moment it is asked, so a crash
between the ask and the run's manifest is repaired by reading the study (`unrecorded`), never by
asking again.

Optuna is imported inside functions: `status` and the monitor of a run without a search never
pay for it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from slurmflow.errors import UsageError
from slurmflow.model import Objective, Search
from slurmflow.rundir.store import RunStore
from slurmflow.search import space

if TYPE_CHECKING:
    import optuna

TRIAL_ATTR = "slurmflow_trial"  # the run's trial number, on each Optuna trial
DB = "study.db"
JOURNAL = "study.journal"
MISSING = "search: needs Optuna: pip install 'slurmflow[search]'"


def spec(launch: Mapping[str, Any]) -> Search | None:
    """The run's search, as launch recorded it; None for a sweep."""
    doc = launch.get("search")
    return None if doc is None else space.from_json(doc)


def objectives(launch: Mapping[str, Any]) -> tuple[Objective, ...]:
    return tuple(Objective(o["metric"], o["mode"]) for o in launch.get("objective") or ())


def directions(objs: Sequence[Objective]) -> list[Literal["minimize", "maximize"]]:
    return ["maximize" if o.mode == "max" else "minimize" for o in objs]


def _require() -> None:
    """Optuna is an extra (`pip install 'slurmflow[search]'`): a one-line error without it."""
    try:
        import optuna
    except ImportError as exc:
        raise UsageError(MISSING) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the monitor's output is its actions


def storage(store: RunStore, search: Search) -> Any:
    """The study's storage: SQLite in the run directory by default; Optuna's journal file there
    (`storage: journal`) where the file system's locking does not suit SQLite (NFS, Lustre); or
    the URL given (a shared database)."""
    _require()
    if search.storage in (None, "sqlite"):
        return f"sqlite:///{store.path(DB)}"
    if search.storage == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(store.path(JOURNAL))))
    return search.storage


def study_name(store: RunStore, search: Search) -> str:
    return search.study_name or store.run_id


def create(store: RunStore, search: Search, objs: Sequence[Objective]) -> optuna.Study:
    """The run's study, made at launch (`load_if_exists`: a launch resumed after a crash)."""
    _require()
    import optuna

    study = optuna.create_study(
        storage=storage(store, search),
        study_name=study_name(store, search),
        directions=directions(objs),
        load_if_exists=True,
    )
    study.set_user_attr("run_id", store.run_id)
    study.set_user_attr("n_trials", search.n_trials)
    return study


def load(store: RunStore, search: Search, objs: Sequence[Objective], *, asked: int = 0) -> optuna.Study:
    """The study with the run's sampler and pruner. A sampler's random state lives in the process,
    and each monitor tick is a new process: seeded with the seed alone it would propose the same
    random points every tick. So its seed is the run's seed and the number of trials asked so
    far: reproducible, never repeating. (QMC derives its sample position from the study itself
    and keeps the seed it was given.)"""
    _require()
    import optuna

    seeded = search
    if search.seed is not None and search.sampler != "qmc":
        seeded = dataclasses.replace(search, seed=(search.seed * 1_000_003 + asked) % 2**32)
    return optuna.load_study(
        study_name=study_name(store, search),
        storage=storage(store, search),
        sampler=space.sampler(seeded, len(objs) or 1),
        pruner=space.pruner(search),
    )


def open_study(store: RunStore) -> optuna.Study | None:
    """The run's study for reading (results, report, status); None when the run has no search or
    its study cannot be read."""
    launch = store.read_json("launch.json")
    search = spec(launch)
    if search is None:
        return None
    _require()
    import optuna

    try:
        return optuna.load_study(study_name=study_name(store, search), storage=storage(store, search))
    except KeyError:  # no such study (yet): a launch that stopped before it
        return None


@dataclass(frozen=True)
class Proposed:
    """A trial the study asked for: its Optuna number, the run's trial number and its params."""

    number: int
    trial: int
    params: Mapping[str, Any]


def unrecorded(study: optuna.Study, known: int) -> list[Proposed]:
    """Trials the study holds that the run's manifest does not (trial number >= `known`): asked
    for by a tick that stopped before it wrote them down. In the run's trial order."""
    out = [
        Proposed(t.number, int(t.user_attrs[TRIAL_ATTR]), dict(t.params))
        for t in study.get_trials(deepcopy=False)
        if int(t.user_attrs.get(TRIAL_ATTR, -1)) >= known
    ]
    return sorted(out, key=lambda p: p.trial)


def ask(study: optuna.Study, search: Search, first: int, count: int) -> list[Proposed]:
    """`count` new trials, numbered `first`, `first + 1`, ... in the run. The number goes on the
    Optuna trial in the same storage write sequence as the ask, before anything else happens."""
    dists = space.distributions(search)
    out = []
    for i in range(count):
        if search.seed is not None and search.sampler != "qmc":
            # Seeded per trial, not per call: trial n gets the same random draws however the asks
            # were grouped into calls (a random search is then the same search every time).
            seeded = dataclasses.replace(search, seed=(search.seed * 1_000_003 + first + i) % 2**32)
            study.sampler = space.sampler(seeded, len(study.directions))
        trial = study.ask(fixed_distributions=dists)
        trial.set_user_attr(TRIAL_ATTR, first + i)
        out.append(Proposed(trial.number, first + i, dict(trial.params)))
    return out


def discard_orphans(study: optuna.Study) -> int:
    """Trials Optuna created for a call that died before it numbered them (between the ask and
    the attribute): told FAIL, so that they do not stay RUNNING. They were never written down or
    submitted, and do not count towards n_trials. The caller holds the run's lock, so no other
    call is between the two steps. Returns how many there were."""
    from optuna.trial import TrialState

    found = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if TRIAL_ATTR not in t.user_attrs
    ]
    for t in found:
        study.tell(t.number, state=TrialState.FAIL)
    return len(found)


def by_trial(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    return {int(t.user_attrs[TRIAL_ATTR]): t for t in study.get_trials(deepcopy=False) if TRIAL_ATTR in t.user_attrs}


def objective_value(reported: Mapping[str, Any], obj: Objective) -> float | None:
    """A trial's value of an objective from its stages' metrics (`rundir.metrics.read`): a bare
    name from the one stage that reports it, `stage.name` from that stage."""
    stage, _, name = obj.metric.partition(".")
    if name and stage in reported:
        v = reported[stage].values().get(name)
        return None if v is None or math.isnan(v) else float(v)
    found = [m.values()[obj.metric] for m in reported.values() if obj.metric in m.values()]
    if len(found) != 1 or math.isnan(found[0]):
        return None
    return float(found[0])


def curve(reported: Mapping[str, Any], obj: Objective, stage: str | None) -> dict[int, float]:
    """The intermediate values of the objective's metric a trial logged (`log(step=..., ...)`),
    from `stage` (or the objective's own stage; else any stage that logs a curve of it)."""
    qual, _, bare = obj.metric.partition(".")
    name = bare if bare and qual in reported else obj.metric
    stages = [stage] if stage else [qual] if bare and qual in reported else list(reported)
    for s in stages:
        m = reported.get(s)
        if m is not None and name in m.curves:
            return {int(k): float(v) for k, v in m.curves[name].items() if not math.isnan(v)}
    return {}
