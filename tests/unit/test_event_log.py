"""The run's event log: every append is one write that fits PIPE_BUF (never interleaved with a
task's append on another node), and a line that cannot be read is reported, not dropped."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from slurmflow.backends import FakeSlurm
from slurmflow.monitoring.observe import campaign
from slurmflow.monitoring.status import summarise, to_dict
from slurmflow.rundir.events import ActionFailed, Event, GpuIdle, Requeued, Submitted
from slurmflow.rundir.store import PIPE_BUF, RunStore, fit_line, plan_to_dict
from tests.unit.test_status import PLAN


def test_a_long_event_is_cut_to_one_pipe_buf_line() -> None:
    event = ActionFailed(task="5_1", node="train.0", action="rewire", why="x" * 10_000, t=1.0)
    line = fit_line(event)
    assert len(line) <= PIPE_BUF and line.endswith(b"\n") and line.count(b"\n") == 1
    back = json.loads(line)
    assert back["task"] == "5_1" and back["why"].endswith("... (10000 characters)")
    small = Submitted(node="a", job_id="7", t=1.0)
    assert json.loads(fit_line(small)) == {
        "event": "submitted",
        "node": "a",
        "job_id": "7",
        "reconciled": False,
        "t": 1.0,
        "v": 1,
    }


def _event(who: int, i: int) -> Event:
    """Of several kinds, some longer than PIPE_BUF before they are cut (a task's long `why`)."""
    task = f"{who}_{i}"
    if i % 3 == 0:
        return GpuIdle(task=task, node="train.0", action="warn", why="w" * (3000 + 50 * i), t=float(i))
    if i % 3 == 1:
        return Requeued(task=task, node="train.0", why="r" * 100, exclude=f"gpu{who}", t=float(i))
    return Submitted(node=f"n{who}.{i}", job_id=str(1000 * who + i), t=float(i))


def _append_many(root: str, who: int) -> None:
    store = RunStore(Path(root))
    for i in range(150):
        store.append(_event(who, i))
    store.append({"event": "gpu_idle", "task": f"{who}_dict", "node": "train.0", "action": "warn", "why": "d" * 3500})


def test_concurrent_appends_all_read_back(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    procs = [multiprocessing.Process(target=_append_many, args=(str(tmp_path / "run"), n)) for n in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    raw = (tmp_path / "run" / "events.jsonl").read_bytes()
    assert raw.endswith(b"\n") and all(0 < len(line) < PIPE_BUF for line in raw.split(b"\n")[:-1])
    got, bad = RunStore(tmp_path / "run").read_events()
    assert bad == [] and len(got) == 6 * 151
    want = [_event(n, i) for n in range(6) for i in range(150)]
    short = [e for e in want if not isinstance(e, GpuIdle)]  # the idle ones were cut to fit
    assert set(short) <= set(got)
    assert {e.task for e in got if isinstance(e, GpuIdle)} == {
        f"{n}_{i}" for n in range(6) for i in range(0, 150, 3)
    } | {f"{n}_dict" for n in range(6)}
    for n in range(6):  # one process's lines stay in its order
        order = [int(e.job_id) for e in got if isinstance(e, Submitted) and e.node.startswith(f"n{n}.")]
        assert order == sorted(order) and len(order) == 50


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


def test_status_shows_lines_of_an_unknown_kind_or_a_wrong_type(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "plan.json").write_text(json.dumps(plan_to_dict(PLAN)))
    lines = [
        {"event": "submitted", "node": "train.0", "job_id": "10", "t": 5.0},
        {"event": "submited", "node": "train.1", "job_id": "11", "t": 6.0},  # a kind no writer has
        {"event": "submitted", "node": "report", "job_id": 12, "t": 7.0},  # a number for a job id
        {"event": "gave_up", "node": "train.0", "task": "10_1", "why": "exit 3", "t": 8.0},
    ]
    (run / "events.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    st = campaign(RunStore(run), FakeSlurm())
    assert st.notes[0].startswith("2 line(s) of the run's events.jsonl could not be read (line 2, 3)")
    assert [a.kind for a in st.actions] == ["gave_up"] and st.not_submitted == ("train.1", "report")
    assert st.elapsed_s > 0  # from the first event's time
    assert to_dict(st)["actions"] == [
        {"event": "gave_up", "t": 8.0, "v": 1, "task": "10_1", "node": "train.0", "why": "exit 3"}
    ]
