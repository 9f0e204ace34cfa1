"""A run's timeline: every attempt of every task as a pending and a running segment.

The segments are pure data, shared by the terminal chart of `slurmflow status --gantt` (here) and
the report's interactive timeline (results/report.py), so both draw the same thing: where a task
waited in the queue, where it ran, on which node, and what ended each attempt (a requeued
attempt is a separate bar on its task's row).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from rich.console import Group, RenderableType
from rich.text import Text

from slurmflow.results.collect import RunResults, TaskResult
from slurmflow.slurm.types import Attempt, JobState

PENDING = "pending"
RUNNING = "running"

# Colour groups: what a reader needs to tell apart at a glance. Every failure a user must look
# at is red; a requeued attempt (the task carried on) is yellow, whatever ended it.
FAILURES = frozenset(
    {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}
)
ACTIVE = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "STAGE_OUT", "SUSPENDED", "STOPPED", "RESIZING"})
# Terminal colours (rich style names) and the report's (CSS), per group.
TERMINAL_COLOURS = {
    "completed": "green",
    "failed": "red",
    "requeued": "yellow",
    "running": "blue",
    "cancelled": "grey50",
    "other": "magenta",
}
HTML_COLOURS = {
    "completed": "#2ca02c",
    "failed": "#d62728",
    "requeued": "#e8a400",
    "running": "#1f77b4",
    "cancelled": "#8c8c8c",
    "other": "#9467bd",
}
BAR = "█"
WAIT = "░"


class Segment(NamedTuple):
    """One stretch of one attempt: queued (`pending`, submit..start) or `running` (start..end).
    A named tuple: a campaign of 10,000 trials has tens of thousands, made in one report."""

    row: int  # the task's row: tasks in plan order (stages topologically, trials by number)
    label: str  # "train[3]", or "prep" for a stage that runs once
    stage: str
    trial: int | None
    job_id: str
    attempt: int  # 1 for the first run of the task, 2 after one requeue, ...
    kind: str  # PENDING or RUNNING
    start: float  # epoch seconds
    end: float  # epoch seconds; `now` for a segment still open
    state: str  # what ended the attempt: REQUEUED (or NODE_FAIL, ...) for a requeued one, else the task's state
    requeued: bool  # another attempt followed this one
    node: str | None
    open: bool = False  # still pending or running at `now`

    @property
    def group(self) -> str:
        return colour_group(self.state, self.requeued)


def colour_group(state: str, requeued: bool = False) -> str:
    """The colour group of an attempt that ended (or is) in `state`."""
    if requeued or state == "REQUEUED":
        return "requeued"
    if state == "COMPLETED":
        return "completed"
    if state in FAILURES:
        return "failed"
    if state in ACTIVE:
        return "running"
    if state == "CANCELLED":
        return "cancelled"
    return "other"


def label(task: TaskResult) -> str:
    return task.stage if task.trial is None else f"{task.stage}[{task.trial}]"


def ordered_tasks(results: RunResults) -> list[TaskResult]:
    """Every task in plan order: a Gantt chart reads top to bottom as the campaign ran."""
    stage_pos: dict[str, int] = {}
    for node in results.plan.nodes:
        stage_pos.setdefault(node.stage, len(stage_pos))
    tasks = results.tasks
    for t in tasks:
        stage_pos.setdefault(t.stage, len(stage_pos))
    return sorted(tasks, key=lambda t: (stage_pos[t.stage], -1 if t.trial is None else t.trial))


def _ended_by(a: Attempt, last: bool) -> str:
    # A stale record of an earlier attempt (still PENDING or RUNNING in a status file) was requeued.
    if last or a.state.final or a.state is JobState.REQUEUED:
        return a.state.name
    return JobState.REQUEUED.name


def task_segments(task: TaskResult, row: int, now: float) -> list[Segment]:
    """A task's segments, oldest attempt first: pending where the submit time is known, running
    where it started (an open segment ends at `now`)."""
    out: list[Segment] = []
    name = label(task)
    for i, a in enumerate(task.attempts):
        last = i == len(task.attempts) - 1
        spans: list[tuple[str, float, float, bool]] = []
        if a.submit is not None:
            if a.start is not None:
                spans.append((PENDING, a.submit, a.start, False))
            elif a.end is not None or not a.state.final:
                # Never started: cancelled while queued, or still waiting now.
                spans.append((PENDING, a.submit, now if a.end is None else a.end, a.end is None))
        if a.start is not None:
            running = a.end is None and not a.state.final
            spans.append((RUNNING, a.start, now if running else (a.end or a.start), running))
        state = _ended_by(a, last)
        for kind, start, end, still in spans:
            seg = Segment(
                row,
                name,
                task.stage,
                task.trial,
                a.job_id,
                i + 1,
                kind,
                start,
                max(start, end),
                state,
                not last,
                a.node,
                still,
            )
            out.append(seg)
    return out


def segments(results: RunResults) -> list[Segment]:
    """Every attempt of every task, as segments in row order (oldest attempt first in a row)."""
    out: list[Segment] = []
    for row, task in enumerate(ordered_tasks(results)):
        out.extend(task_segments(task, row, results.now))
    return out


# --- the terminal chart ---------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """A short duration for axis ticks: 0.4s, 12s, 3m05s, 2h10m, 3d4h."""
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s".replace(".0s", "s")
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600)}h"


def _axis(t0: float, t1: float, width: int, pad: int) -> list[Text]:
    """A rule with a tick every ~12 columns and the elapsed time under each tick."""
    ticks = max(1, min(6, width // 12))
    rule = ["─"] * width
    labels = [" "] * (width + 12)
    for k in range(ticks + 1):
        col = min(width - 1, round(k * (width - 1) / ticks))
        rule[col] = "┬"
        text = duration((t1 - t0) * k / ticks)
        at = max(0, min(col - len(text) // 2, width - len(text)))
        if k == ticks:
            at = max(0, width - len(text))
        if all(c == " " for c in labels[max(0, at - 1) : at + len(text) + 1]):
            labels[at : at + len(text)] = text
    return [Text(" " * pad + "".join(rule), style="dim"), Text(" " * pad + "".join(labels).rstrip(), style="dim")]


def terminal(results: RunResults, *, width: int, limit: int) -> RenderableType:
    """The timeline as text: one row per task (the first `limit`), pending as '░', each attempt's
    run as a bar coloured by what ended it, the node at the end of the row, a time axis below."""
    tasks = ordered_tasks(results)
    shown = tasks[: max(0, limit)]
    rows = [task_segments(t, i, results.now) for i, t in enumerate(shown)]
    flat = [s for r in rows for s in r]
    lines: list[RenderableType] = []
    if not flat:
        lines.append(Text(f"{results.run_id}: no task has started yet", style="dim"))
    label_w = min(28, max([len(label(t)) for t in shown] + [4]))
    node_w = min(16, max([len(s.node or "") for s in flat] + [0]))
    bar_w = max(10, width - label_w - node_w - 3)
    t0 = min((s.start for s in flat), default=results.now)
    t1 = max([s.end for s in flat] + [t0 + 1e-3])
    scale = bar_w / (t1 - t0)

    def col(t: float) -> int:
        return min(bar_w - 1, max(0, int((t - t0) * scale)))

    if flat:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0))
        lines.append(Text(f"{results.run_id}: {len(tasks)} tasks from {start}, over {duration(t1 - t0)}", style="bold"))
    for task, segs in zip(shown, rows, strict=True):
        cells: list[tuple[str, str]] = [(" ", "")] * bar_w
        for s in segs:
            lo, hi = col(s.start), col(s.end)
            colour = TERMINAL_COLOURS[s.group]
            if s.kind == PENDING:
                for c in range(lo, hi + 1):
                    if cells[c][0] == " ":
                        cells[c] = (WAIT, "grey62")
            else:
                for c in range(lo, max(lo, hi) + 1):
                    cells[c] = (BAR, colour)
        row = Text(label(task)[:label_w].ljust(label_w) + " ")
        if not segs:  # never started, and no submit time known: say why the row is empty
            row.append(f"({task.state.lower().replace('_', ' ')})"[:bar_w], style="dim")
        else:
            for ch, style in cells:
                row.append(ch, style=style)
            node = next((s.node for s in reversed(segs) if s.node), "")
            row.append(" " + node[:node_w], style="dim")
        lines.append(row)
    if flat:
        lines.extend(_axis(t0, t1, bar_w, label_w + 1))
    if len(tasks) > len(shown):
        lines.append(Text(f"... {len(tasks) - len(shown)} more tasks not shown (limit {limit})", style="dim"))
    lines.append(legend(flat))
    return Group(*lines)


def legend(flat: Sequence[Segment]) -> Text:
    """The colours this chart uses, pending first."""
    out = Text()
    if any(s.kind == PENDING for s in flat):
        out.append(WAIT, style="grey62")
        out.append(" pending  ")
    used = {s.group for s in flat if s.kind == RUNNING} or {"completed"}
    for group in TERMINAL_COLOURS:
        if group in used:
            out.append(BAR, style=TERMINAL_COLOURS[group])
            out.append(f" {group}  ")
    return out
