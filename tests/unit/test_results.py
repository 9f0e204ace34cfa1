"""The metrics files, the objective and the results table: pure parts, milliseconds."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from slurmflow.errors import UsageError
from slurmflow.experiment.objective import objectives, parse_objective_flag, tracking
from slurmflow.model import Objective, Plan
from slurmflow.results import table
from slurmflow.results.collect import (
    RunResults,
    TaskResult,
    TrialResult,
    column_names,
    pareto,
    rank,
    resolve,
    trial_state,
)
from slurmflow.rundir import metrics
from slurmflow.slurm.types import Attempt, JobState


def env(trial: Path, stage: str = "train", job: str = "7", restart: int = 0) -> dict[str, str]:
    return {
        "SLURMFLOW_TRIAL_DIR": str(trial),
        "SLURMFLOW_STAGE": stage,
        "SLURM_JOB_ID": job,
        "SLURM_RESTART_COUNT": str(restart),
    }


def test_a_requeued_task_logs_again_and_the_later_attempt_wins(tmp_path: Path) -> None:
    first = metrics.writer(env(tmp_path, restart=0))
    assert first is not None
    for step in range(3):
        first.log(step, {"loss": 1.0 - step / 10})
    again = metrics.writer(env(tmp_path, restart=1))  # resumed from the checkpoint of step 1
    assert again is not None and again.path != first.path
    for step in range(1, 4):
        again.log(step, {"loss": 0.5 - step / 10})
    again.summary({"test_accuracy": 0.9})
    got = metrics.read(tmp_path)["train"]
    assert got.curves["loss"] == {0: 1.0, 1: 0.4, 2: 0.3, 3: 0.2}
    assert got.values() == {"loss": 0.2, "test_accuracy": 0.9}


def test_a_partial_last_line_and_nan_are_read_as_written(tmp_path: Path) -> None:
    w = metrics.writer(env(tmp_path, job="8"))
    assert w is not None
    w.log(None, {"loss": float("nan")})
    w.log(None, {"loss": 2})  # the next step of this process
    with open(w.path, "a") as f:
        f.write('{"t": 1, "step": 9, "m": {"loss": 0.')  # killed mid-write
    curve = metrics.read(tmp_path)["train"].curves["loss"]
    assert set(curve) == {0, 1} and math.isnan(curve[0]) and curve[1] == 2.0


def test_a_value_that_is_not_a_number_is_refused_by_name(tmp_path: Path) -> None:
    w = metrics.writer(env(tmp_path, job="9"))
    assert w is not None
    with pytest.raises(TypeError, match="accuracy='high'"):
        w.log(0, {"accuracy": "high"})


def test_outside_a_task_nothing_is_written() -> None:
    assert metrics.writer({}) is None


def test_a_metrics_file_is_picked_up_only_when_this_task_wrote_it(tmp_path: Path) -> None:
    doc = tmp_path / "eval.json"
    doc.write_text(json.dumps({"test_accuracy": 0.8, "note": "ok", "nested": {"f1": 0.7}, "flag": True}))
    old = doc.stat().st_mtime
    assert not metrics.pick_up(tmp_path, "eval", doc, old + 60, env(tmp_path, "eval"))  # an earlier task's
    assert metrics.pick_up(tmp_path, "eval", doc, old, env(tmp_path, "eval"))
    assert metrics.read(tmp_path)["eval"].values() == {"test_accuracy": 0.8, "nested.f1": 0.7}
    assert not metrics.pick_up(tmp_path, "eval", tmp_path / "missing.json", 0, env(tmp_path, "eval"))


def test_objective_forms_and_their_errors() -> None:
    assert objectives({"metric": "acc"}) == (Objective("acc", "max"),)
    assert objectives([{"metric": "eval.acc", "mode": "max"}, {"metric": "loss", "mode": "min"}])[1].mode == "min"
    assert parse_objective_flag("loss:min") == Objective("loss", "min")
    assert parse_objective_flag("eval.acc") == Objective("eval.acc", "max")
    with pytest.raises(UsageError, match="objective: 'acc' is a bare name"):
        objectives("acc")
    with pytest.raises(UsageError, match=r"objective\.mode: expected max or min"):
        objectives({"metric": "acc", "mode": "maximise"})
    with pytest.raises(UsageError, match="listed twice"):
        objectives([{"metric": "a"}, {"metric": "a", "mode": "min"}])
    with pytest.raises(UsageError, match=r"tracking\.mlflow: unknown field 'url'"):
        tracking({"mlflow": {"url": "x"}})
    assert tracking({"mlflow": {"uri": "sqlite:///m.db"}}) is not None


def sm(**final: float) -> metrics.StageMetrics:
    return metrics.StageMetrics(final=dict(final))


def test_a_name_two_stages_report_needs_its_stage() -> None:
    cols = column_names([{"train": sm(acc=0.9, loss=0.1), "eval": sm(acc=0.8)}])
    assert cols[("train", "loss")] == "loss" and cols[("eval", "acc")] == "eval.acc"
    assert resolve(Objective("eval.acc"), cols, ["train", "eval"]) == "eval.acc"
    assert resolve(Objective("loss"), cols, ["train", "eval"]) == "loss"
    assert resolve(Objective("f1"), cols, ["train", "eval"]) is None
    with pytest.raises(
        UsageError, match=r"objective acc: reported by more than one stage; write one of eval.acc, train.acc"
    ):
        resolve(Objective("acc"), cols, ["train", "eval"])


def task(state: str, stage: str = "train", attempts: int = 1) -> TaskResult:
    a = tuple(
        Attempt("5_0", JobState.REQUEUED if i < attempts - 1 else JobState[state], 0.0, 10.0 * i, 10.0 * i + 5, "n1", 1)
        for i in range(attempts)
    )
    return TaskResult(stage, f"{stage}.0", 0, "5_0", state, a, gpus=1)


def trial(i: int, state: str = "COMPLETED", **values: float) -> TrialResult:
    return TrialResult(i, f"id{i}", (f"lr={i}",), state, values, (task(state),))


def test_trial_state_is_its_first_unsuccessful_task() -> None:
    assert trial_state([task("COMPLETED"), task("COMPLETED", "eval")]) == "COMPLETED"
    assert trial_state([task("COMPLETED"), task("TIMEOUT", "eval")]) == "TIMEOUT"
    assert trial_state([task("FAILED"), task("CANCELLED", "eval")]) == "FAILED"
    assert trial_state([task("COMPLETED"), task("RUNNING", "eval")]) == "RUNNING"
    assert trial_state([task("COMPLETED"), TaskResult("eval", "eval.0", 0, "-", "NOT_SUBMITTED")]) == "NOT_SUBMITTED"


def test_ranking_is_by_objectives_in_order_and_leaves_unfinished_trials_unranked() -> None:
    rows = [
        trial(0, acc=0.8, loss=0.3),
        trial(1, acc=0.9, loss=0.5),
        trial(2, acc=0.9, loss=0.2),
        trial(3, "FAILED", acc=0.99),
        trial(4),
    ]
    objs = [Objective("acc", "max"), Objective("loss", "min")]
    ranked = rank(rows, objs, ["acc", "loss"])
    assert [(t.index, t.rank) for t in ranked] == [(2, 1), (1, 2), (0, 3), (3, None), (4, None)]
    assert ranked[0].objective == (0.9, 0.2)
    assert pareto(ranked, objs) == {2}
    assert [t.index for t in rank(rows, [Objective("loss", "min")], ["loss"])][:3] == [2, 0, 1]


def test_retries_time_and_gpu_hours_add_up_over_attempts() -> None:
    t = TrialResult(0, "x", (), "COMPLETED", {}, (task("COMPLETED", attempts=3), task("COMPLETED", "eval")))
    assert t.retries == 2
    assert t.elapsed_s == 20.0
    assert t.gpu_hours_allocated == pytest.approx(20.0 / 3600)


def test_an_attempt_that_never_started_is_no_retry() -> None:
    # 22.05: a dependent cancelled while pending, then revived by the monitor, has two records.
    never = Attempt("5_0", JobState.REQUEUED, 0.0, None, 4.0, None, 0)
    ran = Attempt("5_0", JobState.COMPLETED, 4.0, 5.0, 9.0, "n1", 1)
    assert TaskResult("eval", "eval.0", 0, "5_0", "COMPLETED", (never, ran), gpus=1).retries == 0


def results(*trials: TrialResult, run_id: str = "r1") -> RunResults:
    plan = Plan("e", {}, (), len(trials), 0.0, ())
    return RunResults(run_id, "e", Path(run_id), (Objective("acc"),), trials, (), plan, "accounting", 0.0)


def test_where_top_and_the_parameters_that_differ() -> None:
    a = results(*rank([trial(0, acc=0.8), trial(1, acc=0.9), trial(2, "FAILED")], [Objective("acc")], ["acc"]))
    t = table.build([a], filters=["acc>=0.8"])
    assert [r["trial"] for r in t.rows] == [1, 0]
    assert t.params == ["param.lr"] and t.objectives == ["acc"]
    assert [r["trial"] for r in table.build([a], filters=["state=FAILED"]).rows] == [2]
    assert [r["trial"] for r in table.build([a], filters=["lr!=0"]).rows] == [1, 2]
    assert [r["trial"] for r in table.build([a], top=1).rows] == [1]
    with pytest.raises(UsageError, match="no column 'accuracy'"):
        table.build([a], filters=["accuracy>1"])
    with pytest.raises(UsageError, match="write NAME OP VALUE"):
        table.build([a], filters=["acc"])
    b = results(
        *rank([TrialResult(0, "y", ("lr=1",), "COMPLETED", {"acc": 0.95}, ())], [Objective("acc")], ["acc"]),
        run_id="r2",
    )
    both = table.build([a, b])
    assert both.columns[0] == "run" and [(r["run"], r["trial"]) for r in both.rows][:2] == [("r2", 0), ("r1", 1)]
    csv = table.to_csv(both).splitlines()
    assert csv[0].startswith("run,rank,trial,state,param.lr,acc") and len(csv) == 5
    doc = table.to_json(both)
    assert doc["runs"][1]["best"] == {"trial": 0, "overrides": ["lr=1"], "objective": [0.95]}


def test_writes_are_single_lines_in_a_private_file(tmp_path: Path) -> None:
    w = metrics.writer(env(tmp_path, job="10"))
    assert w is not None
    w.log(0, {f"m{i}": i for i in range(200)})
    assert len(w.path.read_text().splitlines()) == 1
    assert os.stat(w.path).st_mode & 0o077 == 0
