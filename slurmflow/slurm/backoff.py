"""Asking Slurm again while it cannot answer: one rule for every caller that must not give up at
the first refusal (a launch's sbatch, the monitor job submitting its successor).

A controller that restarts, or is too busy to answer, comes back within seconds to minutes; asking
in a tight loop only adds to its load. So: wait `start`, then twice as long each time up to `cap`,
and give up once the waits would pass `patience` in all. Waits are counted, not read off a clock,
so tests drive it with a sleep that records instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    start: float = 1.0
    cap: float = 30.0
    patience: float = 600.0
    sleep: Callable[[float], None] = time.sleep

    def run(
        self,
        attempt: Callable[[int], T],
        *,
        transient: tuple[type[BaseException], ...],
        on_wait: Callable[[float, BaseException], None] | None = None,
    ) -> T:
        """`attempt(tries_so_far)` until it returns. A transient error is waited out while the
        patience lasts, then raised; any other error is raised at once. Callers whose request may
        have reached Slurm look it up first when `tries_so_far` > 0."""
        delay, waited, tries = self.start, 0.0, 0
        while True:
            try:
                return attempt(tries)
            except transient as exc:
                if waited + delay > self.patience:
                    raise
                if on_wait is not None:
                    on_wait(delay, exc)
            self.sleep(delay)
            waited, delay, tries = waited + delay, min(delay * 2, self.cap), tries + 1
