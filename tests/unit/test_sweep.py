from __future__ import annotations

from slurmflow.experiment import sweep
from slurmflow.experiment.sweep import Axis


def test_expand_in_multirun_order_with_stable_ids() -> None:
    axes = [Axis("model.lr", ("0.1", "0.3")), Axis("seed", ("0", "1", "2"))]
    trials = list(sweep.expand(axes))
    assert [t.overrides for t in trials[:3]] == [
        ("model.lr=0.1", "seed=0"),
        ("model.lr=0.1", "seed=1"),
        ("model.lr=0.1", "seed=2"),
    ]
    assert [t.index for t in trials] == list(range(6)) and sweep.count(axes) == 6
    assert len({t.id for t in trials}) == 6
    # Order of keys does not change an id.
    assert sweep.trial_id(["seed=0", "model.lr=0.1"]) == trials[0].id


def test_no_axes_is_one_trial() -> None:
    assert [t.overrides for t in sweep.expand([])] == [()]


def test_representatives_one_per_group_choice() -> None:
    axes = [
        Axis("model", ("small", "big"), group=True),
        Axis("lr", ("1", "2", "3")),
        Axis("opt", ("sgd", "adam"), group=True),
    ]
    reps = sweep.representatives(axes)
    assert len(reps) == 4
    assert reps[0] == ("model=small", "opt=sgd", "lr=1")
    assert sweep.representatives([Axis("lr", ("1", "2"))]) == [("lr=1",)]


def test_hundred_thousand_trials_expand_lazily() -> None:
    axes = [Axis("a", tuple(map(str, range(100)))), Axis("b", tuple(map(str, range(1000))))]
    it = sweep.expand(axes)
    first = next(it)
    assert first.overrides == ("a=0", "b=0") and sweep.count(axes) == 100_000
