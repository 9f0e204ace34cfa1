"""A search's study summary (results/study_view.py): pure, over studies built in memory."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Literal, cast

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from slurmflow.results import study_view
from slurmflow.results.study_view import StudySummary, importance_lines, study_line, summarize
from slurmflow.rundir.store import RunStore

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"lr": FloatDistribution(1e-4, 1.0, log=True), "layers": IntDistribution(1, 8), "act": CategoricalDistribution(["relu", "tanh"])}  # fmt: skip
T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)


def trial(
    index: int | None,
    state: TrialState = TrialState.COMPLETE,
    values: list[float] | None = None,
    *,
    params: dict[str, Any] | None = None,
    completed_after_s: float | None = None,
) -> optuna.trial.FrozenTrial:
    """An Optuna trial as the engine records it: the slurmflow trial in a user attribute."""
    p = (
        params
        if params is not None
        else {"lr": 0.01 * (1 + (index or 0)), "layers": 1 + (index or 0) % 8, "act": "relu"}
    )
    t = create_trial(
        state=state,
        values=values if state == TrialState.COMPLETE else None,
        params=p,
        distributions={k: SPACE[k] for k in p},
        user_attrs={} if index is None else {"slurmflow_trial": index},
    )
    if completed_after_s is not None and t.datetime_complete is not None:
        t.datetime_complete = T0 + datetime.timedelta(seconds=completed_after_s)
    return t


def study(
    *trials: optuna.trial.FrozenTrial, directions: tuple[Literal["minimize", "maximize"], ...] = ("minimize",)
) -> optuna.Study:
    s = optuna.create_study(directions=list(directions), study_name="s1")
    for t in trials:
        s.add_trial(t)
    return s


def test_counts_best_and_history_of_one_objective() -> None:
    s = study(
        trial(0, values=[0.5], completed_after_s=1),
        trial(1, values=[0.3], completed_after_s=3),
        trial(2, TrialState.PRUNED),
        trial(3, values=[0.4], completed_after_s=2),  # finished before trial 1: history is by completion
        trial(4, TrialState.FAIL),
        trial(5, TrialState.RUNNING),
        trial(6, TrialState.WAITING),
    )
    got = summarize(s, 10, objectives=["loss"])
    assert (got.complete, got.running, got.pruned, got.failed, got.waiting) == (3, 1, 1, 1, 1)
    assert got.finished == 5 and got.total == 7 and not got.multi
    assert got.directions == ("minimize",) and got.objectives == ("loss",)
    (best,) = got.best
    assert (best.trial, best.values, best.params["layers"]) == (1, (0.3,), 2)
    assert [(h.trial, h.values[0], h.best[0]) for h in got.history] == [(0, 0.5, 0.5), (3, 0.4, 0.4), (1, 0.3, 0.3)]
    assert study_line(got) == "study: 5/10 done · 1 running · 1 pruned · 1 failed · 1 waiting · best loss 0.3 (trial 1)"


def test_best_so_far_follows_the_direction() -> None:
    s = study(
        trial(0, values=[0.2], completed_after_s=1),
        trial(1, values=[0.9], completed_after_s=2),
        trial(2, values=[0.5], completed_after_s=3),
        directions=("maximize",),
    )
    got = summarize(s, None, objectives=["acc"], importances=False)
    assert [h.best[0] for h in got.history] == [0.2, 0.9, 0.9]
    assert got.best[0].trial == 1
    assert got.importances is None and got.importance_note == "not computed for this view"
    assert study_line(got, label="Study").startswith("Study: 3 done · 0 running · 0 pruned · best acc 0.9 (trial 1)")


def test_importances_are_optunas_and_need_trials_and_parameters() -> None:
    many = [trial(i, values=[(0.01 * (1 + i) - 0.05) ** 2 + 0.001 * (i % 8)], completed_after_s=i) for i in range(30)]
    got = summarize(study(*many), 30)
    assert got.importances is not None and got.importance_note is None
    (found,) = got.importances
    assert set(found) == {"lr", "layers", "act"}
    assert sum(found.values()) == pytest.approx(1.0)
    assert list(found.values()) == sorted(found.values(), reverse=True)  # most important first
    assert importance_lines(got)[0].startswith(f"importance: {next(iter(found))} ")

    one = summarize(study(trial(0, values=[1.0])), 5)
    assert one.importances is None and one.importance_note == "needs 2 completed trials (1 so far)"
    assert importance_lines(one) == ["importance: needs 2 completed trials (1 so far)"]
    single = summarize(study(*(trial(i, values=[float(i)], params={"lr": 0.1 * (i + 1)}) for i in range(4))), 4)
    assert single.importances is None and "more than one parameter" in (single.importance_note or "")


def test_an_optuna_failure_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: object, **_k: object) -> dict[str, float]:
        raise RuntimeError("boom")

    monkeypatch.setattr(optuna.importance, "get_param_importances", broken)
    got = summarize(study(*(trial(i, values=[float(i)]) for i in range(3))), 3)
    assert got.importances is None and got.importance_note == "Optuna could not compute them: RuntimeError: boom"


def test_several_objectives_give_the_pareto_front() -> None:
    s = study(
        trial(0, values=[1.0, 5.0], completed_after_s=1),  # on the front
        trial(1, values=[2.0, 9.0], completed_after_s=2),  # on the front
        trial(2, values=[3.0, 4.0], completed_after_s=3),  # dominated by trial 1
        trial(3, values=[0.5, 1.0], completed_after_s=4),  # on the front
        trial(4, TrialState.PRUNED),
        directions=("minimize", "maximize"),
    )
    got = summarize(s, 8, objectives=["loss", "acc"])
    assert got.multi and got.directions == ("minimize", "maximize")
    assert [b.trial for b in got.best] == [3, 0, 1]  # best first by the first objective
    assert [h.best for h in got.history] == [(1.0, 5.0), (1.0, 9.0), (1.0, 9.0), (0.5, 9.0)]  # each objective's own
    assert got.importances is not None and len(got.importances) == 2
    assert [line.split(":")[0] for line in importance_lines(got)] == ["importance for loss", "importance for acc"]
    assert study_line(got).endswith("Pareto front of 3 (trials 3, 0, 1)")


def test_no_completed_trial_and_unknown_trial_numbers() -> None:
    got = summarize(study(trial(0, TrialState.RUNNING)), 4)
    assert got.best == () and got.history == ()
    assert study_line(got) == "study: 0/4 done · 1 running · 0 pruned · no trial completed yet"
    by_hand = summarize(study(trial(None, values=[0.1])), None)
    assert by_hand.best[0].trial is None and by_hand.history[0].trial is None
    assert study_line(by_hand).endswith("best value 0.1 (Optuna trial #0)")  # unnamed objective: "value"


def test_to_dict_is_strict_json() -> None:
    s = study(
        trial(0, values=[math.inf], completed_after_s=1),
        trial(1, values=[0.25], completed_after_s=2),
        trial(2, TrialState.PRUNED),
        directions=("minimize",),
    )
    doc = summarize(s, 3, objectives=["loss"]).to_dict()
    text = json.dumps(doc, allow_nan=False)  # refuses NaN and Infinity: strict JSON only
    back = json.loads(text)
    assert back["counts"] == {"complete": 2, "running": 0, "pruned": 1, "failed": 0, "waiting": 0}
    assert back["finished"] == 3 and back["target"] == 3 and back["study_name"] == "s1"
    assert back["best"] == [
        {"number": 1, "trial": 1, "values": [0.25], "params": {"lr": 0.02, "layers": 2, "act": "relu"}}
    ]
    assert back["history"][0] == {"number": 0, "trial": 0, "values": [None], "best": [None]}
    assert back["history"][1]["best"] == [0.25]


class FakeStore:
    """What `load` reads of a run: its launch.json."""

    def __init__(self, launch: dict[str, Any]) -> None:
        self.launch = launch

    def read_json(self, name: str) -> Any:
        assert name == "launch.json"
        return self.launch


def test_load_opens_the_study_only_for_a_search(monkeypatch: pytest.MonkeyPatch) -> None:
    from slurmflow.search import study as engine

    opened: list[object] = []
    s = study(trial(0, values=[0.5]), trial(1, values=[0.25]))

    def open_study(store: object) -> optuna.Study:
        opened.append(store)
        return s

    monkeypatch.setattr(engine, "open_study", open_study)
    launch = {"experiment": "x", "objective": [{"metric": "loss", "mode": "min"}]}
    plain = cast(RunStore, FakeStore(launch))
    assert study_view.load(plain) is None and opened == []
    search = cast(RunStore, FakeStore({**launch, "search": {"n_trials": 7}}))
    got = study_view.load(search)
    assert isinstance(got, StudySummary) and opened == [search]
    assert (got.target, got.objectives, got.best[0].trial) == (7, ("loss",), 1)

    def unreadable(store: object) -> optuna.Study:
        raise OSError("database is locked")

    monkeypatch.setattr(engine, "open_study", unreadable)
    with pytest.raises(study_view.StudyUnavailable, match="OSError: database is locked"):
        study_view.load(search)
