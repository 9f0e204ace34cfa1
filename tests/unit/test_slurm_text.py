from __future__ import annotations

from pathlib import Path

import pytest

from slurmflow.errors import (
    AccountingUnavailable,
    CommandError,
    CommandTimeout,
    ControllerFull,
    ControllerUnavailable,
    ParseError,
    PolicyViolation,
    SubmissionAmbiguous,
)
from slurmflow.slurm import cluster
from slurmflow.slurm import text as st
from slurmflow.slurm.capabilities import SACCT_REQUIRED, SQUEUE_REQUIRED
from slurmflow.slurm.types import JobInfo, JobState

FIX = Path(__file__).parent.parent / "fixtures" / "slurm" / "24.11"
# The fields the first 24.11 fixtures were recorded with (squeue before RestartCnt was asked for).
SQ = SQUEUE_REQUIRED
SA = (*SACCT_REQUIRED, "Restarts")


def fixture(name: str) -> str:
    return (FIX / name).read_text()


@pytest.mark.parametrize(
    ("text", "state", "by"),
    [
        ("COMPLETED", JobState.COMPLETED, None),
        ("CANCELLED by 2001", JobState.CANCELLED, "2001"),
        ("CANCELED", JobState.CANCELLED, None),
        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY, None),
        ("RUNNING+", JobState.RUNNING, None),
        ("NODE_FAIL", JobState.NODE_FAIL, None),
        ("SOMETHING_NEW", JobState.UNKNOWN, None),
        ("", JobState.UNKNOWN, None),
    ],
)
def test_parse_state(text: str, state: JobState, by: str | None) -> None:
    assert st.parse_state(text) == (state, by)


def test_state_order_and_finality() -> None:
    assert JobState.PENDING.rank < JobState.RUNNING.rank < JobState.COMPLETED.rank
    assert JobState.TIMEOUT.final and JobState.NODE_FAIL.final and not JobState.REQUEUED.final
    assert JobState.COMPLETED.succeeded and not JobState.FAILED.succeeded
    assert not JobState.CANCELLED.started and JobState.FAILED.started


@pytest.mark.parametrize(
    ("text", "want"), [("1:0", (1, 0)), ("0:15", (0, 15)), ("", (None, None)), ("x:y", (None, None))]
)
def test_parse_exit_code(text: str, want: tuple[int | None, int | None]) -> None:
    assert st.parse_exit_code(text) == want


def test_expand_indices() -> None:
    assert st.expand_indices("0-3,7,10-14:2%4") == [0, 1, 2, 3, 7, 10, 12, 14]
    assert st.expand_indices("[0-5%2]") == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ParseError):
        st.expand_indices("3-1")
    with pytest.raises(ParseError):
        st.expand_indices("a-b")


def test_compress_indices_round_trip() -> None:
    assert st.compress_indices([5, 0, 1, 2, 7, 8, 2]) == "0-2,5,7-8"
    assert st.compress_indices([4]) == "4"
    for n in range(1, 60):
        idx = [i for i in range(n * 3) if (i * 7919) % 5 != 0]
        assert st.expand_indices(st.compress_indices(idx)) == sorted(idx)
    with pytest.raises(ValueError, match="no indices"):
        st.compress_indices([])


def test_compressed_index_runs_stay_short() -> None:
    # 10,000 tasks with every third one failing: still far below sbatch's 4 KiB --array cap
    # only when runs are compressed; a dense range is one token.
    assert st.compress_indices(range(10_000)) == "0-9999"


def test_expand_job_id() -> None:
    assert st.expand_job_id("12_[0-2]") == [("12", 0), ("12", 1), ("12", 2)]
    assert st.expand_job_id("12_4") == [("12", 4)]
    assert st.expand_job_id("12") == [("12", None)]
    with pytest.raises(ParseError):
        st.expand_job_id("12.batch")


def test_parse_sbatch() -> None:
    assert st.parse_sbatch("1234\n") == "1234"
    assert st.parse_sbatch("1234;mini\n") == "1234"
    with pytest.raises(ParseError):
        st.parse_sbatch("sbatch: error: nope")


def test_parse_squeue_recorded_array_and_corr() -> None:
    jobs = {j.job_id: j for j in st.parse_squeue(fixture("squeue_array_corr.txt"), SQ)}
    assert jobs["2_2"].state is JobState.FAILED and jobs["2_2"].exit_code == 1
    assert jobs["2_2"].array_job_id == "2" and jobs["2_2"].array_task_id == 2 and jobs["2_2"].raw_id == "10"
    # The aftercorr task cancelled by --kill-on-invalid-dep: only the controller reports it.
    assert jobs["4_2"].state is JobState.CANCELLED and jobs["4_2"].reason == "DependencyNeverSatisfied"
    assert jobs["3"].array_job_id is None and jobs["3"].reason == "DependencyNeverSatisfied"
    assert jobs["4_0"].nodes == "gpu1" and jobs["4_0"].user == "alice" and jobs["4_0"].account == "lab-a"


def test_parse_squeue_pending_array_one_row_per_task() -> None:
    jobs = st.parse_squeue(fixture("squeue_pending_array.txt"), SQ)
    assert [j.job_id for j in jobs] == [f"12_{i}" for i in range(6)]
    assert all(j.state is JobState.PENDING and j.nodes is None for j in jobs)


def test_parse_sacct_recorded() -> None:
    jobs = {j.job_id: j for j in st.parse_sacct(fixture("sacct_array_corr.txt"), SA)}
    assert "4_2" not in jobs  # never reached accounting
    assert jobs["2_2"].state is JobState.FAILED and (jobs["2_2"].exit_code, jobs["2_2"].signal) == (1, 0)
    assert jobs["2_0"].restarts == 0
    assert jobs["3"].nodes is None  # "None assigned"


def test_parse_sacct_collapsed_array_rows_are_expanded() -> None:
    pending = st.parse_sacct(fixture("sacct_pending_array.txt"), SA)
    assert [j.job_id for j in pending] == [f"12_{i}" for i in range(6)]
    cancelled = st.parse_sacct(fixture("sacct_cancelled_array.txt"), SA)
    assert all(j.state is JobState.CANCELLED and j.cancelled_by == "2001" for j in cancelled)
    assert len(cancelled) == 6


def test_parse_sacct_skips_step_rows() -> None:
    text = (
        "5|5|x|COMPLETED|0:0|None|gpu1|lab-a|alice|gpu|0\n5.batch|5.batch|batch|COMPLETED|0:0|None|gpu1|lab-a||gpu|0\n"
    )
    assert [j.job_id for j in st.parse_sacct(text, SA)] == ["5"]


def test_parse_rejects_truncated_rows() -> None:
    with pytest.raises(ParseError):
        st.parse_sacct("5|5|x\n", SA)
    with pytest.raises(ParseError):
        st.parse_squeue("5|5\n", SQ)


def test_merge_prefers_controller_and_keeps_accounting_only_jobs() -> None:
    merged = {
        j.job_id: j
        for j in st.merge_views(
            st.parse_squeue(fixture("squeue_array_corr.txt"), SQ), st.parse_sacct(fixture("sacct_array_corr.txt"), SA)
        )
    }
    assert merged["4_2"].state is JobState.CANCELLED  # controller only
    assert merged["2_2"].restarts == 0  # from accounting
    old = JobInfo("1", "gone", JobState.COMPLETED, exit_code=0)
    assert st.merge_views([], [old]) == [old]  # the controller forgot it; accounting still knows


def test_merge_requeued_job_is_pending_not_failed() -> None:
    controller = [JobInfo("7", "t", JobState.PENDING, reason="BeginTime")]
    accounting = [JobInfo("7", "t", JobState.FAILED, exit_code=3, restarts=1)]
    (merged,) = st.merge_views(controller, accounting)
    assert merged.state is JobState.PENDING and merged.restarts == 1 and merged.reason == "BeginTime"


def test_parse_config() -> None:
    cfg = cluster.parse_config(fixture("scontrol_show_config.txt"))
    assert (cfg.version, cfg.max_array_size, cfg.max_job_count, cfg.min_job_age_s) == (
        "24.11.5",
        1001,
        60000,
        300,
    )
    assert cfg.raw["ClusterName"] == "mini"
    with pytest.raises(ParseError):
        cluster.parse_config("nothing here")


def test_parse_sinfo() -> None:
    rows = cluster.parse_sinfo(fixture("sinfo.txt"))
    assert [(r["node"], r["partition"], r["default"], r["gpus"]) for r in rows] == [
        ("cpu1", "cpu", False, 0),
        ("gpu1", "gpu", True, 4),
        ("gpu2", "gpu", True, 4),
    ]
    assert cluster.gpu_count("gpu:a100:4(S:0-1),gpu:v100:2") == 6


@pytest.mark.parametrize(
    ("stderr", "cls"),
    [
        (
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
            SubmissionAmbiguous,
        ),
        ("squeue: error: Unable to contact slurm controller (connect failure)", ControllerUnavailable),
        ("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy", PolicyViolation),
        (
            "sacct: error: _open_persist_conn: failed to open persistent connection to host:localhost:6819",
            AccountingUnavailable,
        ),
        ("sacct: error: Problem talking to the database: Connection refused", AccountingUnavailable),
    ],
)
def test_classify(stderr: str, cls: type[CommandError]) -> None:
    err = st.classify(CommandError(["sbatch"], 1, "", stderr))
    assert type(err) is cls
    assert err.argv == ("sbatch",) and err.returncode == 1 and err.stderr == stderr


def test_classify_recorded_errors_keep_slurm_message() -> None:
    err = st.classify(CommandError(["sbatch"], 1, "", fixture("sbatch_bad_partition.err")))
    assert "Invalid partition name specified" in str(err)


@pytest.mark.parametrize(
    ("argv", "cls"),
    [
        (["sbatch", "--parsable"], SubmissionAmbiguous),  # the job may exist
        (["docker", "exec", "-i", "mini", "sbatch", "--parsable"], SubmissionAmbiguous),
        (["squeue", "--jobs=1"], ControllerUnavailable),  # a query that timed out: ask again
        (["scontrol", "requeue", "5_1"], ControllerUnavailable),
    ],
)
def test_socket_timeout_is_ambiguous_only_for_a_submission(argv: list[str], cls: type[CommandError]) -> None:
    err = st.classify(CommandError(argv, 1, "", "slurm_load_jobs error: Socket timed out on send/recv operation"))
    assert type(err) is cls


def test_a_full_controller_is_its_own_error() -> None:
    said = (
        "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n"
        "sbatch: error: Batch job submission failed: Resource temporarily unavailable\n"
    )
    assert type(st.classify(CommandError(["sbatch", "--parsable"], 1, "", said))) is ControllerFull
    # Killed at the runner's timeout while sbatch was still retrying: still the full controller.
    partial = "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n"
    assert type(st.classify(CommandTimeout(["sbatch"], None, "", partial, note="timed out"))) is ControllerFull


@pytest.mark.parametrize(
    ("argv", "cls"),
    [
        (["sbatch", "--parsable"], SubmissionAmbiguous),  # it may have created the job: reconcile
        (["squeue", "--jobs=1"], ControllerUnavailable),  # a query: the controller is not answering
        (["scontrol", "update", "JobId=1", "StartTime=now"], ControllerUnavailable),
        (["sacct", "-X"], AccountingUnavailable),  # sacct asks slurmdbd
    ],
)
def test_a_command_killed_at_its_timeout(argv: list[str], cls: type[CommandError]) -> None:
    err = st.classify(CommandTimeout(argv, None, "", "", note="timed out after 60 s"))
    assert type(err) is cls and "timed out after 60 s" in str(err)


def test_restart_count_is_the_higher_of_both_views() -> None:
    ctl = JobInfo("7", "j", JobState.PENDING, restarts=2)
    acct = JobInfo("7", "j", JobState.FAILED, restarts=1)
    assert st.merge_views([ctl], [acct])[0].restarts == 2
    assert st.merge_views([ctl], [JobInfo("7", "j", JobState.FAILED)])[0].restarts == 2  # 22.05: no sacct field
    assert st.merge_views([JobInfo("7", "j", JobState.PENDING)], [acct])[0].restarts == 1
    assert (
        st.merge_views([JobInfo("7", "j", JobState.PENDING)], [JobInfo("7", "j", JobState.FAILED)])[0].restarts is None
    )


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("0", (0, 0)), ("256", (1, 0)), ("4021", (0, 53)), ("9", (0, 9)), ("0:53", (0, 53)), ("", (None, None))],
)
def test_exit_code_as_code_signal_or_as_22_05_squeue_wait_status(text: str, parsed: tuple[int, int]) -> None:
    assert st.parse_exit_code(text) == parsed


@pytest.mark.parametrize("version", ["22.05", "24.11", "26.05"])
def test_recorded_limit_refusals_of_each_version(version: str) -> None:
    fix = FIX.parent / version
    full = st.classify(CommandError(["sbatch"], 1, "", (fix / "sbatch_max_job_count.err").read_text()))
    assert type(full) is ControllerFull
    limit = st.classify(CommandError(["sbatch"], 1, "", (fix / "sbatch_max_submit.err").read_text()))
    assert type(limit) is PolicyViolation


def test_partitions_sum_gpus_and_states_per_partition() -> None:
    rows: list[dict[str, str | int]] = [
        {"node": "n1", "partition": "gpu", "default": True, "state": "idle", "gpus": 4},
        {"node": "n2", "partition": "gpu", "default": True, "state": "mixed", "gpus": 2},
        {"node": "n1", "partition": "cpu", "default": False, "state": "idle", "gpus": 0},
    ]
    parts = cluster.partitions(rows)
    assert [(p.name, p.default, p.nodes, p.gpus, p.states) for p in parts] == [
        ("cpu", False, ["n1"], 0, {"idle"}),
        ("gpu", True, ["n1", "n2"], 6, {"idle", "mixed"}),
    ]
