"""Launch, crash, resume against the in-memory Slurm: never a duplicate, never a lost node."""

from __future__ import annotations

import csv
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from slurmflow.backends import FakeSlurm
from slurmflow.backends.fake import Outcome
from slurmflow.errors import (
    ControllerFull,
    ControllerUnavailable,
    PolicyViolation,
    SlurmError,
    SubmissionAmbiguous,
    SubmissionRefused,
    UsageError,
)
from slurmflow.monitoring.monitor import tick
from slurmflow.run.launch import Prepared, prepare, submit_run, write_run
from slurmflow.rundir.events import ControllerBusy, Refused, Submitted
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import JobSpec, JobState
from slurmflow.slurm.units import megabytes
from tests.component.test_monitor import typed_writes  # noqa: F401 (autouse: every write typed)

REPO = Path(__file__).resolve().parents[2]


class Faulty:
    """Wraps a backend; on the n-th submission the job IS created, then the caller sees a fault."""

    def __init__(self, inner: FakeSlurm, n: int, fault: BaseException) -> None:
        self.inner, self.n, self.fault, self.count = inner, n, fault, 0

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        job_id = self.inner.submit(spec, script_path)
        self.count += 1
        if self.count == self.n:
            raise self.fault
        return job_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def prepared(tmp_path: Path) -> tuple[Prepared, FakeSlurm, Path]:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    fake = FakeSlurm()
    prep = prepare(tmp_path / "configs", "config", [], fake.cluster_info())
    return prep, fake, tmp_path


def new_run(prep: Prepared, tmp: Path) -> RunStore:
    return write_run(prep, tmp / "runs", cwd=tmp, python="/usr/bin/python3", argv=["slurmflow", "launch"])


def names(fake: FakeSlurm) -> list[str]:
    return sorted({t.spec.name for t in fake.tasks.values()})


def jobs_per_name(fake: FakeSlurm) -> dict[str, int]:
    out: dict[str, set[str]] = {}
    for t in fake.tasks.values():
        out.setdefault(t.spec.name, set()).add(t.array_job_id or t.job_id)
    return {k: len(v) for k, v in out.items()}


def test_run_directory_is_private_and_complete(prepared: tuple[Prepared, FakeSlurm, Path]) -> None:
    prep, _, tmp = prepared
    store = new_run(prep, tmp)
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    for name in (
        "config/config.yaml",
        "experiment.yaml",
        "launch.json",
        "trials.jsonl",
        "plan.json",
        "provenance.json",
    ):
        assert store.path(name).exists(), name
    assert next(t.overrides for t in store.trials()) == ("model.lr=0.3", "seed=0")
    assert store.read_trial(4).overrides == ("model.lr=0.1", "seed=1")
    assert list(store.plan().stages) == ["prep", "train", "eval", "report", "summary", "on_failure"]
    prov = store.read_json("provenance.json")
    assert prov["packages"]["hydra-core"] and prov["user"] and prov["host"] and "git" in prov


def test_launch_submits_each_node_once_with_dependencies(prepared: tuple[Prepared, FakeSlurm, Path]) -> None:
    prep, fake, tmp = prepared
    store = new_run(prep, tmp)
    ids = submit_run(store, fake)
    assert list(ids) == ["prep", "train.0", "eval.0", "report", "summary", "on_failure"]
    assert set(jobs_per_name(fake).values()) == {1}
    eval_task = fake.tasks[f"{ids['eval.0']}_0"]
    assert eval_task.dependency is not None and eval_task.dependency.clauses[0].job_ids == (ids["train.0"],)
    assert store.state().complete


@pytest.mark.parametrize("crash_at", [1, 2, 3, 6])
def test_crash_after_sbatch_then_resume_never_duplicates(
    prepared: tuple[Prepared, FakeSlurm, Path], crash_at: int
) -> None:
    prep, fake, tmp = prepared
    store = new_run(prep, tmp)
    with pytest.raises(KeyboardInterrupt):
        submit_run(store, Faulty(fake, crash_at, KeyboardInterrupt()))
    state = store.state()
    assert len(state.intents) == 1 and len(state.submitted) == crash_at - 1  # the job exists, its id was lost
    ids = submit_run(store, fake, resume=True)
    assert len(ids) == 6 and set(jobs_per_name(fake).values()) == {1}
    assert any(isinstance(ev, Submitted) and ev.reconciled for ev in store.events())
    # A second resume is a no-op.
    submit_run(store, fake, resume=True)
    assert set(jobs_per_name(fake).values()) == {1}


def test_ambiguous_submission_is_reconciled_not_repeated(prepared: tuple[Prepared, FakeSlurm, Path]) -> None:
    prep, fake, tmp = prepared
    store = new_run(prep, tmp)
    fault = SubmissionAmbiguous(["sbatch"], 1, "", "sbatch: error: Socket timed out on send/recv operation")
    ids = submit_run(store, Faulty(fake, 2, fault))
    assert len(ids) == 6 and set(jobs_per_name(fake).values()) == {1}


def test_resume_after_parents_finished_drops_or_skips_edges(prepared: tuple[Prepared, FakeSlurm, Path]) -> None:
    prep, fake, tmp = prepared
    store = new_run(prep, tmp)
    with pytest.raises(KeyboardInterrupt):
        submit_run(store, Faulty(fake, 3, KeyboardInterrupt()))
    fake.advance(600)  # prep, train and eval end long before the resume (older than MinJobAge)
    ids = submit_run(store, fake, resume=True)
    report = fake.tasks[ids["report"]]
    assert report.dependency is None and report.state is JobState.RUNNING  # afterany on an ended eval: satisfied
    assert "on_failure" not in ids  # afternotok on a train that succeeded: can never run
    assert "on_failure" in store.state().skipped


def test_resume_judges_a_parent_by_the_jobs_that_hold_its_tasks_now(tmp_path: Path) -> None:
    """A launch is interrupted; meanwhile a training task runs out of memory and the monitor
    resubmits it with more, and it succeeds. Resume must see train as succeeded (its tasks' current
    jobs), not failed (the original job's record): the failure handler never runs."""

    def program(spec: JobSpec, index: int | None, restarts: int) -> Outcome:
        if ".train." in spec.name and index == 1 and megabytes(spec.mem or "1M") < 2048:
            return Outcome(0, 2, state=JobState.OUT_OF_MEMORY)
        return Outcome(0, 2)

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    fake = FakeSlurm(program=program)
    oom = "+stages.train.retry={oom_mem_factor: 2, oom_mem_cap: 4G}"
    prep = prepare(tmp_path / "configs", "config", [oom], fake.cluster_info())
    store = new_run(prep, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        submit_run(store, Faulty(fake, 3, KeyboardInterrupt()))  # prep, train, eval in Slurm; the rest not
    fake.advance(10)
    assert [a.kind for a in tick(store, fake).actions].count("resubmitted") == 1
    fake.advance(600)  # everything ends, the resubmitted task included
    train = next(n for n in prep.plan.nodes if n.stage == "train")
    state = store.state()
    assert fake.tasks[f"{state.job_of(train.key, 1)}_1"].state is JobState.COMPLETED
    ids = submit_run(store, fake, resume=True)
    assert "on_failure" not in ids and "on_failure" in store.state().skipped
    assert fake.tasks[ids["report"]].state is JobState.RUNNING


def test_second_submitter_is_refused(prepared: tuple[Prepared, FakeSlurm, Path]) -> None:
    prep, fake, tmp = prepared
    store = new_run(prep, tmp)
    with store.lock(), pytest.raises(Exception, match="being submitted by another process"):
        submit_run(store, fake)


def test_local_backend_runs_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from slurmflow.cli.main import main

    for d in ("configs", "jobs"):
        shutil.copytree(REPO / d, tmp_path / d)
    monkeypatch.chdir(tmp_path)
    code = main(["launch", "--backend", "local", "--local-gpus", "2", "--runs-dir", "runs", "--json", "seed=range(2)"])
    out = capsys.readouterr().out
    assert code == 0, out
    (run,) = (tmp_path / "runs").iterdir()
    rows = list(csv.DictReader((run / "results.csv").open()))  # `slurmflow results --csv`, run by the report stage
    assert len(rows) == 4 and all(r["state"] == "COMPLETED" for r in rows)
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"] and float(rows[0]["test_accuracy"]) > 0.9
    assert (run / "report.html").stat().st_size > 100_000  # plotly.js inlined
    assert '"trials": 4' in (run / "summary.json").read_text()  # the callable stage ran, in the job


class Refusing:
    """Wraps a backend; refuses the n-th submission (no job is created) with a limit's error."""

    def __init__(self, inner: FakeSlurm, n: int, fault: SlurmError) -> None:
        self.inner, self.n, self.fault, self.count = inner, n, fault, 0

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        self.count += 1
        if self.count == self.n:
            raise self.fault
        return self.inner.submit(spec, script_path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (
            PolicyViolation(
                ["sbatch"],
                1,
                "",
                "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
                "(job submit limit, user's size and/or time limits)",
            ),
            "an association or QOS limit (Batch job submission failed: Job violates accounting/QOS policy",
        ),
        (
            ControllerFull(
                ["sbatch"],
                1,
                "",
                "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n"
                "sbatch: error: Batch job submission failed: Resource temporarily unavailable",
            ),
            "the controller holds its MaxJobCount of jobs",
        ),
    ],
)
def test_a_limit_refusal_stops_the_launch_resumably(
    prepared: tuple[Prepared, FakeSlurm, Path], fault: SlurmError, said: str
) -> None:
    prep, fake, tmp = prepared
    store = new_run(prep, tmp)
    with pytest.raises(SubmissionRefused) as refused:
        submit_run(store, Refusing(fake, 2, fault))
    msg = str(refused.value)
    assert msg.startswith("Slurm refused train.0 (6 tasks): ") and said in msg, msg
    assert f"`slurmflow resume {store.run_id}`" in msg and "1 of 6 submissions" in msg and "\n" not in msg
    assert refused.value.exit_code == 3 and refused.value.node == "train.0"
    state = store.state()
    assert list(state.submitted) == ["prep"] and "train.0" in state.intents
    assert [e.why for e in store.events() if isinstance(e, Refused)] == [
        "submit limit" if isinstance(fault, PolicyViolation) else "MaxJobCount"
    ]
    ids = submit_run(store, fake, resume=True)
    assert len(ids) == 6 and set(jobs_per_name(fake).values()) == {1}


class Away:
    """Wraps a backend; from the n-th submission on, the controller does not answer `away` RPCs in
    a row (and, with `created`, the first of those did reach it and made the job)."""

    def __init__(self, inner: FakeSlurm, n: int, away: int, *, created: bool = False) -> None:
        self.inner, self.n, self.away, self.created, self.count, self.failed = inner, n, away, created, 0, 0
        self.down = ControllerUnavailable(
            ["sbatch"], 1, "", "sbatch: error: Batch job submission failed: Unable to contact slurm controller"
        )

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        self.count += 1
        if self.count >= self.n and self.failed < self.away:
            self.failed += 1
            if self.created and self.failed == 1:
                self.inner.submit(spec, script_path)
            raise self.down
        return self.inner.submit(spec, script_path)

    def query(self, *args: Any, **kw: Any) -> Any:
        if self.count >= self.n and 0 < self.failed < self.away:
            self.failed += 1
            raise self.down  # the reconcile meets the same absent controller
        return self.inner.query(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _patient(store: RunStore, waits: list[float], patience: float) -> Any:
    """submit_run's context with a sleep that records its waits instead of sleeping."""
    import dataclasses

    from slurmflow.run import launch
    from slurmflow.slurm.backoff import Backoff

    real = launch.context

    def context(*a: Any, **kw: Any) -> Any:
        return dataclasses.replace(real(*a, **kw), backoff=Backoff(patience=patience, sleep=waits.append))

    return context


@pytest.mark.parametrize("created", [False, True])
def test_a_restarting_controller_is_waited_for_with_backoff_and_nothing_doubles(
    prepared: tuple[Prepared, FakeSlurm, Path], monkeypatch: pytest.MonkeyPatch, created: bool
) -> None:
    prep, fake, tmp = prepared
    store = new_run(prep, tmp)
    waits: list[float] = []
    from slurmflow.run import submission

    monkeypatch.setattr(submission, "context", _patient(store, waits, patience=600))
    ids = submit_run(store, Away(fake, 3, 4, created=created))
    assert len(ids) == 6 and set(jobs_per_name(fake).values()) == {1}
    assert waits == [1.0, 2.0, 4.0, 8.0]  # doubling, then it answered
    assert [e.retry_in for e in store.events() if isinstance(e, ControllerBusy)] == waits


def test_a_controller_away_too_long_stops_the_launch_resumably(
    prepared: tuple[Prepared, FakeSlurm, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    prep, fake, tmp = prepared
    store = new_run(prep, tmp)
    waits: list[float] = []
    from slurmflow.run import submission

    monkeypatch.setattr(submission, "context", _patient(store, waits, patience=60))
    with pytest.raises(SubmissionRefused) as gone:
        submit_run(store, Away(fake, 2, 1000))
    msg = str(gone.value)
    assert "did not answer for 60 s (Batch job submission failed: Unable to contact slurm controller)" in msg
    assert f"`slurmflow resume {store.run_id}`" in msg and sum(waits) <= 60
    assert list(store.state().submitted) == ["prep"]
    monkeypatch.undo()
    ids = submit_run(store, fake, resume=True)
    assert len(ids) == 6 and set(jobs_per_name(fake).values()) == {1}


def test_a_campaign_the_controller_cannot_hold_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    import dataclasses

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    small = dataclasses.replace(FakeSlurm().cluster_info(), max_job_count=10)
    with pytest.raises(UsageError, match=r"queues 16 tasks .*MaxJobCount=10"):
        prepare(tmp_path / "configs", "config", [], small)  # the demo: 6 trials x 2 stages + 4 jobs
    with pytest.raises(UsageError, match="ceiling of 12"):
        prepare(tmp_path / "configs", "config", [], FakeSlurm().cluster_info(), max_tasks=12)
    assert prepare(tmp_path / "configs", "config", [], FakeSlurm().cluster_info(), max_tasks=16).plan.tasks() == 16
    assert not (tmp_path / "runs").exists()
