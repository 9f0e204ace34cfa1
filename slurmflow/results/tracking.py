"""A campaign in MLflow: one parent run for the slurmflow run, one child run per trial.

`track` may be called any number of times, while the campaign runs (the monitor does, through
`after_tick`) and after it ended (`slurmflow track`): each call logs only what the tracking store
does not hold yet. The runs are found again by their tags, and each run keeps a marker tag saying
what was logged to it (metric points per metric with a digest of them, a digest of the params, a
size and mtime per artifact), written in the last call that logs to it. A call that
finds nothing new makes no run, logs no point and uploads no file. Where a marker does not match
(a run edited by hand, a requeued task that logged its steps again) the metric's history is read
back and only the missing points are logged.

MLflow is an optional extra, imported inside the functions that talk to it, through its client
alone (no active-run state, no autolog), so that tracking never changes the caller's MLflow state.
What each run should hold, the marker, the points still to log: mlflow_sync, which never talks to
MLflow; this module does the talking.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmflow.errors import UsageError
from slurmflow.results.collect import NOT_SUBMITTED, RunResults, collect
from slurmflow.results.mlflow_sync import (
    TERMINAL,
    Marker,
    Want,
    batches,
    campaign_want,
    digest,
    file_stamp,
    missing,
    mlflow_status,
    new_points,
    read_json,
    trial_want,
    where,
)
from slurmflow.rundir.store import RunStore

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from slurmflow.backends.base import Backend

NO_MLFLOW = "slurmflow track needs MLflow: pip install 'slurmflow[mlflow]'"
STATE_FILE = "tracking.json"  # the monitor's last tracking call, and the warnings it has said
EVERY_S = 60.0  # the monitor tracks at most this often (and once more when the campaign ends)


@dataclass(frozen=True)
class Tracked:
    """What one `track` call did."""

    uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    runs_created: int = 0
    runs_updated: int = 0  # existing runs that got anything: a tag, a status, a point, a file
    metrics_logged: int = 0  # metric points
    params_logged: int = 0
    artifacts_logged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"MLflow {self.uri}, experiment {self.experiment} ({self.experiment_id}), parent run "
            f"{self.parent_run_id}: {self.runs_created} run(s) created, {self.runs_updated} updated, "
            f"{self.metrics_logged} metric point(s), {self.params_logged} param(s), {self.artifacts_logged} file(s)"
        )


# --- MLflow ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _session(root: Path) -> Iterator[None]:
    """One tracker per run at a time (the monitor and a `slurmflow track` would both create the
    runs; a run directory we may not write to goes without the lock), with MLflow's INFO lines
    (alembic's too, on an SQLite store's first use) and its dependencies' deprecation warnings
    silenced."""
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    with contextlib.ExitStack() as stack:
        try:
            fd = os.open(root / ".tracking.lock", os.O_RDWR | os.O_CREAT, 0o600)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(mlflow|alembic|sqlalchemy)\.")
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def track(results: RunResults, *, uri: str | None = None, experiment: str | None = None) -> Tracked:
    """Log the campaign to MLflow, or what is new of it since the last call (see the module)."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError(NO_MLFLOW) from None
    uri, artifacts, name = where(results, uri, experiment)
    if uri.startswith("sqlite:///"):  # SQLite creates the file, not the directories above it
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    with _session(results.root):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = client.create_experiment(name, artifact_location=artifacts)
            except MlflowException:  # created by another tracker meanwhile
                exp_id = client.get_experiment_by_name(name).experiment_id  # type: ignore[union-attr]
        elif exp.lifecycle_stage != "active":
            raise UsageError(
                f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) or name another"
            )
        else:
            exp_id = exp.experiment_id
        found = _existing(client, exp_id, results.run_id)
        counts: Counter[str] = Counter()
        store = RunStore(results.root)
        parent_want = campaign_want(results)
        parent = _sync(client, exp_id, found.get("campaign"), parent_want, {}, counts)
        for trial in sorted(results.trials, key=lambda t: t.index):
            want = trial_want(results, trial, store)
            _sync(client, exp_id, found.get(str(trial.index)), want, {"mlflow.parentRunId": parent}, counts)
    n = [counts[k] for k in ("created", "updated", "metrics", "params", "files")]
    return Tracked(uri, name, exp_id, parent, *n)


def _existing(client: MlflowClient, exp_id: str, run_id: str) -> dict[str, Run]:
    """This slurmflow run's MLflow runs: "campaign" -> the parent, "<trial>" -> each child (the
    oldest, should a race have made two)."""
    out: dict[str, Run] = {}
    token = None
    while True:
        page = client.search_runs(
            [exp_id],
            f"tags.`slurmflow.run_id` = '{run_id}'",
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        for r in page:
            tags = r.data.tags
            which = "campaign" if tags.get("slurmflow.kind") == "campaign" else tags.get("slurmflow.trial")
            if which is not None:
                out.setdefault(which, r)
        token = page.token
        if not token:
            return out


def _sync(
    client: MlflowClient, exp_id: str, run: Run | None, want: Want, extra: dict[str, str], counts: Counter[str]
) -> str:
    """Bring one MLflow run to `want`, logging only the difference; its run id."""
    from mlflow.entities import Metric, Param, RunTag

    tags = {**want.tags, **extra}
    fresh = run is None
    if run is None:
        run = client.create_run(exp_id, start_time=want.start_ms, tags=tags, run_name=want.name)
        counts["created"] += 1
    run_id, have = run.info.run_id, run.data.tags
    marker = Marker() if fresh else Marker.decode(have)
    changed = run.info.status != want.status
    if changed:
        if want.status in TERMINAL:
            client.set_terminated(run_id, want.status, end_time=want.end_ms)
        else:  # a trial the monitor requeued after it failed
            client.update_run(run_id, status=want.status)
    files: dict[str, str] = {}
    for path, local in want.files.items():
        stamp = file_stamp(local)
        if stamp is None:
            continue
        if marker.artifacts.get(path) != stamp:
            client.log_artifact(run_id, str(local), path.rpartition("/")[0] or None)
            counts["files"] += 1
        files[path] = stamp
    metrics: list[Metric] = []
    now_ms = int(1000 * time.time())
    for name, pts in want.points.items():
        todo = new_points(pts, marker.metrics.get(name)) if marker.known else None
        if todo is None:
            todo = missing(pts, [(m.step, m.value) for m in client.get_metric_history(run_id, name)])
        # A second point at a step (a summary at its curve's last step) a millisecond later: the
        # one MLflow shows as the latest.
        at: Counter[int] = Counter()
        for step, value in todo:
            metrics.append(Metric(name, value, now_ms + at[step], step))
            at[step] += 1
    params_digest = digest(want.params)
    params = [Param(k, v) for k, v in want.params.items()] if marker.params != params_digest else []
    after = Marker(params_digest, {n: (len(p), digest(p)) for n, p in want.points.items()}, files).encode()
    plain = [RunTag(k, v) for k, v in tags.items() if have.get(k) != v]
    marks = [RunTag(k, v) for k, v in after.items() if have.get(k) != v]
    _batches(client, run_id, metrics, params, plain, marks)
    counts["metrics"] += len(metrics)
    counts["params"] += len(params)
    counts["updated"] += int(not fresh and (changed or bool(metrics or params or plain or marks)))
    return str(run_id)


def _batches(
    client: MlflowClient, run_id: str, metrics: list[Any], params: list[Any], tags: list[Any], marks: list[Any]
) -> None:
    """log_batch within MLflow's limits, the marker's tags in the last call (mlflow_sync.batches)."""
    for m, p, t in batches(metrics, params, tags, marks):
        client.log_batch(run_id, metrics=m, params=p, tags=t)


# --- the monitor's hook -----------------------------------------------------------------------------


def after_tick(
    store: RunStore, backend: Backend | None, *, done: bool, now: float, every_s: float = EVERY_S
) -> str | None:
    """What a monitor tick calls after its own work: where the run's experiment asks for MLflow
    tracking, track it at most every `every_s` seconds, and once more when the campaign has ended.
    Never raises: a failure is one line for the tick to record, each distinct line said once
    (until a call succeeds), so a missing MLflow or a tracking server that is down is not said
    on every tick. The last call's time is kept in the run directory, as each link of the
    monitor's job chain is a new process."""
    try:
        launch = store.read_json("launch.json")
        if not isinstance(launch, dict) or not (launch.get("tracking") or {}).get("mlflow"):
            return None
    except (OSError, ValueError):
        return None
    state = read_json(store.path(STATE_FILE))
    if state.get("final") or (not done and now - float(state.get("t") or 0) < every_s):
        return None
    # A server that does not answer must not hold the tick for minutes (the user's settings win).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    said = [str(s) for s in state.get("said") or ()]
    warning = None
    ended = False
    try:
        results = collect(store, backend, gpu=False)
        track(results)
        said = []
        # Final only when what was tracked had ended too: the caller's view and the scheduler's
        # records may be a moment apart, and nothing tracks a run again once it is final.
        ended = all(mlflow_status(t.state) != "RUNNING" or t.state == NOT_SUBMITTED for t in results.tasks)
    except Exception as exc:  # anything at all: tracking must never fail the monitor's tick
        text = " ".join(str(exc).split())
        why = text if isinstance(exc, UsageError) else f"{type(exc).__name__}: {text}"
        warning = None if why in said else f"MLflow tracking failed: {why}"
        said = [*said, why] if warning else said
    state = {"t": now, "final": done and ended and not said, "said": said}
    with contextlib.suppress(OSError):
        store.write_json(STATE_FILE, state)
    return warning
