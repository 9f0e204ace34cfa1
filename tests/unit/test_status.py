from __future__ import annotations

from typing import Any

from slurmflow.model import Resources, Stage, StageDep
from slurmflow.monitoring.status import explain, summarise, to_dict
from slurmflow.planning import planner
from slurmflow.slurm.types import ClusterInfo, DepKind, JobInfo, JobState

STAGES = {
    "train": Stage("train", command="t", per_trial=True, resources=Resources(gpus=1)),
    "report": Stage("report", command="r", deps=(StageDep(DepKind.AFTER_OK, "train"),)),
}
PLAN = planner.plan("x", STAGES, 5, ClusterInfo(max_array_size=3))  # train.0 (3 tasks), train.1 (2), report


def job(job_id: str, state: JobState, **kw: Any) -> JobInfo:
    base, _, task = job_id.partition("_")
    return JobInfo(
        job_id, "n", state, array_job_id=base if task else None, array_task_id=int(task) if task else None, **kw
    )


def test_counts_failures_and_reasons() -> None:
    jobs = [
        job("10_0", JobState.COMPLETED, exit_code=0),
        job("10_1", JobState.FAILED, exit_code=3, nodes="gpu1", restarts=1),
        job("10_2", JobState.RUNNING),
        job("11_0", JobState.PENDING, reason="AssocGrpGRES"),
        job("11_1", JobState.PENDING, reason="AssocGrpGRES"),
        job("12", JobState.PENDING, reason="Dependency"),
    ]
    st = summarise(
        "r1",
        PLAN,
        {"train.0": "10", "train.1": "11", "report": "12"},
        jobs,
        logs_dir="/runs/r1/logs",
        started=0,
        now=100,
    )
    train, report = st.stages
    assert train.total == 5 and train.counts == {"COMPLETED": 1, "FAILED": 1, "RUNNING": 1, "PENDING": 2}
    assert train.restarts == 1 and train.pending == {"AssocGrpGRES": 2}
    (failure,) = train.failures
    assert (failure.job_id, failure.trial, failure.exit_code, failure.log) == (
        "10_1",
        1,
        3,
        "/runs/r1/logs/train.0/1.out",
    )
    assert [t.trial for t in st.tasks if t.stage == "train"] == [0, 1, 2, 3, 4]  # chunk offsets applied
    assert report.pending == {"Dependency": 1} and not st.done
    assert st.remaining_s == 100 * 4 / 2  # 2 of 6 final after 100 s
    doc = to_dict(st)
    assert doc["stages"][0]["pending"]["AssocGrpGRES"]["why"].startswith("the account's concurrent GPU cap")  # type: ignore[index]


def test_missing_jobs_and_unsubmitted_nodes() -> None:
    st = summarise(
        "r1",
        PLAN,
        {"train.0": "10"},
        [job("10_0", JobState.COMPLETED)],
        logs_dir="l",
        started=0,
        now=1,
        accounting_available=False,
    )
    assert st.not_submitted == ("train.1", "report")
    assert [t.state for t in st.tasks][:3] == [JobState.COMPLETED, JobState.UNKNOWN, JobState.UNKNOWN]
    assert st.notes and "slurmdbd" in st.notes[0]
    assert not any(t.state is JobState.FAILED for t in st.tasks)  # degraded, never marked failed


def test_done_when_every_submitted_task_is_final() -> None:
    jobs = [job(f"10_{i}", JobState.COMPLETED) for i in range(3)] + [
        job(f"11_{i}", JobState.COMPLETED) for i in range(2)
    ]
    jobs.append(job("12", JobState.CANCELLED, reason="DependencyNeverSatisfied"))
    st = summarise("r", PLAN, {"train.0": "10", "train.1": "11", "report": "12"}, jobs, logs_dir="l", started=0, now=5)
    assert st.done and st.remaining_s is None
    assert st.stages[1].failures[0].reason == "DependencyNeverSatisfied"


def test_explain() -> None:
    assert explain("ReqNodeNotAvail, UnavailableNodes:gpu2").startswith("a node it needs is unavailable")
    assert explain("SomethingNew") == "SomethingNew" and explain(None) == "no reason given"


def test_exit_codes_keep_the_signal() -> None:
    from slurmflow.monitoring.status import exit_text

    assert exit_text(1, 0) == "1" and exit_text(0, 0) == "0" and exit_text(None, None) == "-"
    assert exit_text(0, 53) == "signal 53"  # 22.05's launch failure: 0:53 is not a success
    assert exit_text(0, 9) == "signal 9" and exit_text(2, 15) == "2 (signal 15)"


def test_a_launch_failure_is_said_in_words() -> None:
    from slurmflow.monitoring.status import launch_failed

    assert launch_failed(JobState.FAILED, "JobLaunchFailure")
    assert launch_failed(JobState.FAILED, None, 53)  # sacct, after the controller forgot the reason
    assert not launch_failed(JobState.FAILED, None, 0) and not launch_failed(JobState.CANCELLED, None, 53)
    jobs = [
        job("10_0", JobState.COMPLETED, exit_code=0, signal=0),
        job("10_1", JobState.FAILED, exit_code=0, signal=53),
    ]
    jobs += [job("10_2", JobState.FAILED, exit_code=1, signal=0), job("11", JobState.PENDING, reason="Dependency")]
    doc = to_dict(
        summarise("r", PLAN, {"train.0": "10", "train.1": "12", "report": "11"}, jobs, logs_dir="/l", started=0, now=1)
    )
    (launch, program) = doc["stages"][0]["failures"]  # type: ignore[index]
    assert (
        launch["exit"] == "signal 53" and launch["signal"] == 53 and "could not start its batch step" in launch["why"]
    )
    assert program["exit"] == "1" and program["why"] is None
