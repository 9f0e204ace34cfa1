"""The Backend contract. Each scenario runs against FakeSlurm and the local engine (always) and the
real mini cluster (integration tier): the fake and the local engine are trusted only where the
cluster passes too. Outcomes are read back from the
scheduler itself (squeue and sacct on the real cluster)."""

from __future__ import annotations

import pytest

from slurmflow.errors import SlurmError
from slurmflow.slurm.types import Dependency, DepKind, JobState
from tests.contract.harness import Harness, History, Jobs, Work, all_final, states

pytestmark = pytest.mark.smoke  # the whole contract runs on every Slurm version of the matrix

CD, F, CA, PD = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.PENDING
FAIL_2 = Work(seconds=1, fail_tasks=frozenset({2}))


def tasks(job_id: str, n: int = 4) -> list[str]:
    return [f"{job_id}_{i}" for i in range(n)]


def stuck(job_id: str) -> object:
    return lambda jobs: jobs[job_id].state is PD and jobs[job_id].reason == "DependencyNeverSatisfied"


def test_gpu_array_task_failure_is_per_task(harness: Harness) -> None:
    a = harness.submit("arr", FAIL_2, array="0-3", gpus_per_task=1)
    jobs = harness.wait(a, all_final(4), 120, "array finished")
    assert states(jobs, tasks(a)) == [CD, CD, F, CD]
    assert jobs[f"{a}_2"].exit_code == 3
    assert all(j.nodes and j.nodes.startswith(harness.gpu_nodes) for j in jobs.values())
    assert {j.user for j in jobs.values()} == {"alice"}


def test_afterok_child_never_runs_and_afternotok_handler_runs(harness: Harness) -> None:
    a = harness.submit("parent", FAIL_2, array="0-3", gpus_per_task=1)
    child = harness.submit("child", Work(), dependency=Dependency.on(DepKind.AFTER_OK, a), kill_on_invalid_dep=False)
    handler = harness.submit("handler", Work(), dependency=Dependency.on(DepKind.AFTER_NOT_OK, a))
    final = harness.submit("finally", Work(), dependency=Dependency.on(DepKind.AFTER_ANY, a))
    assert harness.wait(handler, all_final(1), 120, "handler finished")[handler].state is CD
    assert harness.wait(final, all_final(1), 60, "afterany finished")[final].state is CD
    jobs = harness.wait(child, stuck(child), 60, "child stuck")  # type: ignore[arg-type]
    assert jobs[child].state is PD  # without --kill-on-invalid-dep it would pend forever


def test_kill_on_invalid_dep_cancels_the_child(harness: Harness) -> None:
    a = harness.submit("parent", Work(fail=True))
    child = harness.submit("child", Work(), dependency=Dependency.on(DepKind.AFTER_OK, a))
    jobs = harness.wait(child, all_final(1), 120, "child cancelled")
    assert jobs[child].state is CA and jobs[child].reason == "DependencyNeverSatisfied"


def test_aftercorr_pairs_tasks(harness: Harness) -> None:
    a = harness.submit("train", FAIL_2, array="0-3", gpus_per_task=1)
    ev = harness.submit("eval", Work(), array="0-3", dependency=Dependency.on(DepKind.AFTER_CORR, a))
    jobs = harness.wait(ev, all_final(4), 120, "eval array finished")
    assert states(jobs, tasks(ev)) == [CD, CD, CA, CD]
    assert jobs[f"{ev}_2"].reason == "DependencyNeverSatisfied"
    assert jobs[f"{ev}_2"].nodes is None  # it never ran


def test_requeue_does_not_revive_a_child_but_a_dependency_update_does(harness: Harness) -> None:
    parent = harness.submit("parent", Work(fail=True, succeed_after_restart=True))
    child = harness.submit(
        "child", Work(), dependency=Dependency.on(DepKind.AFTER_OK, parent), kill_on_invalid_dep=False
    )
    harness.wait(child, stuck(child), 120, "child stuck")  # type: ignore[arg-type]
    assert harness.jobs(parent)[parent].state is F

    harness.backend.requeue([parent], start_now=True)
    jobs = harness.wait(parent, lambda j: j[parent].state is CD, 120, "requeued parent succeeded")
    assert jobs[parent].restarts == 1
    # Slurm's trap: the parent succeeded, yet the child stays stuck until it is rewired, through
    # scheduling passes that would have started it.
    harness.stays(child, stuck(child), 2, 180, "child stuck after its parent succeeded")  # type: ignore[arg-type]

    harness.backend.update_dependency(child, Dependency.on(DepKind.AFTER_OK, parent))
    assert harness.wait(child, all_final(1), 120, "revived child finished")[child].state is CD


def test_singleton_runs_one_at_a_time(harness: Harness) -> None:
    first = harness.submit("single", Work(seconds=6))
    second = harness.submit("single", Work(seconds=1), dependency=Dependency.on(DepKind.SINGLETON))
    harness.wait(first, lambda j: j[first].state is JobState.RUNNING, 60, "first running")
    jobs = harness.jobs(second)
    assert jobs[second].state is PD and jobs[second].reason == "Dependency"
    assert harness.wait(second, all_final(1), 120, "second finished")[second].state is CD
    assert harness.jobs(first)[first].state is CD


def test_dependency_on_unknown_job_is_rejected_or_taken_as_satisfied(harness: Harness) -> None:
    unknown = Dependency.on(DepKind.AFTER_OK, "987654")
    if harness.backend.capabilities().rejects_unknown_dependency:  # 23.02 and later
        with pytest.raises(SlurmError, match="dependency"):
            harness.submit("orphan", Work(), dependency=unknown)
        return
    # 22.05 accepts it and treats it as satisfied: the child runs at once. This is why the submitter
    # never emits a dependency on a job older than MinJobAge.
    orphan = harness.submit("orphan", Work(), dependency=unknown)
    assert harness.wait(orphan, all_final(1), 120, "orphan ran")[orphan].state is CD


def test_history_has_one_attempt_per_start(harness: Harness) -> None:
    a = harness.submit("hist", Work(seconds=1), array="0-1")
    gpu = harness.submit("hist-gpu", Work(seconds=1), gpus_per_task=1)
    harness.wait(a, all_final(2), 120, "array finished")
    again = f"{a}_1"
    harness.backend.requeue([again], start_now=True)
    harness.wait(a, lambda j: j[again].state is CD and (j[again].restarts or 0) == 1, 120, "requeued task ran again")
    harness.wait(gpu, all_final(1), 120, "GPU job finished")
    # Attempts per task, as seen above: not from a later query, whose restart count is the
    # controller's only until it forgets the job (MinJobAge); accounting keeps no count.
    expected = {f"{a}_0": 1, again: 2, gpu: 1}

    def recorded(history: History) -> bool:
        """Accounting has every attempt of every task, each ended."""
        return all(
            len([x for x in history if x.job_id == k]) == n and all(x.end is not None for x in history if x.job_id == k)
            for k, n in expected.items()
        )

    history = harness.history([a, gpu], recorded, 60, "every attempt recorded")
    assert {x.job_id for x in history} == set(expected)
    by_task = {k: [x for x in history if x.job_id == k] for k in expected}
    # The attempt before the requeue: REQUEUED in 22.05's and 24.11's accounting (and the engines'),
    # the state it had ended in (COMPLETED) in 26.05's.
    before, *after = by_task[again]
    assert before.state in (JobState.REQUEUED, CD) and before.restart == 0
    assert [(x.state, x.restart) for x in after] == [(CD, 1)]
    assert [(x.state, x.restart) for x in by_task[f"{a}_0"]] == [(CD, 0)]
    assert [(x.state, x.gpus) for x in by_task[gpu]] == [(CD, 1)]
    assert str(by_task[gpu][0].node).startswith(harness.gpu_nodes)
    for x in history:
        assert x.submit is not None and x.start is not None and x.end is not None, x
        assert x.submit <= x.start <= x.end and x.node, x
    first, second = by_task[again]
    assert first.end is not None and second.submit is not None and first.end <= second.submit


@pytest.mark.not_local
def test_stopped_node_requeues_or_fails_its_jobs(harness: Harness) -> None:
    keep = harness.submit("requeue", Work(seconds=600), requeue=True)
    lose = harness.submit("norequeue", Work(seconds=600), requeue=False)

    def running(jobs: Jobs) -> bool:
        return jobs[next(iter(jobs))].state is JobState.RUNNING

    nodes = {harness.wait(j, running, 60, "running")[j].nodes for j in (keep, lose)}
    assert all(nodes)
    try:
        for node in nodes:
            harness.stop_node(str(node))
        lost = harness.wait(lose, all_final(1), 120, "NODE_FAIL")[lose]
        assert lost.state is JobState.NODE_FAIL
        kept = harness.wait(keep, lambda j: (j[keep].restarts or 0) >= 1, 60, "requeued")[keep]
        assert kept.state in (PD, JobState.RUNNING) and not kept.state.final
    finally:
        for node in nodes:
            harness.start_node(str(node))


@pytest.mark.not_local
def test_account_gpu_cap_makes_jobs_pend_for_a_non_root_user(harness: Harness) -> None:
    bob = harness.as_user("bob", "lab-b")
    harness.set_gpu_cap("lab-b", 2)
    try:
        big = bob.submit("big", Work(seconds=1), gpus_per_task=4)
        jobs = bob.wait(big, lambda j: j[big].reason == "AssocGrpGRES", 60, "AssocGrpGRES")
        assert jobs[big].state is PD and jobs[big].user == "bob" and jobs[big].account == "lab-b"
    finally:
        harness.set_gpu_cap("lab-b", None)
    # With the cap lifted the same job runs: the cap, not the node, held it back.
    assert bob.wait(big, all_final(1), 120, "uncapped job finished")[big].state is CD


def test_max_array_size_caps_the_highest_index(harness: Harness) -> None:
    # MaxArraySize=1001 allows indices 0..1000 whatever the count: a bigger sweep must be chunked.
    limit = harness.backend.config().max_array_size
    ok = harness.submit("edge", Work(seconds=1), array=f"{limit - 1}")
    assert harness.wait(ok, all_final(1), 120, "highest index ran")[f"{ok}_{limit - 1}"].state is CD
    with pytest.raises(SlurmError, match="array"):
        harness.submit("over", Work(), array=f"{limit}")
