"""SlurmCLI against recorded output through a FunctionRunner: which commands, how parsed, how errors map."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.errors import ControllerUnavailable, SlurmError, SubmissionAmbiguous
from slurmflow.slurm.capabilities import SACCT_REQUIRED, SQUEUE_REQUIRED, Capabilities
from slurmflow.slurm.runner import FunctionRunner, SubprocessRunner
from slurmflow.slurm.types import Dependency, DepKind, JobSpec, JobState

FIX = Path(__file__).parent.parent / "fixtures" / "slurm" / "24.11"


def recorded(name: str) -> str:
    return (FIX / name).read_text()


# What the first 24.11 fixtures were recorded with: sacct with Restarts, squeue without RestartCnt.
RECORDED = Capabilities("24.11.5", frozenset((*SACCT_REQUIRED, "Restarts")), frozenset(SQUEUE_REQUIRED), frozenset())


def cli(runner: FunctionRunner) -> SlurmCLI:
    return SlurmCLI(runner, capabilities=RECORDED)


def replay(squeue: tuple[int, str, str], sacct: tuple[int, str, str]) -> FunctionRunner:
    def handler(argv: tuple[str, ...], stdin: str | None) -> tuple[int, str, str]:
        return {"squeue": squeue, "sacct": sacct}[argv[0]]

    return FunctionRunner(handler)


def test_submit_sends_script_on_stdin() -> None:
    seen: list[str | None] = []

    def handler(argv: tuple[str, ...], stdin: str | None) -> tuple[int, str, str]:
        seen.append(stdin)
        return 0, "77\n", ""

    backend = SlurmCLI(FunctionRunner(handler))
    spec = JobSpec(name="a", script="echo hi", dependency=Dependency.on(DepKind.AFTER_OK, "5"))
    assert backend.submit(spec) == "77"
    assert seen == ["#!/bin/bash\necho hi\n"]
    assert backend.submit(spec, "/x.sh") == "77" and seen[-1] is None


def test_submit_errors_are_classified() -> None:
    backend = SlurmCLI(FunctionRunner(lambda a, i: (1, "", "sbatch: error: Socket timed out on send/recv operation")))
    with pytest.raises(SubmissionAmbiguous):
        backend.submit(JobSpec(name="a", script="true"))
    backend = SlurmCLI(FunctionRunner(lambda a, i: (1, "", recorded("sbatch_bad_dependency.err"))))
    with pytest.raises(SlurmError, match="Job dependency problem"):
        backend.submit(JobSpec(name="a", script="true"))


def test_query_merges_controller_and_accounting() -> None:
    runner = replay((0, recorded("squeue_array_corr.txt"), ""), (0, recorded("sacct_array_corr.txt"), ""))
    result = cli(runner).query(["4"])
    assert result.accounting_available
    assert [j.job_id for j in result.jobs] == ["4_0", "4_1", "4_2", "4_3"]
    assert result.by_id()["4_2"].state is JobState.CANCELLED
    # One squeue and one sacct for the whole batch, on base ids.
    assert [c[0] for c in runner.calls] == ["squeue", "sacct"]
    assert "--jobs=4" in runner.calls[0] and "--jobs=4" in runner.calls[1]


def test_query_filters_task_ids() -> None:
    runner = replay((0, recorded("squeue_array_corr.txt"), ""), (0, recorded("sacct_array_corr.txt"), ""))
    assert [j.job_id for j in cli(runner).query(["2_2", "3"]).jobs] == ["2_2", "3"]


def test_query_all_ids_forgotten_by_controller() -> None:
    runner = replay((1, "", recorded("squeue_invalid_id.err")), (0, recorded("sacct_array_corr.txt"), ""))
    result = cli(runner).query(["2"])
    assert {j.job_id for j in result.jobs} == {"2_0", "2_1", "2_2", "2_3"}


def test_query_without_accounting_degrades() -> None:
    dbd_down = (
        1,
        "",
        "sacct: error: _open_persist_conn: failed to open persistent connection to host:localhost:6819",
    )
    result = cli(replay((0, recorded("squeue_pending_array.txt"), ""), dbd_down)).query(["12"])
    assert not result.accounting_available and len(result.jobs) == 6


def test_query_controller_down_raises() -> None:
    down = (1, "", "squeue: error: Unable to contact slurm controller (connect failure)")
    with pytest.raises(ControllerUnavailable):
        cli(replay(down, (0, "", ""))).query(["1"])


def test_cancel_requeue_update_argv() -> None:
    runner = FunctionRunner(lambda a, i: (0, "", ""))
    backend = SlurmCLI(runner)
    backend.cancel(["1", "2_3"])
    backend.requeue(["4_2", "5"])
    backend.requeue(["7"], start_now=True)
    backend.update_dependency("6", Dependency.on(DepKind.AFTER_OK, "5"))
    backend.update_dependency("6", None)
    backend.cancel([])
    assert runner.calls == [
        ("scancel", "1", "2_3"),
        ("scontrol", "requeue", "4_2,5"),
        ("scontrol", "requeue", "7"),
        ("scontrol", "update", "JobId=7", "StartTime=now"),
        ("scontrol", "update", "JobId=6", "Dependency=afterok:5"),
        ("scontrol", "update", "JobId=6", "Dependency="),
    ]


def test_config_and_nodes() -> None:
    def handler(argv: tuple[str, ...], stdin: str | None) -> tuple[int, str, str]:
        return 0, recorded("scontrol_show_config.txt" if argv[0] == "scontrol" else "sinfo.txt"), ""

    backend = SlurmCLI(FunctionRunner(handler))
    assert backend.config().max_array_size == 1001
    assert sum(int(n["gpus"]) for n in backend.nodes()) == 8


def test_config_under_rpc_rate_limiting_is_read_from_the_complete_output() -> None:
    """Recorded with SlurmctldParameters=rl_enable: scontrol printed the whole configuration, then
    its ping of the controller was refused ("... is DOWN"), exit 1."""
    limited = recorded("scontrol_show_config_rate_limited.txt")
    assert limited.rstrip().endswith("is DOWN")
    backend = SlurmCLI(FunctionRunner(lambda argv, stdin: (1, limited, "")))
    assert backend.config().max_array_size == 1001
    # A controller that is really away prints no configuration: that stays an error.
    away = "slurm_load_ctl_conf error: Unable to contact slurm controller (connect failure)\n"
    with pytest.raises(SlurmError):
        SlurmCLI(FunctionRunner(lambda argv, stdin: (1, "", away))).config()


def test_submit_creates_the_log_directory_private_first(tmp_path: Path) -> None:
    """Slurm before 23.02 never creates a missing --output directory: the job would die 0:53."""
    seen: list[bool] = []
    logs = tmp_path / "run" / "logs" / "train.1"

    def handler(argv: tuple[str, ...], stdin: str | None) -> tuple[int, str, str]:
        seen.append(logs.is_dir())
        return 0, "9\n", ""

    spec = JobSpec(name="a", script="true", output=f"{logs}/%a.out")
    assert SlurmCLI(FunctionRunner(handler)).submit(spec) == "9"
    assert seen == [True] and (logs.stat().st_mode & 0o777) == 0o700
    assert SlurmCLI(FunctionRunner(handler)).submit(spec) == "9"  # exists already: fine


def test_backends_say_what_they_offer_without_type_sniffing() -> None:
    from slurmflow.backends.fake import FakeSlurm

    direct = SlurmCLI(SubprocessRunner())
    via = SlurmCLI(SubprocessRunner(prefix=("ssh", "login1")))
    assert direct.runs_submitit and not via.runs_submitit  # submitit's sbatch would run here, not there
    assert direct.accounting() is direct
    fake = FakeSlurm()
    assert not fake.runs_submitit and fake.accounting() is None
