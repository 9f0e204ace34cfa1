from __future__ import annotations

import dataclasses
import subprocess
from typing import Any

import pytest

from slurmflow.errors import UsageError
from slurmflow.planning import jobs
from slurmflow.slurm import sbatch
from slurmflow.slurm.types import DepClause, Dependency, DepKind, JobSpec


def test_dependency_rendering() -> None:
    dep = Dependency((DepClause(DepKind.AFTER_OK, ("1", "2")), DepClause(DepKind.AFTER_CORR, ("3",))))
    assert sbatch.render_dependency(dep) == "afterok:1:2,aftercorr:3"
    anyof = Dependency((DepClause(DepKind.AFTER_NOT_OK, ("4_2",)), DepClause(DepKind.SINGLETON)), any_of=True)
    assert sbatch.render_dependency(anyof) == "afternotok:4_2?singleton"


def test_dependency_rejects_non_ids() -> None:
    with pytest.raises(ValueError, match="not a Slurm job id"):
        sbatch.render_dependency(Dependency.on(DepKind.AFTER_OK, "1;rm -rf /"))
    with pytest.raises(ValueError):
        DepClause(DepKind.SINGLETON, ("1",))
    with pytest.raises(ValueError):
        DepClause(DepKind.AFTER_OK, ())


def test_argv_full() -> None:
    spec = JobSpec(
        name="sf-train",
        script="echo hi",
        partition="gpu",
        account="lab-a",
        qos="normal",
        gpus_per_task=1,
        cpus_per_task=2,
        mem="2G",
        time="30:00",
        array="0-9%4",
        dependency=Dependency.on(DepKind.AFTER_OK, "11"),
        requeue=True,
        comment="run=abc",
        output="/tmp/o-%A_%a.out",
        constraint="a100",
        exclude=("gpu2",),
        signal="B:USR1@60",
        extra_args=("--nice=10",),
    )
    assert sbatch.argv(spec, "/run/x.sh") == [
        "sbatch",
        "--parsable",
        "--job-name=sf-train",
        "--partition=gpu",
        "--account=lab-a",
        "--qos=normal",
        "--gres=gpu:1",
        "--cpus-per-task=2",
        "--mem=2G",
        "--time=30:00",
        "--array=0-9%4",
        "--dependency=afterok:11",
        "--kill-on-invalid-dep=yes",
        "--requeue",
        "--comment=run=abc",
        "--output=/tmp/o-%A_%a.out",
        "--constraint=a100",
        "--exclude=gpu2",
        "--signal=B:USR1@60",
        "--nice=10",
        "/run/x.sh",
    ]


def test_argv_minimal_reads_script_from_stdin() -> None:
    assert sbatch.argv(JobSpec(name="a", script="true")) == ["sbatch", "--parsable", "--job-name=a"]


def test_kill_on_invalid_dep_can_be_turned_off() -> None:
    spec = JobSpec(name="a", script="true", dependency=Dependency.on(DepKind.AFTER_OK, "1"), kill_on_invalid_dep=False)
    assert "--kill-on-invalid-dep=no" in sbatch.argv(spec)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("time", "30 minutes", "time"),
        ("mem", "lots", "mem"),
        ("name", "a b", "job name"),
        ("name", "$(id)", "job name"),
    ],
)
def test_bad_values_are_usage_errors(field: str, value: str, needle: str) -> None:
    changes: dict[str, Any] = {field: value}
    spec = dataclasses.replace(JobSpec(name="ok", script="true"), **changes)
    with pytest.raises(UsageError, match=needle):
        sbatch.argv(spec)


@pytest.mark.parametrize("time", ["5", "30:00", "1:00:00", "2-00:00:00", "1-12", "UNLIMITED"])
def test_slurm_time_formats_accepted(time: str) -> None:
    assert f"--time={time}" in sbatch.argv(JobSpec(name="a", script="true", time=time))


HOSTILE = ["$(touch /tmp/pwned)", "`id`", "a'b\"c", "x; rm -rf /", "line1\nline2", "${HOME}", "*", "-n"]


@pytest.mark.parametrize("value", HOSTILE)
def test_environment_values_are_quoted(value: str) -> None:
    text = sbatch.render_script(JobSpec(name="a", script='printf "%s" "$V"', env={"V": value}))
    assert text.startswith("#!/bin/bash\n")
    out = subprocess.run(["bash", "-c", text], capture_output=True, text=True, check=True)
    assert out.stdout == value


def test_environment_names_are_checked() -> None:
    with pytest.raises(UsageError, match="environment variable name"):
        sbatch.render_script(JobSpec(name="a", script="true", env={"A=B; id": "x"}))


def test_callable_stage_parameters_for_submitit() -> None:
    from slurmflow.model import JobNode, Resources
    from slurmflow.run import callables

    res = Resources(partition="gpu", gpus=2, cpus=4, mem="8G", time="01:30:00", account="lab-a")
    node = JobNode("score.0", "score", size=1001, array=True, throttle=10)
    spec = JobSpec(
        name="sf.r.score.0",
        script="",
        partition="gpu",
        account="lab-a",
        gpus_per_task=2,
        cpus_per_task=4,
        mem="8G",
        time="01:30:00",
        array=node.array_expr(),
        dependency=Dependency.on(DepKind.AFTER_CORR, "12"),
        comment="slurmflow:r:score.0",
        output="/r/logs/score.0/%a.out",
        chdir="/proj",
        requeue=False,
        signal="B:USR1@120",
        extra_args=("--open-mode=append", "--nice=10"),
    )
    params = callables.parameters(spec, node, res, hold=True)
    assert params["array_parallelism"] == 10 and params["time"] == 90  # submitit's timeout, in minutes
    assert params["use_srun"] is False and params["stderr_to_stdout"] is True and params["wckey"] is None
    # Every sbatch option of the command stage but --parsable, keyed to replace submitit's own lines
    # (its output in its folder, its USR2 signal, its minutes): the log, signal and extra are kept.
    assert params["additional_parameters"] == {
        "job_name": "sf.r.score.0",
        "partition": "gpu",
        "account": "lab-a",
        "gres": "gpu:2",
        "cpus_per_task": "4",
        "mem": "8G",
        "time": "01:30:00",
        "array": "0-1000%10",
        "dependency": "aftercorr:12",
        "kill_on_invalid_dep": "yes",
        "no_requeue": True,
        "comment": "slurmflow:r:score.0",
        "output": "/r/logs/score.0/%a.out",
        "chdir": "/proj",
        "signal": "B:USR1@120",
        "open-mode": "append",
        "nice": "10",
        "hold": True,
    }


def test_node_spec_signal_and_appended_logs() -> None:
    from slurmflow.model import Checkpoint, JobNode, Stage

    stage = Stage("train", command="x", per_trial=True, checkpoint=Checkpoint(signal="USR2", seconds=90))
    spec = jobs.node_spec(
        JobNode("train.0", "train", size=4, array=True),
        stage,
        {},
        run_id="r",
        script="true",
        logs_dir="/r/logs",
        chdir="/p",
    )
    argv = sbatch.argv(spec)
    assert "--signal=B:USR2@90" in argv and "--open-mode=append" in argv and "--output=/r/logs/train.0/%a.out" in argv
    plain = jobs.node_spec(
        JobNode("p", "p"), Stage("p", command="x"), {}, run_id="r", script="true", logs_dir="/r/logs", chdir="/p"
    )
    assert plain.signal is None and plain.output == "/r/logs/p/job.out"


def test_log_dirs_to_create_before_sbatch() -> None:
    spec = JobSpec(name="a", script="true", output="/r/logs/train.0/%a.out", error="/r/logs/train.0/%a.err")
    assert sbatch.log_dirs(spec) == ["/r/logs/train.0"]
    assert sbatch.log_dirs(JobSpec(name="a", script="true", output="/r/%j/x.out", error="e.out")) == []
    assert sbatch.log_dirs(JobSpec(name="a", script="true")) == []
