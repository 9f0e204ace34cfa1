"""A callable stage (submitted by submitit) gets the sbatch options a command stage gets."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

import pytest
from submitit.slurm import slurm as submitit_slurm

from slurmflow.model import Checkpoint, Edge, JobNode, Resources, Stage
from slurmflow.planning import jobs
from slurmflow.run import callables
from slurmflow.slurm import sbatch
from slurmflow.slurm.types import DepKind, JobSpec

RES = Resources(
    partition="gpu",
    account="lab-a",
    qos="high",
    gpus=2,
    cpus=4,
    mem="8G",
    time="01:30:00",
    constraint="a100",
    extra=("--nice=10", "--mail-type=END"),
)
TRAIN = JobNode("train.0", "train", size=4, array=True, throttle=2, edges=(Edge(DepKind.AFTER_OK, "prep"),))


def stage(**changes: Any) -> Stage:
    base = Stage(
        "train",
        callable="jobs.train:main",
        per_trial=True,
        resources=RES,
        requeue=True,
        checkpoint=Checkpoint(signal="USR1", seconds=120),
    )
    return dataclasses.replace(base, **changes)


def spec_of(node: JobNode, st: Stage, **changes: Any) -> JobSpec:
    spec = jobs.node_spec(node, st, {"prep": "11"}, run_id="r1", script="true", logs_dir="/runs/r1/logs", chdir="/proj")
    return dataclasses.replace(spec, **changes)


def command_options(spec: JobSpec) -> dict[str, str]:
    """sbatch.argv's options as name -> value (the last one wins, as on sbatch's command line)."""
    out: dict[str, str] = {}
    for word in sbatch.argv(spec)[1:]:
        name, _, value = word.partition("=")
        out[name] = value
    return out


def submitit_options(spec: JobSpec, node: JobNode, tmp: Path, *, hold: bool = False) -> dict[str, str]:
    """The #SBATCH lines of the script submitit writes for the node (its own pure renderer)."""
    params = callables.parameters(spec, node, RES, hold=hold)
    # submitit submits an array for map_array of more than one call, a plain job for one.
    map_count = node.size if node.array and node.size > 1 else None
    text = submitit_slurm._make_sbatch_string(command="run", folder=tmp, map_count=map_count, **params)
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH "):
            name, _, value = shlex.split(line)[1].partition("=")
            assert name not in out, f"{name} written twice"
            out[name] = value
    return out


def test_same_sbatch_options_as_a_command_stage(tmp_path: Path) -> None:
    spec = spec_of(TRAIN, stage(), exclude=("gpu3",))
    mine = command_options(spec)
    theirs = submitit_options(spec, TRAIN, tmp_path)
    # What submitit keeps: it reads "Submitted batch job N" (no --parsable); it always writes --nodes=1.
    assert theirs == {**{k: v for k, v in mine.items() if k != "--parsable"}, "--nodes": "1"}
    for option, value in {
        "--nice": "10",
        "--mail-type": "END",
        "--signal": "B:USR1@120",
        "--requeue": "",
        "--kill-on-invalid-dep": "yes",
        "--partition": "gpu",
        "--account": "lab-a",
        "--qos": "high",
        "--gres": "gpu:2",
        "--cpus-per-task": "4",
        "--mem": "8G",
        "--time": "01:30:00",
        "--constraint": "a100",
        "--exclude": "gpu3",
        "--dependency": "afterok:11",
        "--job-name": "sf.r1.train.0",
        "--comment": "slurmflow:r1:train.0",
        "--output": "/runs/r1/logs/train.0/%a.out",  # where `slurmflow logs` reads it
        "--array": "0-3%2",
        "--chdir": "/proj",
        "--open-mode": "append",
    }.items():
        assert theirs.get(option) == value, option
    assert "--error" not in theirs and "--wckey" not in theirs


def test_no_time_limit_means_none_not_submitits_five_minutes(tmp_path: Path) -> None:
    st = stage(resources=dataclasses.replace(RES, time=None), checkpoint=None)
    spec = spec_of(TRAIN, st)
    theirs = submitit_options(spec, TRAIN, tmp_path)
    assert "--time" not in theirs and "--time" not in command_options(spec)
    # No checkpoint: the command stage has no --signal; submitit's own (no B:, so to job steps
    # only, and these jobs run none) is the one option it adds.
    assert theirs.pop("--signal").endswith("@90")
    assert theirs == {**{k: v for k, v in command_options(spec).items() if k != "--parsable"}, "--nodes": "1"}


def test_one_call_is_a_plain_job_logging_where_logs_looks(tmp_path: Path) -> None:
    one = JobNode("train.0", "train", size=1, array=True)
    theirs = submitit_options(spec_of(one, stage()), one, tmp_path)
    assert "--array" not in theirs and theirs["--output"] == "/runs/r1/logs/train.0/0.out"
    single = JobNode("report", "report")
    theirs = submitit_options(spec_of(single, stage(per_trial=False)), single, tmp_path)
    assert "--array" not in theirs and theirs["--output"] == "/runs/r1/logs/report/job.out"


def test_hold_and_opposite_requeue_flags(tmp_path: Path) -> None:
    spec = spec_of(TRAIN, stage(), extra_args=("--open-mode=append", "--no-requeue", "--hold"))
    theirs = submitit_options(spec, TRAIN, tmp_path, hold=True)
    assert theirs["--hold"] == "" and theirs["--no-requeue"] == "" and "--requeue" not in theirs


def test_the_executor_takes_these_parameters_and_execs_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # no srun here
    spec = spec_of(TRAIN, stage())
    ex = callables.executor(spec, TRAIN, RES, run_dir=tmp_path, python="/opt/my env/python", hold=False)
    text = ex._make_submission_file_text(ex._submitit_command_str, "uid")
    # exec: the B: signal goes to the batch shell, which must be the Python process (not bash).
    assert "\nexec '/opt/my env/python' -u -m submitit.core._submit " in text
    assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --output=/runs/r1/logs/train.0/%a.out" in text
