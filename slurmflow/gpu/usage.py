"""GPU use of a run, read from the sample files its tasks wrote (see gpu/stats.py for the format)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurmflow.fsio import write_json_atomic
from slurmflow.gpu import stats as gpustats
from slurmflow.gpu.stats import Summary, Timeline
from slurmflow.model import Trial
from slurmflow.rundir import events
from slurmflow.rundir.state import RunState
from slurmflow.rundir.store import RunStore


@dataclass(frozen=True)
class TaskGpu:
    node: str
    stage: str
    trial: int | None  # trial index, for per-trial stages
    job_id: str
    gpus: int
    path: Path
    summary: Summary | None  # None: no samples yet (pending, or sampling off)
    timeline: Timeline = ([], [], [])
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


def samples_path(workdir: Path, stage: str) -> Path:
    """Where a task of `stage` keeps its GPU samples, in its trial (or stage) directory."""
    return workdir / f"gpu.{stage}.csv"


def _task_files(store: RunStore, state: RunState) -> Iterator[tuple[str, str, int | None, str, int, Path]]:
    """(node, stage, trial index, job id, GPUs, samples path) of every task of a GPU stage."""
    plan = store.plan()
    trials_by_index: dict[int, Trial] | None = None
    for node in plan.nodes:
        stage = plan.stages[node.stage]
        gpus = stage.resources.gpus
        if not gpus:
            continue
        if not node.array:
            job = state.job_of(node.key, None) or "-"
            yield node.key, stage.name, None, job, gpus, samples_path(store.path("stages", stage.name), stage.name)
            continue
        if trials_by_index is None:
            trials_by_index = {t.index: t for t in store.trials()}
        for task in range(node.size):
            index = node.offset + task
            job_id = state.job_of(node.key, task)
            label = f"{job_id}_{task}" if job_id else "-"
            yield (
                node.key,
                stage.name,
                index,
                label,
                gpus,
                samples_path(store.trial_dir(trials_by_index[index]), stage.name),
            )


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


def cache_path(samples: Path) -> Path:
    return samples.with_name(samples.name.removesuffix(".csv") + ".summary.json")


def summarise_file(path: Path, gpus: int, status_path: Path, now: float) -> tuple[Summary, Timeline, str | None]:
    """A task's summary from its samples: from the cache its wrapper left when that still
    describes the whole file, else by parsing the samples (a running task)."""
    cache = cache_path(path)
    size = path.stat().st_size
    if cache.exists():
        try:
            doc = json.loads(cache.read_text())
            if doc.get("source_size") == size:
                summary, line = gpustats.summary_from_cache(doc)
                return summary, line, _wall(status_path, 1, now)[1]
        except (OSError, ValueError, KeyError):
            pass  # a torn or older cache: parse the samples
    log = gpustats.parse(path.read_text())
    wall, state = _wall(status_path, len(log.segments), now)
    return gpustats.summarise_task(log, gpus=gpus, wall_s=wall), gpustats.timeline(log), state


def write_cache(path: Path, gpus: int, status_path: Path) -> None:
    """Called by the task wrapper once its sampler has stopped."""
    summary, line, _ = summarise_file(path, gpus, status_path, time.time())
    doc = gpustats.summary_to_cache(summary, line, path.stat().st_size)
    write_json_atomic(cache_path(path), doc, compact=True)


def collect(store: RunStore, *, progress: Callable[[int], None] | None = None) -> RunGpu:
    now = time.time()
    run = store.state()
    tasks = []
    for n, (node, stage, trial, job, gpus, path) in enumerate(_task_files(store, run)):
        if path.exists():
            summary, line, state = summarise_file(path, gpus, path.with_name(f"{stage}.status.json"), now)
            tasks.append(TaskGpu(node, stage, trial, job, gpus, path, summary, line, state))
        else:
            tasks.append(TaskGpu(node, stage, trial, job, gpus, path, None))
        if progress:
            progress(n + 1)
    stages: dict[str, Summary] = {}
    for stage in dict.fromkeys(t.stage for t in tasks):
        stages[stage] = gpustats.combine(t.summary for t in tasks if t.stage == stage and t.summary)
    campaign = gpustats.combine(t.summary for t in tasks if t.summary)
    idle = tuple(events.to_dict(e) for e in run.gpu_idle)  # as in the log: `--json` and the report show them
    return RunGpu(store.run_id, tuple(tasks), stages, campaign, idle)
