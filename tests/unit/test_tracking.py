"""The pure part of MLflow tracking: states to run statuses, names MLflow accepts, the points a trial
should hold, the marker of what was logged and what is new since, where the store is; and the
monitor's hook: how often it tracks, and that a failure is said once and never raised."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from mlflow.tracking import MlflowClient

from slurmflow.errors import UsageError
from slurmflow.model import Plan
from slurmflow.results import mlflow_sync, tracking
from slurmflow.results.collect import RunResults, TrialResult
from slurmflow.results.mlflow_sync import TAG_CHUNK, Marker, digest, key, missing, mlflow_status, new_points, points
from slurmflow.rundir.store import RunStore


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("COMPLETED", "FINISHED"),
        ("FAILED", "FAILED"),
        ("TIMEOUT", "FAILED"),
        ("OUT_OF_MEMORY", "FAILED"),
        ("NODE_FAIL", "FAILED"),
        ("CANCELLED", "KILLED"),
        ("RUNNING", "RUNNING"),
        ("PENDING", "RUNNING"),
        ("REQUEUED", "RUNNING"),
        ("NOT_SUBMITTED", "RUNNING"),
        ("SOMETHING_NEW", "RUNNING"),
    ],
)
def test_a_state_is_a_run_status(state: str, status: str) -> None:
    assert mlflow_status(state) == status


def test_keys_are_what_mlflow_accepts() -> None:
    assert key("optimizer.lr") == "optimizer.lr"
    assert key("+trainer.max_epochs") == "trainer.max_epochs"
    assert key("++x") == "x"
    assert key("model@encoder") == "model_encoder"
    assert key("hydra/launcher") == "hydra/launcher"
    assert key("/a//../b") == "a/b"


def trial(metrics: dict[str, float], curves: dict[str, dict[int, float]] | None = None) -> TrialResult:
    return TrialResult(0, "t0", ("lr=0.1",), "RUNNING", metrics, (), curves=curves or {})


def test_a_trial_holds_its_curves_at_their_steps_and_final_values_at_step_0() -> None:
    t = trial({"loss": 0.5, "acc": 0.9}, {"loss": {0: 1.0, 2: 0.5, 1: 0.7}})
    assert points(t) == {"loss": [(0, 1.0), (1, 0.7), (2, 0.5)], "acc": [(0, 0.9)]}


def test_a_summary_that_differs_from_the_curve_is_one_more_point_at_its_last_step() -> None:
    t = trial({"loss": 0.4}, {"loss": {0: 1.0, 1: 0.5}})
    assert points(t) == {"loss": [(0, 1.0), (1, 0.5), (1, 0.4)]}
    nan = trial({"x": math.nan}, {"x": {0: 1.0, 1: math.nan}})
    assert len(points(nan)["x"]) == 2  # NaN is the curve's own last value


def test_the_marker_round_trips_through_tags_however_long() -> None:
    marker = Marker("p", {f"metric_{i}": (i, digest(i)) for i in range(600)}, {"config.yaml": "5.1"})
    tags = marker.encode()
    assert len(tags) > 1 and all(len(v) <= TAG_CHUNK + 10 for v in tags.values())
    assert Marker.decode(tags) == marker
    assert Marker.decode({}).known is False
    assert Marker.decode({"slurmflow.synced": "2|{"}).known is False  # a chunk missing
    assert Marker.decode({"slurmflow.synced": "1|[]"}).known is False


def test_what_is_new_since_the_marker() -> None:
    curve = [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert new_points(curve, None) == curve  # a metric the marker does not name: never logged
    assert new_points(curve, (2, digest(curve[:2]))) == [(2, 0.25)]
    assert new_points(curve, (3, digest(curve))) == []
    assert new_points(curve, (2, digest([(0, 1.0), (1, 0.6)]))) is None  # logged again differently
    assert new_points(curve[:1], (2, digest(curve[:2]))) is None


def test_missing_points_are_counted_as_often_as_they_occur() -> None:
    assert missing([(0, 1.0), (1, 0.5), (1, 0.4)], [(0, 1.0), (1, 0.5)]) == [(1, 0.4)]
    assert missing([(0, 1.0), (0, 1.0)], [(0, 1.0)]) == [(0, 1.0)]
    assert missing([(0, math.nan)], [(0, math.nan)]) == []


def results(root: Path, launch: dict[str, Any]) -> RunResults:
    root.mkdir(parents=True)
    (root / "launch.json").write_text(json.dumps(launch))
    return RunResults(root.name, "exp", root, (), (), (), Plan("exp", {}, (), 0, 0.0), "task status files", 0.0)


def test_the_store_is_sqlite_beside_the_runs_directory_unless_told(tmp_path: Path) -> None:
    run = results(tmp_path / "runs" / "r1", {"tracking": None})
    uri, artifacts, name = mlflow_sync.where(run, None, None)
    assert uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}" and name == "exp"
    assert artifacts == (tmp_path / "runs" / "mlflow-artifacts").as_uri()
    assert mlflow_sync.where(run, "http://mlflow:5000", "other") == ("http://mlflow:5000", None, "other")


def test_a_relative_store_the_experiment_names_is_where_it_was_launched(tmp_path: Path) -> None:
    launch = {"cwd": str(tmp_path / "proj"), "tracking": {"mlflow": {"uri": "sqlite:///ml/t.db", "experiment": "e"}}}
    uri, artifacts, name = mlflow_sync.where(results(tmp_path / "runs" / "r1", launch), None, None)
    assert (uri, name) == (f"sqlite:///{tmp_path / 'proj' / 'ml' / 't.db'}", "e")
    assert artifacts == (tmp_path / "proj" / "ml" / "mlflow-artifacts").as_uri()


class Hook:
    """The monitor's hook with collect and track replaced: what it was asked, what it raises."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, tracking_doc: Any) -> None:
        self.store = RunStore(tmp / "run")
        self.store.root.mkdir()
        self.store.write_json("launch.json", {"tracking": tracking_doc})
        self.calls = 0
        self.error: Exception | None = None
        # A campaign whose every task has ended (no task at all): what `final` needs besides `done`.
        monkeypatch.setattr(tracking, "collect", lambda *_a, **_k: SimpleNamespace(tasks=[]))
        monkeypatch.setattr(tracking, "track", self.track)

    def track(self, *_a: object, **_k: object) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error

    def __call__(self, now: float, done: bool = False) -> str | None:
        return tracking.after_tick(self.store, None, done=done, now=now)


def test_the_hook_does_nothing_for_a_run_that_does_not_ask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = Hook(tmp_path, monkeypatch, None)
    assert hook(1000.0, done=True) is None and hook.calls == 0


def test_the_hook_tracks_every_minute_and_once_at_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = Hook(tmp_path, monkeypatch, {"mlflow": {"uri": None, "experiment": None}})
    hook(1000.0)
    hook(1030.0)
    assert hook.calls == 1
    hook(1061.0)
    assert hook.calls == 2
    hook(1062.0, done=True)  # the end: whenever it comes
    hook(2000.0, done=True)  # and only once
    hook(3000.0)
    assert hook.calls == 3


def test_a_failure_is_said_once_and_never_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = Hook(tmp_path, monkeypatch, {"mlflow": {"uri": None, "experiment": None}})
    hook.error = UsageError(tracking.NO_MLFLOW)
    assert hook(1000.0) == f"MLflow tracking failed: {tracking.NO_MLFLOW}"
    assert hook(1100.0) is None and hook(1200.0, done=True) is None  # said once, still tried
    hook.error = OSError("disk\nfull")
    assert hook(1300.0, done=True) == "MLflow tracking failed: OSError: disk full"
    hook.error = None
    assert hook(1301.0, done=True) is None
    assert hook.calls == 5
    assert hook(1302.0, done=True) is None and hook.calls == 5  # tracked to the end


class Batches:
    """A client that records what each log_batch call carried."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, bool]] = []

    def log_batch(
        self, _run_id: str, metrics: Sequence[Any] = (), params: Sequence[Any] = (), tags: Sequence[Any] = ()
    ) -> None:
        self.calls.append((len(metrics), len(params), len(tags), any(t == "marker" for t in tags)))


def as_client(fake: Batches) -> MlflowClient:
    return cast("MlflowClient", fake)  # log_batch is all _batches calls


def test_batches_keep_mlflows_limits_and_the_marker_comes_last() -> None:
    client = Batches()
    tracking._batches(as_client(client), "r", list(range(2500)), list(range(150)), list(range(5)), ["marker"])
    assert all(m + p + t <= 1000 and p <= 100 and t <= 100 for m, p, t, _ in client.calls)
    assert sum(c[0] for c in client.calls) == 2500 and sum(c[1] for c in client.calls) == 150
    assert [c[3] for c in client.calls] == [False] * (len(client.calls) - 1) + [True]
    small = Batches()
    tracking._batches(as_client(small), "r", [1, 2], [], [], ["marker"])
    assert small.calls == [(2, 0, 1, True)]  # one call when it all fits
