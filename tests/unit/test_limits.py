"""A submission refused by a limit, explained with the limit's name and number (pure)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from slurmflow.cli.commands import say_budget
from slurmflow.errors import AccountingUnavailable, ControllerFull, PolicyViolation, UsageError
from slurmflow.model import Resources, Stage
from slurmflow.planning import planner
from slurmflow.planning.limits import refusal_message
from slurmflow.quota.budget import judge, submit_refusals
from slurmflow.run.launch import Prepared
from slurmflow.slurm.accounting import Usage
from slurmflow.slurm.types import ClusterConfig, ClusterInfo

POLICY = PolicyViolation(
    ["sbatch"],
    1,
    "",
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
    "(job submit limit, user's size and/or time limits)\n",
)
FULL = ControllerFull(
    ["sbatch"], 1, "", "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n"
)
COMMON = {"run_id": "r-1", "node": "train.1", "tasks": 1001, "submitted": 2, "total": 5}


def test_max_job_count_names_the_number_and_min_job_age() -> None:
    msg = refusal_message(cause=FULL, config=ClusterConfig("22.05.8", 1001, 10000, 300), **COMMON)  # type: ignore[arg-type]
    assert msg.startswith("Slurm refused train.1 (1,001 tasks): the controller holds its MaxJobCount of 10,000 jobs")
    assert "MinJobAge, 300 s" in msg and "2 of 5 submissions" in msg and "`slurmflow resume r-1`" in msg
    assert "\n" not in msg


def test_user_and_account_submit_limits_with_what_is_queued() -> None:
    usages = [
        Usage("lab-a", "", submit_limit=5000, jobs_submitted=4200),
        Usage("lab-a", "alice", submit_limit=1200, jobs_submitted=700, default=True),
        Usage("lab-a", "bob", submit_limit=10, jobs_submitted=0),
        Usage("lab-b", "alice", submit_limit=1, jobs_submitted=0),
    ]
    msg = refusal_message(cause=POLICY, usages=usages, user="alice", account=None, **COMMON)  # type: ignore[arg-type]
    assert "account lab-a has GrpSubmitJobs=5,000 and 4,200 are queued" in msg
    assert "your association lab-a/alice has MaxSubmitJobs=1,200 and 700 are queued" in msg
    assert "bob" not in msg and "lab-b" not in msg  # not the association this launch is charged to
    assert "room for 500 more" in msg and "array tasks count one job each" in msg


def test_an_explicit_account_picks_its_association() -> None:
    usages = [Usage("lab-a", "alice", submit_limit=3, default=True), Usage("lab-b", "alice", submit_limit=1)]
    msg = refusal_message(cause=POLICY, usages=usages, user="alice", account="lab-b", **COMMON)  # type: ignore[arg-type]
    assert "lab-b/alice has MaxSubmitJobs=1" in msg and "lab-a" not in msg


def test_without_a_known_limit_slurms_words_are_kept() -> None:
    msg = refusal_message(cause=POLICY, **COMMON)  # type: ignore[arg-type]
    assert "an association or QOS limit (Batch job submission failed: Job violates accounting/QOS policy" in msg
    assert "`slurmflow quota`" in msg and "`slurmflow resume r-1`" in msg


def test_a_qos_submit_limit_is_named() -> None:
    limits = {"normal": (40, None), "long": (None, 100)}
    msg = refusal_message(cause=POLICY, qos="normal", qos_limits=limits, **COMMON)  # type: ignore[arg-type]
    assert "QOS normal has MaxSubmitJobsPerUser=40" in msg and "long" not in msg and "room for" not in msg
    msg = refusal_message(cause=POLICY, qos_limits=limits, **COMMON)  # type: ignore[arg-type]
    assert "QOS long has GrpSubmitJobs=100" in msg and "QOS normal has MaxSubmitJobsPerUser=40" in msg


def test_a_campaign_bigger_than_max_job_count_or_the_ceiling_is_refused() -> None:
    from slurmflow.planning.limits import size_refusal

    assert size_refusal(60_000, max_job_count=60_000, max_tasks=None) is None
    over = size_refusal(20_000_000, max_job_count=60_000, max_tasks=None)
    assert over is not None and "20,000,000 tasks" in over and "MaxJobCount=60,000" in over
    ceiling = size_refusal(5_000, max_job_count=60_000, max_tasks=2_000)
    assert ceiling is not None and "ceiling of 2,000" in ceiling and "--max-tasks" in ceiling


def test_submit_room_is_the_tightest_limit_of_the_charged_association() -> None:
    from slurmflow.planning.limits import submit_room

    usages = [
        Usage("lab-a", "", submit_limit=5000, jobs_submitted=4200),  # room 800
        Usage("lab-a", "alice", submit_limit=1200, jobs_submitted=700, default=True),  # room 500
        Usage("lab-b", "", submit_limit=10, jobs_submitted=10),  # another account: not charged
    ]
    assert submit_room(usages, "alice", None) == (
        "your association lab-a/alice has MaxSubmitJobs=1,200 and 700 are queued",
        500,
    )
    assert submit_room(usages, "alice", "lab-b") == ("account lab-b has GrpSubmitJobs=10 and 10 are queued", 0)
    assert submit_room([Usage("lab-a", "alice", default=True)], "alice", None) is None  # unlimited


def _campaign_on_two_accounts() -> Prepared:
    """600 trials of two stages: `train` on the user's default account (lab-a), `bulk` on lab-b."""
    stages = {
        "train": Stage("train", command="t", per_trial=True),
        "bulk": Stage("bulk", command="b", per_trial=True, resources=Resources(account="lab-b")),
    }
    plan = planner.plan("x", stages, 600, ClusterInfo(max_array_size=1001, partition_gpus={"gpu": 4}))
    return Prepared(None, plan, ClusterInfo())  # type: ignore[arg-type]


# alice may queue 1,000 jobs in lab-a and has 500 queued: the 600 train tasks do not fit.
TIGHT = [
    Usage("lab-a", "alice", submit_limit=1000, jobs_submitted=500, default=True),
    Usage("lab-b", "", submit_limit=5000),
]


def test_submit_refusals_name_the_account_that_cannot_hold_its_tasks() -> None:
    prep = _campaign_on_two_accounts()
    (refusal,) = submit_refusals(prep.plan, TIGHT, "alice")
    assert refusal.startswith("this campaign queues 600 tasks on account lab-a") and "room for 500" in refusal
    assert "--force" in refusal
    assert submit_refusals(prep.plan, [Usage("lab-a", "alice", submit_limit=1000, default=True)], "alice") == []


class _Accounting:
    """The two questions the pre-launch check asks the cluster: who am I, and my associations' usage."""

    def __init__(self, usages: list[Usage] | None) -> None:
        self.usages = usages

    def whoami(self) -> str:
        return "alice"

    def qos_submit_limits(self) -> dict[str, tuple[int | None, int | None]]:
        return {}

    def usage(self) -> list[Usage]:
        if self.usages is None:
            raise AccountingUnavailable(["sacctmgr"], 1, "", "sacctmgr: error: slurmdbd: Connection refused")
        return self.usages


def _check(usages: list[Usage] | None, *, force: bool = False, planning: bool = False) -> str:
    out = io.StringIO()
    prep = _campaign_on_two_accounts()
    verdict = judge(prep.plan, _Accounting(usages), prep.cluster.user)
    say_budget(verdict, Console(file=out, width=400), force=force, planning=planning)
    return out.getvalue()


def test_launch_refuses_a_campaign_its_submit_limits_cannot_hold() -> None:
    """What `slurmflow launch` and `plan` run before anything is written (commands._budget)."""
    with pytest.raises(UsageError, match=r"^this campaign queues 600 tasks on account lab-a .*room for 500"):
        _check(TIGHT)
    forced = _check(TIGHT, force=True)
    assert "warning (--force): this campaign queues 600 tasks on account lab-a" in forced
    planned = _check(TIGHT, planning=True)
    assert "launch would refuse this campaign: this campaign queues 600 tasks on account lab-a" in planned
    # Room enough, or no accounting to ask: nothing is said, Slurm alone decides.
    assert _check([Usage("lab-a", "alice", submit_limit=1000, jobs_submitted=400, default=True)]) == ""
    assert _check(None) == ""
