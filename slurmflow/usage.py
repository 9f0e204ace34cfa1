"""GPU use of a run, read from the sample files its tasks wrote (see gpustats for the format)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurmflow import gpustats
from slurmflow.gpustats import SampleLog, Summary
from slurmflow.store import RunStore


@dataclass(frozen=True)
class TaskGpu:
    node: str
    stage: str
    trial: int | None  # trial index, for per-trial stages
    task: int | None  # array index within its node
    job_id: str
    gpus: int
    path: Path
    log: SampleLog | None  # None: no samples yet (pending, or sampling off)
    summary: Summary | None
    state: str | None = None  # as the task recorded it (running, completed, failed, cancelled)


@dataclass(frozen=True)
class RunGpu:
    run_id: str
    tasks: tuple[TaskGpu, ...]
    stages: dict[str, Summary]
    campaign: Summary
    events: tuple[dict[str, Any], ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "campaign": self.campaign.to_dict(),
            "stages": {k: v.to_dict() for k, v in self.stages.items()},
            "tasks": [
                {
                    "node": t.node,
                    "stage": t.stage,
                    "trial": t.trial,
                    "job_id": t.job_id,
                    "state": t.state,
                    "samples_file": str(t.path),
                    **(t.summary.to_dict() if t.summary else {"samples": 0}),
                }
                for t in self.tasks
            ],
            "idle_events": list(self.events),
        }


def _task_files(store: RunStore) -> Iterator[tuple[str, str, int | None, int | None, str, int, Path]]:
    plan, state = store.plan(), store.state()
    trial_ids: dict[int, str] | None = None
    for node in plan.nodes:
        stage = plan.stages[node.stage]
        gpus = stage.resources.gpus
        if not gpus:
            continue
        if not node.array:
            yield (
                node.key,
                stage.name,
                None,
                None,
                state.job_of(node.key, None) or "-",
                gpus,
                store.path("stages", stage.name, f"gpu.{stage.name}.csv"),
            )
            continue
        if trial_ids is None:
            trial_ids = {t.index: t.id for t in store.trials()}
        for task in range(node.size):
            index = node.offset + task
            job_id = state.job_of(node.key, task)
            label = f"{job_id}_{task}" if job_id else "-"
            path = store.path("trials", trial_ids[index], f"gpu.{stage.name}.csv")
            yield node.key, stage.name, index, task, label, gpus, path


def _wall(status_path: Path, segments: int, now: float) -> tuple[float | None, str | None]:
    """The task's wall time from its own status file (one segment only: a requeued task's status
    describes its last run, and its samples span every run)."""
    try:
        doc = json.loads(status_path.read_text())
    except (OSError, ValueError):
        return None, None
    state = doc.get("state")
    if segments != 1 or "started" not in doc:
        return None, state
    return max(0.0, float(doc.get("ended") or now) - float(doc["started"])), state


def collect(store: RunStore, *, progress: Callable[[int], None] | None = None) -> RunGpu:
    now = time.time()
    tasks = []
    for n, (node, stage, trial, task, job, gpus, path) in enumerate(_task_files(store)):
        log = summary = None
        state = None
        if path.exists():
            log = gpustats.parse(path.read_text())
            wall, state = _wall(path.with_name(f"{stage}.status.json"), len(log.segments), now)
            summary = gpustats.summarise_task(log, gpus=gpus, wall_s=wall)
        tasks.append(TaskGpu(node, stage, trial, task, job, gpus, path, log, summary, state))
        if progress:
            progress(n + 1)
    stages: dict[str, Summary] = {}
    for stage in dict.fromkeys(t.stage for t in tasks):
        stages[stage] = gpustats.combine(t.summary for t in tasks if t.stage == stage and t.summary)
    campaign = gpustats.combine(t.summary for t in tasks if t.summary)
    events = tuple(e for e in store.events() if e.get("event") == "gpu_idle")
    return RunGpu(store.run_id, tuple(tasks), stages, campaign, events)
