"""One backoff rule for asking Slurm again: doubling waits up to a cap, within a patience."""

from __future__ import annotations

import pytest

from slurmflow.slurm.backoff import Backoff


class Down(Exception):
    pass


def test_waits_double_up_to_the_cap_then_it_answers() -> None:
    waits: list[float] = []
    seen: list[int] = []

    def attempt(tries: int) -> str:
        seen.append(tries)
        if tries < 6:
            raise Down
        return "ok"

    told: list[float] = []
    got = Backoff(start=1, cap=8, patience=100, sleep=waits.append).run(
        attempt, transient=(Down,), on_wait=lambda d, e: told.append(d)
    )
    assert got == "ok" and seen == [0, 1, 2, 3, 4, 5, 6]
    assert waits == told == [1, 2, 4, 8, 8, 8]


def test_past_its_patience_the_error_is_raised() -> None:
    waits: list[float] = []

    def attempt(tries: int) -> str:
        raise Down

    with pytest.raises(Down):
        Backoff(start=1, cap=30, patience=20, sleep=waits.append).run(attempt, transient=(Down,))
    assert waits == [1, 2, 4, 8] and sum(waits) <= 20  # a 16 s wait would pass the 20 s


def test_other_errors_are_not_waited_for() -> None:
    waits: list[float] = []

    def attempt(tries: int) -> str:
        raise ValueError("for good")

    with pytest.raises(ValueError, match="for good"):
        Backoff(sleep=waits.append).run(attempt, transient=(Down,))
    assert waits == []
