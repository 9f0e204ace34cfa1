"""The noisy Branin job of the search examples (jobs/noisy2d.py): the objective, its seeding and
the intermediate values a pruner reads. Pure functions only, no sleeping."""

from __future__ import annotations

import itertools
import math

import pytest

from jobs.noisy2d import BRANIN_MIN, BRANIN_MINIMA, branin, curve, pruned_check, train


@pytest.mark.parametrize(("x", "y"), BRANIN_MINIMA)
def test_branin_reaches_its_known_minimum_at_each_of_the_three_points(x: float, y: float) -> None:
    assert branin(x, y) == pytest.approx(BRANIN_MIN, abs=1e-6)


def test_branin_is_never_below_its_minimum_over_the_search_domain() -> None:
    grid = [(-5 + 15 * i / 60, 15 * j / 60) for i in range(61) for j in range(61)]
    assert min(branin(x, y) for x, y in grid) >= BRANIN_MIN - 1e-9
    assert branin(-5.0, 0.0) == pytest.approx(308.129, abs=1e-3)  # the domain's worst corner


def test_the_same_point_and_seed_give_the_same_values_and_another_seed_or_point_others() -> None:
    values = curve(1.5, 4.0, noise=0.3, steps=8, seed=7)
    assert curve(1.5, 4.0, noise=0.3, steps=8, seed=7) == values
    assert curve(1.5, 4.0, noise=0.3, steps=8, seed=8)[-1] != values[-1]
    assert curve(1.5 + 1e-9, 4.0, noise=0.3, steps=8, seed=7)[-1] != values[-1]


def test_without_noise_the_final_value_is_the_function_and_the_steps_do_not_change_it() -> None:
    assert curve(2.0, 3.0, noise=0.0, steps=5, seed=0)[-1] == branin(2.0, 3.0)
    noisy = [curve(2.0, 3.0, noise=0.2, steps=n, seed=1)[-1] for n in (1, 5, 40)]
    assert noisy[0] == noisy[1] == noisy[2] != branin(2.0, 3.0)


def test_the_noise_has_the_standard_deviation_asked_for() -> None:
    draws = [curve(0.5, 0.5, noise=0.5, steps=1, seed=s)[-1] - branin(0.5, 0.5) for s in range(2000)]
    mean = sum(draws) / len(draws)
    sd = math.sqrt(sum((d - mean) ** 2 for d in draws) / (len(draws) - 1))
    assert abs(mean) < 0.05 and sd == pytest.approx(0.5, rel=0.1)


def test_intermediate_values_converge_to_the_final_value() -> None:
    smooth = curve(9.0, 9.0, noise=0.0, steps=10, seed=0)
    gaps = [v - smooth[-1] for v in smooth]
    assert all(a > b for a, b in itertools.pairwise(gaps)) and gaps[-1] == 0.0
    assert gaps[0] > 0.3 * smooth[-1]  # far enough from the end at the start to tell trials apart
    noisy = curve(9.0, 9.0, noise=0.5, steps=10, seed=3)
    assert abs(noisy[-2] - noisy[-1]) < abs(noisy[0] - noisy[-1])


def test_a_bad_trial_is_worse_than_a_good_one_at_every_step() -> None:
    good = curve(math.pi, 2.5, noise=0.1, steps=12, seed=0)
    bad = curve(-4.0, 1.0, noise=0.1, steps=12, seed=0)
    assert all(b > g for g, b in zip(good, bad, strict=True))


def test_train_reports_every_step_and_returns_the_final_value() -> None:
    seen: list[tuple[int, float]] = []
    slept: list[float] = []
    final = train(
        1.0,
        2.0,
        noise=0.1,
        steps=4,
        step_sleep=0.25,
        seed=5,
        report=lambda i, v: seen.append((i, v)),
        sleep=slept.append,
    )
    assert [i for i, _ in seen] == [1, 2, 3, 4] and slept == [0.25] * 4
    assert final == seen[-1][1] == curve(1.0, 2.0, noise=0.1, steps=4, seed=5)[-1]


def test_train_stops_once_pruned_and_returns_no_value() -> None:
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) == 2

    seen: list[int] = []
    final = train(1.0, 2.0, noise=0.1, steps=6, step_sleep=0, seed=0, report=lambda i, _v: seen.append(i), stop=stop)
    assert final is None and seen == [1, 2]


def test_the_pruned_check_never_stops_a_job_when_slurmflow_has_none() -> None:
    check = pruned_check()
    assert callable(check)
    import slurmflow

    if getattr(slurmflow, "should_stop", None) is None:
        assert check() is False
