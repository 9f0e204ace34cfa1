"""The supervisor of a local run (`slurmflow supervise RUN_DIR`, started detached by the local
engine): it steps the engine (backends.local_run) and applies the run's retry policy with a
monitor tick every few seconds, as `slurmflow monitor` does on Slurm."""

from __future__ import annotations

import time
from collections.abc import Callable

from slurmflow.backends.local_run import LocalRun, supervise
from slurmflow.monitoring.monitor import one_line, tick
from slurmflow.results import tracking
from slurmflow.rundir.events import TickFailed
from slurmflow.rundir.store import RunStore

TICK_EVERY_S = 5.0
SEARCH_TICK_EVERY_S = 1.0  # a search's next trial is asked for by a tick: a GPU idles until then


def run(store: RunStore, *, tick_every_s: float = TICK_EVERY_S, clock: Callable[[], float] = time.monotonic) -> int:
    backend = LocalRun(store.local_dir)
    last = clock()
    # A search asks for its next trials in a tick: the supervisor waits for the search to end.
    searching = store.has_search()
    if searching:
        tick_every_s = min(tick_every_s, SEARCH_TICK_EVERY_S)

    def on_step() -> bool:
        nonlocal last, searching
        if clock() - last < tick_every_s:
            return searching
        last = clock()
        try:
            result = tick(store, backend)
            searching = searching and not result.done
        except Exception as exc:  # the supervisor outlives a failed tick, as the monitor job does
            store.append(TickFailed(task="supervisor", node="monitor", why=one_line(exc), t=time.time()))
        return searching

    code = supervise(store.local_dir, on_step=on_step)
    # The engine went idle between ticks: the run's last MLflow tracking (where its experiment asks
    # for it) is done here. Not a whole tick: a retry decided now would have no supervisor to run it.
    warning = tracking.after_tick(store, backend, done=True, now=time.time())
    if warning:
        store.append(TickFailed(task="mlflow", node="monitor", why=warning, t=time.time()))
    return code
