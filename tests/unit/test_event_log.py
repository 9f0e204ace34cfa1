"""The run's event log: every append is one write that fits PIPE_BUF (never interleaved with a
task's append on another node), and a line that cannot be read is reported, not dropped."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from slurmflow.status import summarise
from slurmflow.store import PIPE_BUF, RunStore, fit_line
from tests.unit.test_status import PLAN


def test_a_long_event_is_cut_to_one_pipe_buf_line() -> None:
    event = {"event": "action_failed", "task": "5_1", "why": "x" * 10_000}
    line = fit_line(event)
    assert len(line.encode()) <= PIPE_BUF and line.endswith("\n") and line.count("\n") == 1
    back = json.loads(line)
    assert back["task"] == "5_1" and back["why"].endswith("... (10000 characters)")
    small = {"event": "submitted", "node": "a", "job_id": "7"}
    assert json.loads(fit_line(small)) == small


def _append_many(root: str, who: int) -> None:
    store = RunStore(Path(root))
    for i in range(50):
        store.append({"event": "gpu_idle", "task": f"{who}_{i}", "why": "w" * 3000})


def test_concurrent_appends_all_read_back(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    procs = [multiprocessing.Process(target=_append_many, args=(str(tmp_path / "run"), n)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    events, bad = RunStore(tmp_path / "run").read_events()
    assert bad == [] and len(events) == 200
    assert {e["task"] for e in events} == {f"{n}_{i}" for n in range(4) for i in range(50)}


def test_unreadable_lines_are_reported_by_status(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps({"event": "submitted", "node": "train.0", "job_id": "10", "t": 1.0})
    (run / "events.jsonl").write_text(f'{good}\n{{"event": "subm\n\n[1, 2]\n{good}\n')
    store = RunStore(run)
    events, bad = store.read_events()
    assert len(events) == 2 and bad == [2, 4]
    assert store.state().submitted == {"train.0": "10"}
    st = summarise("r", PLAN, store.state().submitted, [], logs_dir="/l", started=0, now=1, unreadable=bad)
    assert st.notes[0].startswith("2 line(s) of the run's events.jsonl could not be read (line 2, 4)")
