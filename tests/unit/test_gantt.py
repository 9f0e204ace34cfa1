"""The timeline's segments and its terminal chart, from hand-built results (no run directory)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console, Group
from rich.text import Text

from slurmflow.model import Edge, JobNode, Plan, Stage, StageDep
from slurmflow.results import gantt
from slurmflow.results.collect import RunResults, TaskResult, TrialResult
from slurmflow.slurm.types import Attempt, DepKind, JobState

T0 = 1_700_000_000.0
NOW = T0 + 1000


def plan() -> Plan:
    stages = {
        "prep": Stage("prep", command="true"),
        "train": Stage("train", command="true", per_trial=True, deps=(StageDep(DepKind.AFTER_OK, "prep"),)),
        "report": Stage("report", command="true", deps=(StageDep(DepKind.AFTER_ANY, "train"),)),
    }
    nodes = (
        JobNode("prep", "prep"),
        JobNode("train.0", "train", (Edge(DepKind.AFTER_OK, "prep"),), size=3, array=True),
        JobNode("report", "report", (Edge(DepKind.AFTER_ANY, "train.0"),)),
    )
    return Plan("exp", stages, nodes, 3, 0.0)


def task(stage: str, trial: int | None, *attempts: Attempt) -> TaskResult:
    state = attempts[-1].state.name if attempts else "PENDING"
    job = attempts[-1].job_id if attempts else "-"
    return TaskResult(stage, "train.0" if trial is not None else stage, trial, job, state, attempts)


def run(trials: dict[int, list[TaskResult]], singles: list[TaskResult]) -> RunResults:
    rows = tuple(
        TrialResult(i, f"t{i}", (f"seed={i}",), tasks[-1].state, {}, tuple(tasks), now=NOW)
        for i, tasks in sorted(trials.items(), reverse=True)  # ranked order is not row order
    )
    return RunResults("exp-1", "exp", Path("/nowhere"), (), rows, tuple(singles), plan(), "accounting", NOW)


def a(job: str, state: JobState, submit: float | None, start: float | None, end: float | None, node: str = "n1",
      restart: int = 0) -> Attempt:  # fmt: skip
    return Attempt(job, state, submit, start, end, node, 0, restart)


def campaign() -> RunResults:
    """prep done; train[0] requeued once then done; train[1] failed; train[2] running now;
    report still queued."""
    return run(
        {
            0: [
                task(
                    "train",
                    0,
                    a("2_0", JobState.REQUEUED, T0 + 10, T0 + 20, T0 + 100, "n1"),
                    a("2_0", JobState.COMPLETED, T0 + 100, T0 + 150, T0 + 400, "n2", 1),
                )
            ],
            1: [task("train", 1, a("2_1", JobState.FAILED, T0 + 10, T0 + 30, T0 + 60, "n3"))],
            2: [task("train", 2, a("2_2", JobState.RUNNING, T0 + 10, T0 + 500, None, "n4"))],
        },
        [
            task("prep", None, a("1", JobState.COMPLETED, T0, T0 + 1, T0 + 9, "n0")),
            task("report", None, a("3", JobState.PENDING, T0 + 10, None, None, "")),
        ],
    )


def test_every_attempt_has_a_pending_and_a_running_segment_in_plan_order() -> None:
    segs = gantt.segments(campaign())
    rows = {s.label: s.row for s in segs}
    assert rows == {"prep": 0, "train[0]": 1, "train[1]": 2, "train[2]": 3, "report": 4}
    first, second = [s for s in segs if s.label == "train[0]" and s.kind == gantt.RUNNING]
    assert (first.attempt, first.state, first.requeued, first.node) == (1, "REQUEUED", True, "n1")
    assert (second.attempt, second.state, second.requeued, second.node) == (2, "COMPLETED", False, "n2")
    assert (first.start, first.end, second.start, second.end) == (T0 + 20, T0 + 100, T0 + 150, T0 + 400)
    pending = [(s.start, s.end) for s in segs if s.label == "train[0]" and s.kind == gantt.PENDING]
    assert pending == [(T0 + 10, T0 + 20), (T0 + 100, T0 + 150)]  # queued again after the requeue
    assert all(s.job_id == "2_0" for s in segs if s.label == "train[0]")


def test_open_segments_end_now() -> None:
    segs = gantt.segments(campaign())
    running = next(s for s in segs if s.label == "train[2]" and s.kind == gantt.RUNNING)
    assert (running.end, running.open, running.state) == (NOW, True, "RUNNING")
    queued = [s for s in segs if s.label == "report"]
    assert [(s.kind, s.start, s.end, s.open) for s in queued] == [(gantt.PENDING, T0 + 10, NOW, True)]


def test_a_task_cancelled_while_queued_has_only_its_wait() -> None:
    r = run({0: [task("train", 0, a("2_0", JobState.CANCELLED, T0, None, T0 + 50))]}, [])
    assert [(s.kind, s.start, s.end, s.state) for s in gantt.segments(r)] == [(gantt.PENDING, T0, T0 + 50, "CANCELLED")]


def test_without_submit_times_only_running_segments() -> None:
    """The tasks' status files know when a task ran, not when it was queued."""
    r = run({0: [task("train", 0, a("2_0", JobState.COMPLETED, None, T0, T0 + 5))], 1: [task("train", 1)]}, [])
    assert [(s.kind, s.label) for s in gantt.segments(r)] == [(gantt.RUNNING, "train[0]")]


def test_a_stale_earlier_attempt_counts_as_requeued() -> None:
    r = run(
        {
            0: [
                task(
                    "train",
                    0,
                    a("2_0", JobState.RUNNING, None, T0, T0 + 5),
                    a("2_0", JobState.FAILED, None, T0 + 9, T0 + 20),
                )
            ]
        },
        [],
    )
    assert [(s.state, s.group) for s in gantt.segments(r)] == [("REQUEUED", "requeued"), ("FAILED", "failed")]


def test_colour_groups() -> None:
    assert gantt.colour_group("COMPLETED") == "completed"
    for state in ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
        assert gantt.colour_group(state) == "failed"
    assert gantt.colour_group("NODE_FAIL", requeued=True) == "requeued"
    assert gantt.colour_group("RUNNING") == "running"
    assert gantt.colour_group("CANCELLED") == "cancelled"


def render(r: RunResults, width: int, limit: int) -> tuple[str, list[Text]]:
    chart = gantt.terminal(r, width=width, limit=limit)
    console = Console(width=width, record=True, file=io.StringIO(), color_system="truecolor")
    console.print(chart)
    assert isinstance(chart, Group)
    return console.export_text(), [x for x in chart.renderables if isinstance(x, Text)]


def styles(row: Text, char: str) -> set[str]:
    return {str(span.style) for span in row.spans if char in row.plain[span.start : span.end]}


def test_terminal_chart_draws_one_row_per_task_with_its_node() -> None:
    text, lines = render(campaign(), 100, 40)
    assert all(len(line) <= 100 for line in text.splitlines()), text
    rows = {line.plain.split()[0]: line for line in lines if line.plain.split() and line.plain.split()[0] in
            {"prep", "train[0]", "train[1]", "train[2]", "report"}}  # fmt: skip
    assert set(rows) == {"prep", "train[0]", "train[1]", "train[2]", "report"}
    assert rows["train[0]"].plain.rstrip().endswith("n2")  # the node of the last attempt
    assert styles(rows["train[0]"], gantt.BAR) == {"yellow", "green"}  # the requeued run, then the one that completed
    assert styles(rows["train[1]"], gantt.BAR) == {"red"}
    assert styles(rows["train[2]"], gantt.BAR) == {"blue"}
    assert gantt.WAIT in rows["report"].plain and gantt.BAR not in rows["report"].plain
    assert "┬" in text and "16m40s" in text  # the axis spans the whole campaign: T0 .. NOW
    assert "not shown" not in text


def test_terminal_requeues_are_separate_bars() -> None:
    _, lines = render(campaign(), 120, 40)
    row = next(line for line in lines if line.plain.startswith("train[0]"))
    bars = [(span.start, str(span.style)) for span in row.spans if row.plain[span.start] == gantt.BAR]
    yellow = [i for i, s in bars if s == "yellow"]
    green = [i for i, s in bars if s == "green"]
    assert yellow and green and max(yellow) < min(green)
    between = row.plain[max(yellow) + 1 : min(green)]
    assert between and set(between) == {gantt.WAIT}  # queued again in between


def test_terminal_limit_says_how_many_rows_are_left_out() -> None:
    text, _ = render(campaign(), 80, 2)
    assert "train[1]" not in text
    assert "3 more tasks not shown (limit 2)" in text


def test_terminal_with_nothing_started() -> None:
    text, _ = render(run({0: [task("train", 0)]}, []), 80, 10)
    assert "no task has started yet" in text
    assert "(pending)" in text


def test_duration() -> None:
    assert [gantt.duration(s) for s in (0.4, 12, 185, 7800, 90000)] == ["0.4s", "12s", "3m05s", "2h10m", "1d1h"]
