"""Quotas, pure: the quota file, sacctmgr and assoc_mgr output recorded on the mini cluster, the
difference as sacctmgr argv, and whether a campaign fits what an account has left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from slurmflow.errors import UsageError
from slurmflow.model import JobNode, Plan, Resources, Stage, StageDep
from slurmflow.quota import file as quota
from slurmflow.quota.fit import fit
from slurmflow.slurm.accounting import Assoc, Usage, admin_refusal, is_admin, parse_assoc_mgr, parse_associations
from slurmflow.slurm.types import DepKind

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm" / "24.11"
EXAMPLE: dict[str, Any] = {
    "cluster": "mini",
    "accounts": {
        "lab-a": {
            "gpus": 6,
            "gpu_hours": 500,
            "max_running_jobs": 50,
            "max_submit_jobs": 5000,
            "users": {"alice": {"gpus": 4, "max_submit_jobs": 4000}},
        },
        "lab-b": {"gpus": 2, "gpu_hours": 100},
    },
}


def test_quota_file_declares_only_what_it_names() -> None:
    q = quota.parse_file(EXAMPLE)
    assert q.cluster == "mini"
    assert q.wanted[("lab-a", "")] == {"gpus": 6, "gpu_hours": 30000, "max_running_jobs": 50, "max_submit_jobs": 5000}
    assert q.wanted[("lab-a", "alice")] == {"gpus": 4, "max_submit_jobs": 4000}
    assert quota.parse_file({"accounts": {"x": {"gpu_hours": 1.5, "gpus": "unlimited", "qos": "normal"}}}).wanted[
        ("x", "")
    ] == {"gpus": None, "gpu_hours": 90, "qos": ("normal",)}


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (
            {"accounts": {"lab-a": {"gpus": -1}}},
            "accounts.lab-a.gpus: expected a whole number from 0 to 4294967294 or unlimited .got -1.",
        ),
        ({"accounts": {"lab-a": {"gpus": "two"}}}, "expected a whole number from 0 to 4294967294 or unlimited"),
        ({"accounts": {"lab-a": {"gpu": 2}}}, "unknown field 'gpu'"),
        (
            {"accounts": {"lab-a": {"users": {"alice": {"users": {}}}}}},
            "accounts.lab-a.users.alice: unknown field 'users'",
        ),
        ({"accounts": {"lab a": {}}}, "is not a Slurm account name"),
        ({"accounts": {}}, "expected a mapping with `accounts:`"),
        ({"accounts": {"lab-a": {}}, "limits": 1}, "unknown field 'limits'"),
        ({"accounts": {"lab-a": {"qos": ["no;pe"]}}}, "expected a list of QOS names"),
    ],
)
def test_bad_quota_files(doc: Any, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        quota.parse_file(doc)


def test_associations_parsed_from_recorded_sacctmgr() -> None:
    assocs = {a.key: a for a in parse_associations((FIXTURES / "sacctmgr_show_assoc_limits.txt").read_text())}
    assert assocs[("lab-a", "")].limits == {
        "gpus": 6,
        "gpu_hours": 30000,
        "max_running_jobs": 50,
        "max_submit_jobs": 5000,
        "qos": ("normal",),
    }
    assert (
        assocs[("lab-a", "alice")].limits["gpus"] == 4 and assocs[("lab-a", "alice")].limits["max_submit_jobs"] == 4000
    )
    assert assocs[("lab-b", "bob")].limits["gpus"] is None
    assert parse_associations("other|lab-a||||||||normal\n", "mini") == []


def test_applied_file_diffs_to_nothing_and_a_fresh_cluster_to_exact_commands() -> None:
    q = quota.parse_file(EXAMPLE)
    applied = parse_associations((FIXTURES / "sacctmgr_show_assoc_limits.txt").read_text())
    assert quota.diff(q, applied, ["normal"]) == []  # idempotent
    fresh = [Assoc(a.account, a.user, {f: None for f in quota.FIELDS if f != "qos"}) for a in applied]
    argvs = quota.commands(quota.diff(q, fresh), "mini")
    assert argvs == [
        [
            "sacctmgr",
            "-i",
            "modify",
            "account",
            "where",
            "name=lab-a",
            "cluster=mini",
            "set",
            "GrpTRES=gres/gpu=6",
            "GrpTRESMins=gres/gpu=30000",
            "GrpJobs=50",
            "GrpSubmitJobs=5000",
        ],
        [
            "sacctmgr",
            "-i",
            "modify",
            "user",
            "where",
            "name=alice",
            "account=lab-a",
            "cluster=mini",
            "set",
            "GrpTRES=gres/gpu=4",
            "MaxSubmitJobs=4000",
        ],
        [
            "sacctmgr",
            "-i",
            "modify",
            "account",
            "where",
            "name=lab-b",
            "cluster=mini",
            "set",
            "GrpTRES=gres/gpu=2",
            "GrpTRESMins=gres/gpu=6000",
        ],
    ]
    cleared = quota.parse_file({"accounts": {"lab-b": {"gpus": "unlimited"}}})
    assert quota.commands(quota.diff(cleared, applied)) == [
        ["sacctmgr", "-i", "modify", "account", "where", "name=lab-b", "set", "GrpTRES=gres/gpu=-1"]
    ]


def test_unknown_account_user_or_qos_is_refused() -> None:
    applied = parse_associations((FIXTURES / "sacctmgr_show_assoc_limits.txt").read_text())
    with pytest.raises(UsageError, match=r"accounts\.lab-z: no such account in Slurm"):
        quota.diff(quota.parse_file({"accounts": {"lab-z": {"gpus": 1}}}), applied)
    with pytest.raises(UsageError, match="bob has no association with account lab-a"):
        quota.diff(quota.parse_file({"accounts": {"lab-a": {"users": {"bob": {"gpus": 1}}}}}), applied)
    with pytest.raises(UsageError, match="QOS 'gold' does not exist"):
        quota.diff(quota.parse_file({"accounts": {"lab-a": {"qos": ["gold"]}}}), applied, ["normal"])


def test_live_usage_from_recorded_assoc_mgr() -> None:
    usage = {(u.account, u.user): u for u in parse_assoc_mgr((FIXTURES / "assoc_mgr_limits.txt").read_text())}
    account, alice = usage[("lab-a", "")], usage[("lab-a", "alice")]
    # alice runs one 2-GPU job with a 10-minute limit (20 GPU-minutes committed).
    assert (account.gpus_limit, account.gpus_in_use, account.gpu_minutes_limit) == (6, 2, 30000)
    assert account.gpu_minutes_committed == 20 and account.jobs_limit == 50 and account.jobs_running == 1
    assert account.gpu_hours_left == pytest.approx((30000 - account.gpu_minutes_used - 20) / 60)
    assert (alice.gpus_limit, alice.gpus_in_use, alice.submit_limit, alice.jobs_submitted) == (4, 2, 4000, 1)
    assert alice.jobs_limit is None and alice.gpu_hours_left is None
    assert alice.default and not account.default  # alice's jobs without --account charge lab-a
    assert usage[("lab-b", "")].gpus_limit == 2 and usage[("lab-b", "bob")].gpus_limit is None


def _plan(trials: int, gpus: int, time: str, max_parallel: int | None = None) -> Plan:
    stages = {
        "prep": Stage("prep", command="p", resources=Resources(time="10")),
        "train": Stage(
            "train",
            command="t",
            per_trial=True,
            deps=(StageDep(DepKind.AFTER_OK, "prep"),),
            resources=Resources(gpus=gpus, time=time),
            max_parallel=max_parallel,
        ),
    }
    nodes = (JobNode("prep", "prep"), JobNode("train.0", "train", array=True, size=trials))
    return Plan("x", stages, nodes, trials, 0.0, ())


def test_fit_against_the_tightest_budget_and_cap() -> None:
    usage = [
        Usage("lab-b", "", gpus_limit=2, gpus_in_use=1, gpu_minutes_limit=600, gpu_minutes_used=500),
        Usage("lab-b", "bob", gpu_minutes_limit=6000, gpu_minutes_used=10),
    ]
    f = fit(_plan(6, 1, "00:30:00"), "lab-b", "bob", usage)
    assert (f.gpu_hours, f.peak_gpus, f.gpus_cap, f.gpus_in_use) == (3.0, 6, 2, 1)
    assert f.gpu_hours_left == pytest.approx(100 / 60) and f.budget_by == "account lab-b"
    assert f.over_budget and f.throttled
    assert "needs up to 3.00 GPU-hours" in f.refusal() and "1.67 GPU-hours of budget left" in f.refusal()
    assert "--force" in f.refusal() and "about 3 waves" in f.warning()
    small = fit(_plan(2, 1, "00:30:00", max_parallel=1), "lab-b", "bob", usage)
    assert not small.over_budget and small.peak_gpus == 1 and not small.throttled
    free = fit(_plan(100, 4, "1-00:00:00"), "lab-a", "alice", usage)
    assert free.gpu_hours == 9600 and not free.over_budget and not free.throttled


def test_admin_levels() -> None:
    assert is_admin("Administrator") and is_admin("Operator") and not is_admin("None")
    assert "needs AdminLevel Operator or Administrator" in admin_refusal("bob", "None")


def test_a_search_past_the_budget_takes_what_is_left_as_its_own() -> None:
    from slurmflow.quota.budget import Verdict, for_search

    usage = [Usage("lab-b", "", gpu_minutes_limit=600, gpu_minutes_used=450)]  # 2.5 GPU-hours left
    plan = _plan(6, 1, "00:30:00")  # a search's worst case: 6 trials x 1 GPU x 30 min = 3 GPU-hours
    f = fit(plan, "lab-b", "bob", usage)
    verdict = Verdict([f], [f.refusal()], [])
    after, budget = for_search(verdict, plan, 0.5, None)
    assert after.refusals == [] and budget == pytest.approx(2.5)
    assert "asks for trials while they fit in 2.50 GPU-hours" in after.notes[0]
    assert for_search(verdict, plan, 0.5, 1.0)[1] == 1.0  # search.max_gpu_hours is tighter: it stands
    assert for_search(verdict, plan, 0.5, 4.0)[1] == pytest.approx(2.5)
    refused, _ = for_search(verdict, plan, 3.0, None)  # not even one trial fits
    assert len(refused.refusals) == 1 and "one trial may take 3.00 GPU-hours" in refused.refusals[0]
    fine = fit(plan, "lab-a", "alice", usage)
    assert for_search(Verdict([fine], [], []), plan, 0.5, None) == (Verdict([fine], [], []), None)
