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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmflow.errors import UsageError
from slurmflow.model import Trial
from slurmflow.results.collect import RunResults, TaskResult, TrialResult, collect, trial_state
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import JobState

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from slurmflow.backends.base import Backend

NO_MLFLOW = "slurmflow track needs MLflow: pip install 'slurmflow[mlflow]'"
MARKER = "slurmflow.synced"  # what was logged to the run; longer values go on in MARKER.1, MARKER.2, ...
TAG_CHUNK = 7000  # under MLflow's 8000-character limit on a tag's value
PARAM_MAX = 6000
STATE_FILE = "tracking.json"  # the monitor's last tracking call, and the warnings it has said
EVERY_S = 60.0  # the monitor tracks at most this often (and once more when the campaign ends)
TERMINAL = {"FINISHED", "FAILED", "KILLED"}
Points = list[tuple[int, float]]


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


# --- the pure part -------------------------------------------------------------------------------


def mlflow_status(state: str) -> str:
    """A Slurm state (or a trial's, collect.trial_state) as an MLflow run status: a run that has not
    ended is RUNNING, whatever it waits for; CANCELLED is KILLED; any other end short of success
    (FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, ...) is FAILED."""
    known = JobState.__members__.get(state)
    if known is None or not known.final:
        return "RUNNING"
    if known is JobState.COMPLETED:
        return "FINISHED"
    return "KILLED" if known is JobState.CANCELLED else "FAILED"


def key(name: str) -> str:
    """A name MLflow accepts as a param, metric or tag key: Hydra's `+`, `++` and `~` prefixes
    dropped, any other character MLflow refuses (`@`, `,`, ...) replaced by `_`."""
    bare = name.lstrip("+~").strip("/")
    safe = "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in bare)
    return "/".join(p for p in safe.split("/") if p not in ("", ".", "..")) or "_"


def digest(value: Any) -> str:
    """A short digest to tell whether something changed (not a security boundary)."""
    return hashlib.blake2b(json.dumps(value, separators=(",", ":")).encode(), digest_size=8).hexdigest()


def points(trial: TrialResult) -> dict[str, Points]:
    """The metric points a trial's child run should hold: each curve at its steps, a final value
    without a curve at step 0. A summary value that differs from its curve's last point is one more
    point at that step: logged later, it is the one MLflow shows as the metric's latest."""
    out: dict[str, Points] = {}
    for name in {**trial.curves, **trial.metrics}:
        curve = sorted(trial.curves.get(name, {}).items())
        final = trial.metrics.get(name)
        pts: Points = [(int(s), float(v)) for s, v in curve]
        if final is not None and (not pts or not _same(pts[-1][1], final)):
            pts.append((pts[-1][0] if pts else 0, float(final)))
        out[key(name)] = pts
    return out


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@dataclass(frozen=True)
class Marker:
    """What was logged to a run, as its marker tag says. `known` is False where the run has no
    marker that can be read: what it holds must then be read back from MLflow."""

    params: str = ""
    metrics: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # name -> (points, their digest)
    artifacts: Mapping[str, str] = field(default_factory=dict)  # artifact path -> "size.mtime_ns"
    known: bool = True

    def encode(self) -> dict[str, str]:
        """The marker as tags: MARKER holds "<chunks>|<json>", longer JSON goes on in MARKER.<i>."""
        doc = json.dumps({"p": self.params, "m": self.metrics, "a": self.artifacts}, separators=(",", ":"))
        parts = [doc[i : i + TAG_CHUNK] for i in range(0, len(doc), TAG_CHUNK)] or [""]
        tags = {MARKER: f"{len(parts)}|{parts[0]}"}
        tags.update({f"{MARKER}.{i}": p for i, p in enumerate(parts[1:], 1)})
        return tags

    @staticmethod
    def decode(tags: Mapping[str, str]) -> Marker:
        head = tags.get(MARKER)
        try:
            n, _, first = (head or "").partition("|")
            doc = json.loads(first + "".join(tags[f"{MARKER}.{i}"] for i in range(1, int(n))))
            metrics = {str(k): (int(c), str(d)) for k, (c, d) in doc["m"].items()}
            return Marker(str(doc["p"]), metrics, {str(k): str(v) for k, v in doc["a"].items()})
        except (KeyError, ValueError, TypeError, AttributeError):
            return Marker(known=False)


def new_points(want: Points, logged: tuple[int, str] | None) -> Points | None:
    """The points not logged yet, given what the marker says was (None: nothing). None where the
    marker does not describe a prefix of `want`: the history must be compared."""
    if logged is None:
        return list(want)
    count, dig = logged
    if count <= len(want) and digest(want[:count]) == dig:
        return want[count:]
    return None


def missing(want: Points, held: Sequence[tuple[int, float]]) -> Points:
    """The points of `want` the history does not hold (each counted as often as it occurs)."""
    left = Counter((s, repr(float(v))) for s, v in held)  # repr: NaN equals NaN, and floats round-trip
    out: Points = []
    for s, v in want:
        if left[(s, repr(v))] > 0:
            left[(s, repr(v))] -= 1
        else:
            out.append((s, v))
    return out


def file_stamp(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_size}.{st.st_mtime_ns}"


@dataclass(frozen=True)
class Want:
    """What one MLflow run should hold; its times from its tasks' attempts."""

    name: str
    tags: dict[str, str]
    params: dict[str, str]
    points: dict[str, Points]
    files: dict[str, Path]  # artifact path -> the file to upload
    state: str
    tasks: Sequence[TaskResult]
    now: float

    @property
    def status(self) -> str:
        return mlflow_status(self.state)

    @property
    def start_ms(self) -> int:
        return int(
            1000 * min((a.start or a.submit or self.now for t in self.tasks for a in t.attempts), default=self.now)
        )

    @property
    def end_ms(self) -> int | None:
        ends = [a.end for t in self.tasks for a in t.attempts if a.end]
        return int(1000 * max(ends)) if ends and self.status in TERMINAL else None


def _logs(results: RunResults, tasks: Sequence[TaskResult]) -> dict[str, Path]:
    """Each ended task's log, under the path it has in the run's logs/. Only ended tasks: a log is
    uploaded whole, and a running task's would go up again at every call."""
    nodes = {n.key: n for n in results.plan.nodes}
    out = {}
    for t in tasks:
        node = nodes.get(t.node)
        if node is None or t.job_id == "-" or mlflow_status(t.state) == "RUNNING":
            continue
        index = None if not node.array or t.trial is None else t.trial - node.offset
        rel = node.log_file(index)
        out[f"logs/{rel}"] = results.root / "logs" / rel
    return out


def campaign_want(results: RunResults) -> Want:
    launch = _read_json(results.root / "launch.json")
    prov = results.provenance
    commit = (prov.get("git") or {}).get("commit")
    tags = {
        "slurmflow.kind": "campaign",
        "slurmflow.run_id": results.run_id,
        "slurmflow.experiment": results.experiment,
        "slurmflow.run_dir": str(results.root),
        "slurmflow.slurm_version": str(prov.get("slurm_version") or "-"),
        "slurmflow.git_commit": str(commit or "-"),
        "slurmflow.objective": ",".join(f"{o.metric}:{o.mode}" for o in results.objectives) or "-",
        "slurmflow.trials": str(len(results.trials)),
        "slurmflow.best_trial": results.best.name if results.best else "-",
    }
    if commit:
        tags["mlflow.source.git.commit"] = str(commit)
    ended = all(mlflow_status(t.state) != "RUNNING" for t in results.tasks)
    state = trial_state(results.tasks) if ended else "RUNNING"
    tags["slurmflow.state"] = state
    files = _logs(results, results.singles)
    if (results.root / "experiment.yaml").is_file():
        files["experiment.yaml"] = results.root / "experiment.yaml"
    params = _params(launch.get("base_overrides") or ())
    return Want(results.run_id, tags, params, {}, files, state, results.tasks, results.now)


def trial_want(results: RunResults, trial: TrialResult, store: RunStore) -> Want:
    tags = {
        "slurmflow.kind": "trial",
        "slurmflow.run_id": results.run_id,
        "slurmflow.trial": str(trial.index),
        "slurmflow.trial_id": trial.trial_id,
        "slurmflow.state": trial.state,
        "slurmflow.retries": str(trial.retries),
        "slurmflow.rank": str(trial.rank) if trial.rank is not None else "-",
        "slurmflow.nodes": ",".join(dict.fromkeys(a.node for t in trial.tasks for a in t.attempts if a.node)) or "-",
    }
    for t in trial.tasks:
        tags[key(f"slurmflow.job.{t.stage}")] = t.job_id
        tags[key(f"slurmflow.array_job.{t.stage}")] = t.job_id.split("_", 1)[0]
    config = store.trial_dir(Trial(trial.index, trial.trial_id, trial.overrides)) / "config.yaml"
    files = {"config.yaml": config} if config.is_file() else {}
    files.update(_logs(results, trial.tasks))
    return Want(trial.name, tags, _params(trial.overrides), points(trial), files, trial.state, trial.tasks, results.now)


def _params(overrides: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for o in overrides:
        k, sep, v = o.partition("=")
        if sep:
            out.setdefault(key(k), v[:PARAM_MAX])
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def where(results: RunResults, uri: str | None, experiment: str | None) -> tuple[str, str | None, str]:
    """The tracking URI, the artifact location for a new experiment, and the experiment's name:
    the arguments, else the experiment's `tracking.mlflow`, else an SQLite store beside the runs
    directory. A relative SQLite path the experiment gives is relative to where it was launched;
    an SQLite store keeps its experiments' files beside it (MLflow's default is the working
    directory, which differs between the monitor and the user)."""
    launch = _read_json(results.root / "launch.json")
    configured = (launch.get("tracking") or {}).get("mlflow") or {}
    name = experiment or configured.get("experiment") or results.experiment
    if uri is None and configured.get("uri"):
        uri = str(configured["uri"])
        base = Path(str(launch.get("cwd") or results.root))
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = f"sqlite:///{base / uri[len('sqlite:///') :]}"
    if uri is None:
        uri = f"sqlite:///{results.root.parent.resolve() / 'mlflow.db'}"
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri[len("sqlite:///") :]).parent / "mlflow-artifacts").resolve().as_uri()
    return uri, artifacts, str(name)


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
    """log_batch within MLflow's limits (1000 entities, 100 params, 100 tags a call). The marker's
    tags go in the last call: one cut short leaves the marker as it was, and the next call logs
    again what this one did not confirm."""
    while metrics or params or tags:
        p, params = params[:100], params[100:]
        t, tags = tags[:100], tags[100:]
        room = 1000 - len(p) - len(t)
        m, metrics = metrics[:room], metrics[room:]
        last = not (metrics or params or tags)
        if last and len(t) + len(marks) <= 100 and len(m) + len(marks) <= room:
            t, marks = t + marks, []
        client.log_batch(run_id, metrics=m, params=p, tags=t)
    if marks:
        client.log_batch(run_id, tags=marks)


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
    state = _read_json(store.path(STATE_FILE))
    if state.get("final") or (not done and now - float(state.get("t") or 0) < every_s):
        return None
    # A server that does not answer must not hold the tick for minutes (the user's settings win).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    said = [str(s) for s in state.get("said") or ()]
    warning = None
    try:
        track(collect(store, backend, gpu=False))
        said = []
    except Exception as exc:  # anything at all: tracking must never fail the monitor's tick
        text = " ".join(str(exc).split())
        why = text if isinstance(exc, UsageError) else f"{type(exc).__name__}: {text}"
        warning = None if why in said else f"MLflow tracking failed: {why}"
        said = [*said, why] if warning else said
    state = {"t": now, "final": done and not said, "said": said}
    with contextlib.suppress(OSError):
        store.write_json(STATE_FILE, state)
    return warning
