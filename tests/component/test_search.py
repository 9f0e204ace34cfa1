"""A `search:` run against the in-memory Slurm, in simulated time: launch submits the first batch
and returns; monitor ticks tell the study, keep `batch` trials in flight, prune, stop at the budget
and plan the closing stages; an interrupted step (after the ask, after the manifest, after an
intent) is finished by the next one, with no trial lost or asked for twice."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from slurmflow.backends import FakeSlurm, Outcome
from slurmflow.monitoring.monitor import tick
from slurmflow.monitoring.observe import campaign
from slurmflow.run import launch, schedulers, search
from slurmflow.rundir.events import Told
from slurmflow.rundir.store import RunStore
from slurmflow.search import space, study
from slurmflow.slurm.types import JobSpec, JobState

CONFIG = """\
name: s
x: 0.0
y: 0.0
steps: 4
stages:
  train:
    per_trial: true
    command: echo ${x} ${y}
    resources: {gpus: 1, time: "1:00:00"}
  report:
    after_any: [train]
    command: echo report
  handler:
    after_not_ok: [train]
    command: echo failed
search:
  params: {x: "interval(-5.0, 10.0)", y: "interval(0.0, 15.0)"}
  sampler: random
  n_trials: 10
  batch: 3
  seed: 1
objective: {metric: value, mode: min}
"""


def branin(x: float, y: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


class Jobs:
    """The fake's program: each train task writes what jobs/noisy2d.py would (a curve of `value`
    converging on the Branin value of its trial's x and y, and the final value), `seconds` long."""

    def __init__(self, runs: Path, seconds: float = 10.0) -> None:
        self.runs, self.seconds = runs, seconds

    def __call__(self, spec: JobSpec, index: int | None, restarts: int) -> Outcome:
        (self.store,) = [RunStore(p) for p in self.runs.iterdir()]  # the test's one run
        node = spec.name.removeprefix(f"sf.{self.store.run_id}.")
        plan = self.store.plan()
        if index is None or not node.startswith("train."):
            return Outcome(0, 1)
        trial = self.store.read_trial(plan.node(node).offset + index)
        values = dict(trial.values or ())
        final = branin(float(values["x"]), float(values["y"]))  # type: ignore[arg-type]
        d = self.store.path("trials", str(trial.index), "metrics")
        d.mkdir(parents=True, exist_ok=True)
        lines = [{"t": float(s), "step": s, "m": {"value": final * (1 + 2.0 / (s + 1))}} for s in range(4)]
        lines.append({"t": 5.0, "final": {"value": final}})
        (d / f"train.{spec.name}.{restarts}.0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        return Outcome(0, self.seconds)


def launched(
    tmp: Path,
    fake: FakeSlurm,
    config: str = CONFIG,
    seconds: float = 10.0,
    overrides: tuple[str, ...] = (),
    program: type[Jobs] | None = None,
) -> RunStore:
    cfg = tmp / "cfg"
    cfg.mkdir(exist_ok=True)
    (cfg / "config.yaml").write_text(config)
    prep = launch.prepare(cfg, "config", list(overrides), fake.cluster_info(), cwd=tmp)
    fake.program = (program or Jobs)(tmp / "runs", seconds)
    store, _ids = launch.launch(
        prep, schedulers.Chosen(fake, None), tmp / "runs", via=None, cwd=tmp, python="python3", argv=["t"]
    )
    return store


def in_flight(store: RunStore) -> int:
    st = study.open_study(store)
    assert st is not None
    return sum(1 for t in st.get_trials(deepcopy=False) if not t.state.is_finished())


def run_to_end(store: RunStore, fake: FakeSlurm, *, step: float = 3.0, limit: int = 400) -> list[int]:
    """Tick until the monitor says the run has ended; the trials in flight after each tick."""
    seen = []
    for _ in range(limit):
        fake.advance(step)
        done = tick(store, fake).done
        seen.append(in_flight(store))
        if done:
            return seen
    raise AssertionError("the search did not end")


@pytest.fixture
def fake() -> FakeSlurm:
    return FakeSlurm()


def test_launch_submits_the_first_batch_and_returns(tmp_path: Path, fake: FakeSlurm) -> None:
    store = launched(tmp_path, fake)
    plan, state = store.plan(), store.state()
    assert [n.key for n in plan.nodes] == ["train.0"] and plan.node("train.0").size == 3
    assert set(state.submitted) == {"train.0"}  # report and handler wait for the end of the search
    st = study.open_study(store)
    assert st is not None and len(st.trials) == 3
    assert [t.values for t in store.trials()] == [
        tuple(sorted(t.params.items())) for t in sorted(st.trials, key=lambda t: t.number)
    ]


def test_the_monitor_keeps_batch_in_flight_until_n_trials_and_plans_the_closing_stages(
    tmp_path: Path, fake: FakeSlurm
) -> None:
    store = launched(tmp_path, fake)
    seen = run_to_end(store, fake)
    st = study.open_study(store)
    assert st is not None
    assert len(st.trials) == 10 and all(t.state is optuna.trial.TrialState.COMPLETE for t in st.trials)
    assert max(seen) <= 3
    for t in st.trials:  # each told value is the job's own final value
        assert t.value == pytest.approx(branin(t.params["x"], t.params["y"]))
    trials = list(store.trials())
    assert [t.index for t in trials] == list(range(10))
    assert sorted(int(t.user_attrs[study.TRIAL_ATTR]) for t in st.trials) == list(range(10))
    plan, state = store.plan(), store.state()
    assert sum(n.size for n in plan.nodes if n.stage == "train") == 10
    assert all(n.size <= 3 for n in plan.nodes if n.stage == "train")
    assert state.search_done and "report" in state.submitted
    assert "handler" in state.skipped  # nothing failed: the failure handler never runs
    stages = [t.spec.name.removeprefix(f"sf.{store.run_id}.").split(".")[0] for t in fake.tasks.values()]
    assert sorted(stages) == ["report"] + ["train"] * 10  # ten training tasks and the report, none twice


def test_an_ask_that_stopped_before_the_manifest_is_written_down_not_asked_again(
    tmp_path: Path, fake: FakeSlurm
) -> None:
    store = launched(tmp_path, fake)
    spec = study.spec(store.read_json("launch.json"))
    assert spec is not None
    st = study.load(store, spec, study.objectives(store.read_json("launch.json")), asked=3)
    (lost,) = study.ask(st, spec, 3, 1)  # a tick that asked, then died
    fake.advance(1)
    search.advance(store, fake)
    trial = store.read_trial(3)
    assert dict(trial.values or ()) == lost.params
    assert "train.1" in store.state().submitted and store.plan().node("train.1").offset == 3
    run_to_end(store, fake)
    final = study.open_study(store)
    assert final is not None and len(final.trials) == 10 and store.trial_count() == 10


def test_trials_written_down_but_not_planned_are_planned_by_the_next_step(tmp_path: Path, fake: FakeSlurm) -> None:
    store = launched(tmp_path, fake)
    spec = study.spec(store.read_json("launch.json"))
    assert spec is not None
    objs = study.objectives(store.read_json("launch.json"))
    st = study.load(store, spec, objs, asked=3)
    run = search._Run(store, fake, spec, objs, store.read_json("launch.json"), lambda: 0.0)
    search._write_down(run, study.ask(st, spec, 3, 2))  # then died before the plan
    search.advance(store, fake)
    plan = store.plan()
    assert plan.node("train.1").offset == 3 and plan.node("train.1").size == 2
    assert "train.1" in store.state().submitted
    jobs = [t for t in fake.tasks.values() if t.spec.name.endswith("train.1")]
    assert len(jobs) == 2


def test_a_pruned_trial_is_cancelled_shown_pruned_and_not_a_failure(tmp_path: Path, fake: FakeSlurm) -> None:
    pruner = "  pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 0}\n"
    store = launched(tmp_path, fake, CONFIG.replace("  seed: 1\n", "  seed: 1\n" + pruner), 20.0)
    run_to_end(store, fake, step=1.0, limit=2000)
    state = store.state()
    st = study.open_study(store)
    assert st is not None
    pruned = [t for t in st.trials if t.state is optuna.trial.TrialState.PRUNED]
    assert pruned and set(state.pruned) == {int(t.user_attrs[study.TRIAL_ATTR]) for t in pruned}
    for tasks in state.pruned.values():
        for key in tasks:
            assert fake.query([key]).jobs[0].state is JobState.CANCELLED
    status = campaign(store, fake)
    train = next(s for s in status.stages if s.stage == "train")
    assert train.counts.get("PRUNED") == sum(len(v) for v in state.pruned.values())
    assert not train.failures
    assert not any(a.kind in ("gave_up", "requeued") for a in state.actions)
    assert "handler" in state.skipped and "report" in state.submitted


def test_the_gpu_hour_budget_stops_asking(tmp_path: Path, fake: FakeSlurm) -> None:
    # A trial may take 1 GPU-hour (1 GPU, 1 h limit) and takes half: with 4.5, trials are asked for
    # while what ended used plus one hour per trial in flight or new stays within it.
    store = launched(tmp_path, fake, seconds=1800.0, overrides=("+search.max_gpu_hours=4.5",))
    seen = run_to_end(store, fake, step=60.0)
    st = study.open_study(store)
    assert st is not None and 4 <= len(st.trials) < 10
    assert max(seen) <= 3
    used = sum(a.gpus * (a.end - a.start) for a in fake.history(store.state().jobs(store.plan())) if a.start and a.end)
    assert used / 3600 <= 4.5
    done = [a for a in store.events() if a.kind == "search_done"]
    assert done and "GPU-hour budget" in done[0].why  # type: ignore[union-attr]


def test_search_with_a_sweep_is_refused(tmp_path: Path, fake: FakeSlurm) -> None:
    from slurmflow.errors import UsageError

    with pytest.raises(UsageError, match="cannot be combined"):
        launched(tmp_path, fake, overrides=("x=1,2",))  # a sweep of x on the command line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


REPO = Path(__file__).resolve().parents[2]


def test_the_same_search_runs_on_the_local_backend(tmp_path: Path) -> None:
    """`launch --backend local` of the shipped example: the terminal follows the study to its end
    (the run's supervisor asks for the trials), and the study, the manifest and the tasks agree."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "jobs", tmp_path / "jobs")
    argv = ["launch", "--backend", "local", "--runs-dir", "runs", "experiment=search_demo", "search.n_trials=6"]
    argv += ["search.batch=2", "steps=3", "step_sleep=0"]
    done = subprocess.run(
        [sys.executable, "-m", "slurmflow", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    store = RunStore(run_dir)
    found = study.open_study(store)
    assert found is not None
    assert [t.state for t in found.trials] == [optuna.trial.TrialState.COMPLETE] * 6
    assert sorted(int(t.user_attrs[study.TRIAL_ATTR]) for t in found.trials) == list(range(6))
    assert store.trial_count() == 6 and store.state().search_done
    status = campaign(store, schedulers.of_run(store))
    assert status.done and status.stages[0].counts == {"COMPLETED": 6}
    for t in found.trials:  # each trial ran with the point the study gave it
        trial = store.read_trial(int(t.user_attrs[study.TRIAL_ATTR]))
        assert dict(trial.values or ()) == t.params
        assert t.values is not None and math.isfinite(t.values[0])


class FlakyJobs(Jobs):
    """Trial 1's train task fails once with exit code 75 (an infrastructure failure, by policy)."""

    def __call__(self, spec: JobSpec, index: int | None, restarts: int) -> Outcome:
        out = super().__call__(spec, index, restarts)
        node = spec.name.removeprefix(f"sf.{self.store.run_id}.")
        first = node.startswith("train.") and index is not None and restarts == 0
        if first and self.store.plan().node(node).offset + (index or 0) == 1:
            return Outcome(75, self.seconds)
        return out


def test_a_trial_the_retry_policy_requeues_is_told_once_it_completes(tmp_path: Path, fake: FakeSlurm) -> None:
    config = CONFIG.replace(
        '    resources: {gpus: 1, time: "1:00:00"}\n',
        '    resources: {gpus: 1, time: "1:00:00"}\n    retry: {exit_codes: [75]}\n',
        1,
    )
    assert config != CONFIG
    store = launched(tmp_path, fake, config, program=FlakyJobs)
    run_to_end(store, fake)
    st = study.open_study(store)
    assert st is not None
    assert [t.state for t in st.trials] == [optuna.trial.TrialState.COMPLETE] * 10  # trial 1 is no failure
    assert [a.kind for a in store.state().actions].count("requeued") == 1
    told = [e for e in store.events() if isinstance(e, Told) and e.trial == 1]
    assert [e.state for e in told] == ["COMPLETE"]


def test_an_ask_that_died_before_numbering_its_trial_costs_no_trial(tmp_path: Path, fake: FakeSlurm) -> None:
    from slurmflow.results import study_view

    store = launched(tmp_path, fake)
    spec = study.spec(store.read_json("launch.json"))
    assert spec is not None
    st = study.load(store, spec, study.objectives(store.read_json("launch.json")), asked=3)
    orphan = st.ask(space.distributions(spec))  # created by Optuna, then the process died
    run_to_end(store, fake)
    final = study.open_study(store)
    assert final is not None
    assert final.trials[orphan.number].state is optuna.trial.TrialState.FAIL  # not RUNNING for ever
    assert len(study.by_trial(final)) == 10 and store.trial_count() == 10
    summary = study_view.load(store, importances=False)
    assert summary is not None and (summary.complete, summary.failed, summary.running) == (10, 0, 0)


def test_a_seeded_random_search_proposes_the_same_trials_however_its_asks_are_grouped(tmp_path: Path) -> None:
    points = []
    for batch in (3, 1):
        fake = FakeSlurm()
        (tmp_path / f"b{batch}").mkdir()
        store = launched(tmp_path / f"b{batch}", fake, overrides=(f"search.batch={batch}",))
        run_to_end(store, fake)
        points.append([t.values for t in store.trials()])
    assert len(points[0]) == 10 and points[0] == points[1]
