from __future__ import annotations

import pytest

from slurmflow.model import RetryPolicy
from slurmflow.monitoring.policy import Act, Observed, decide
from slurmflow.slurm.types import JobState

DEFAULT = RetryPolicy()


@pytest.mark.parametrize(
    ("obs", "retry", "done", "act", "needle"),
    [
        (Observed(JobState.NODE_FAIL, 0, nodes="gpu2"), DEFAULT, 0, Act.REQUEUE, "infrastructure, retry 1 of 2"),
        (Observed(JobState.NODE_FAIL, 0, nodes="gpu2"), DEFAULT, 2, Act.GIVE_UP, "2 retries used"),
        (Observed(JobState.PREEMPTED), DEFAULT, 0, Act.RESUBMIT, "PREEMPTED: infrastructure, retry 1 of 2"),
        (Observed(JobState.PREEMPTED), DEFAULT, 2, Act.GIVE_UP, "PREEMPTED: 2 retries used"),
        (Observed(JobState.BOOT_FAIL), DEFAULT, 1, Act.REQUEUE, "retry 2 of 2"),
        (Observed(JobState.TIMEOUT, 0), DEFAULT, 0, Act.GIVE_UP, "does not retry time limits"),
        (Observed(JobState.TIMEOUT, 0), RetryPolicy(timeouts=3), 2, Act.REQUEUE, "retry 3 of 3"),
        (Observed(JobState.FAILED, 1), DEFAULT, 0, Act.GIVE_UP, "exit code 1: the program's own failure"),
        (Observed(JobState.FAILED, 75), RetryPolicy(exit_codes=(75,)), 0, Act.REQUEUE, "exit code 75 is retryable"),
        (
            Observed(JobState.FAILED, 75),
            RetryPolicy(exit_codes=(75,), exit_retries=1),
            1,
            Act.GIVE_UP,
            "1 retries used",
        ),
        (Observed(JobState.OUT_OF_MEMORY, 0), DEFAULT, 0, Act.GIVE_UP, "raise the stage's mem"),
        (Observed(JobState.CANCELLED, cancelled_by="2001"), RetryPolicy(infra=9), 0, Act.NONE, "never retried"),
        (Observed(JobState.CANCELLED, reason="DependencyNeverSatisfied"), DEFAULT, 0, Act.NONE, "revived if"),
        (Observed(JobState.PENDING, reason="AssocGrpGRES"), DEFAULT, 0, Act.NONE, "not failed"),
        (Observed(JobState.RUNNING), DEFAULT, 0, Act.NONE, "not failed"),
        (Observed(JobState.COMPLETED, 0), DEFAULT, 0, Act.NONE, "not failed"),
    ],
)
def test_decide(obs: Observed, retry: RetryPolicy, done: int, act: Act, needle: str) -> None:
    d = decide(obs, retry, done)
    assert d.act is act and needle in d.why


def test_node_fail_excludes_the_node_unless_told_not_to() -> None:
    assert decide(Observed(JobState.NODE_FAIL, nodes="gpu2"), DEFAULT, 0).exclude_node == "gpu2"
    assert (
        decide(Observed(JobState.NODE_FAIL, nodes="gpu2"), RetryPolicy(exclude_failed_node=False), 0).exclude_node
        is None
    )
    assert decide(Observed(JobState.PREEMPTED, nodes="gpu2"), DEFAULT, 0).exclude_node is None


def test_no_requeue_jobs_are_given_up_not_requeued() -> None:
    d = decide(Observed(JobState.NODE_FAIL, requeueable=False), DEFAULT, 0)
    assert d.act is Act.GIVE_UP and "requeue: false" in d.why


def test_out_of_memory_bump() -> None:
    from slurmflow.monitoring.policy import scaled_mem
    from slurmflow.slurm.units import megabytes

    retry = RetryPolicy(oom_mem_factor=2, oom_mem_cap="6G")
    d = decide(Observed(JobState.OUT_OF_MEMORY, mem="2G"), retry, 0)
    assert d.act is Act.RESUBMIT and d.mem == "4096M"
    assert decide(Observed(JobState.OUT_OF_MEMORY, mem="4G"), retry, 1).mem == "6144M"  # 4G x 2, capped at 6G
    assert decide(Observed(JobState.OUT_OF_MEMORY, mem="2G"), retry, 2).act is Act.GIVE_UP  # oom_retries used
    assert decide(Observed(JobState.OUT_OF_MEMORY, mem=None), retry, 0).act is Act.GIVE_UP
    assert megabytes("512") == 512 and megabytes("1T") == 1024 * 1024 and scaled_mem("6G", 2, "6G") is None


@pytest.mark.parametrize(
    ("answer", "preempted"),
    [
        ((0, "JobId=7 JobName=x RunTime=00:00:04 PreemptEligibleTime=2026-12-06T14:40:39 PreemptTime=None\n"), False),
        (
            (0, "JobId=7 PreemptEligibleTime=2026-12-06T14:40:39 PreemptTime=2026-12-06T14:40:42 SuspendTime=None\n"),
            True,
        ),
        ((1, "slurm_load_jobs error: Invalid job id specified\n"), False),
        ((0, "JobId=7 (an older scontrol without the field)\n"), False),
    ],
)
def test_the_task_wrapper_leaves_a_preempted_jobs_requeue_to_slurm(answer: tuple[int, str], preempted: bool) -> None:
    """On its checkpoint signal the wrapper requeues its own job, unless the signal began a
    preemption's grace (scontrol's PreemptTime is set, as 24.11 prints it)."""
    from slurmflow.job.task import _being_preempted
    from slurmflow.slurm.runner import FunctionRunner

    runner = FunctionRunner(lambda argv, _input: (answer[0], answer[1], ""))
    assert _being_preempted(runner, "7") is preempted
    assert runner.calls == [("scontrol", "show", "job", "-o", "7")]
