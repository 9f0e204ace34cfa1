"""What an MLflow run should hold, what was logged to it, what is still to log: no MLflow here.

Tracking's pure part: a Slurm state as a run status, names MLflow accepts, the points, params,
tags and files each run should hold (read from the collected results and the run directory), the
marker tag that says what was logged, the points new since it, where the tracking store is, and
how log_batch calls are split within MLflow's limits. `tracking` does the talking to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurmflow.model import Trial
from slurmflow.results.collect import RunResults, TaskResult, TrialResult, trial_state
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import JobState

MARKER = "slurmflow.synced"  # what was logged to the run; longer values go on in MARKER.1, MARKER.2, ...
TAG_CHUNK = 7000  # under MLflow's 8000-character limit on a tag's value
PARAM_MAX = 6000
TERMINAL = {"FINISHED", "FAILED", "KILLED"}
Points = list[tuple[int, float]]


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
    params = _params(results.base_overrides)
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


def read_json(path: Path) -> dict[str, Any]:
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
    launch = read_json(results.root / "launch.json")
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


def batches(
    metrics: list[Any], params: list[Any], tags: list[Any], marks: list[Any]
) -> Iterator[tuple[Sequence[Any], Sequence[Any], Sequence[Any]]]:
    """The log_batch calls, as (metrics, params, tags), within MLflow's limits (1000 entities, 100
    params, 100 tags a call). The marker's tags go in the last call: one cut short leaves the
    marker as it was, and the next call logs again what this one did not confirm."""
    while metrics or params or tags:
        p, params = params[:100], params[100:]
        t, tags = tags[:100], tags[100:]
        room = 1000 - len(p) - len(t)
        m, metrics = metrics[:room], metrics[room:]
        last = not (metrics or params or tags)
        if last and len(t) + len(marks) <= 100 and len(m) + len(marks) <= room:
            t, marks = t + marks, []
        yield m, p, t
    if marks:
        yield (), (), marks
