"""Planner-owned sbatch options in `resources.extra` are refused, whatever their spelling."""

from __future__ import annotations

from typing import Any

import pytest

from slurmflow.errors import UsageError
from slurmflow.experiment import config
from slurmflow.model import JobNode
from slurmflow.planning import jobs
from slurmflow.slurm import sbatch


def stage(extra: list[Any], **more: Any) -> dict[str, Any]:
    return {"command": "python x.py", "per_trial": True, "resources": {"extra": extra}, **more}


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--job-name=mine"], "--job-name is set by slurmflow (it names jobs sf.<run>.<node>"),
        (["--job-name", "mine"], "--job-name is set"),
        (["--job-name mine"], "--job-name is set"),
        (["-J", "mine"], "-J (--job-name) is set"),
        (["-Jmine"], "-J (--job-name) is set"),
        (["--job=mine"], "--job (--job-name) is set"),
        (["--array=0-3"], "--array is set"),
        (["-a", "0-3"], "-a (--array) is set"),
        (["--nice=5", "--dependency=afterok:1"], "--dependency is set"),
        (["--dep=afterok:1"], "--dep (--dependency) is set"),
        (["-d", "afterok:1"], "-d (--dependency) is set"),
        (["--output=/tmp/x.out"], "--output is set"),
        (["-o", "x.out"], "-o (--output) is set"),
        (["--error=x.err"], "--error is set"),
        (["-e", "x.err"], "-e (--error) is set"),
        (["--comment=mine"], "--comment is set"),
        (["--parsable"], "--parsable is set"),
        (["--kill-on-invalid-dep=no"], "--kill-on-invalid-dep is set"),
        (["--chdir=/tmp"], "--chdir is set"),
        (["-D", "/tmp"], "-D (--chdir) is set"),
        (["--hold"], "--hold is set"),
        (["-H"], "-H (--hold) is set"),
        (["-vJmine"], "-J (--job-name) is set"),
    ],
)
def test_reserved_options_are_refused(extra: list[Any], option: str) -> None:
    with pytest.raises(UsageError) as info:
        config.parse_stage("train", stage(extra))
    message = str(info.value)
    assert message.startswith("stages.train.resources.extra: ") and option in message
    assert message.endswith("; remove it") and "\n" not in message


@pytest.mark.parametrize("extra", [["--signal=B:USR2@60"], ["--signal", "USR1@30"], ["--open-mode=truncate"]])
def test_checkpoint_options_are_refused_only_with_a_checkpoint(extra: list[str]) -> None:
    if len(extra) == 1:  # without a checkpoint they are the user's (two-word spellings never were)
        assert config.parse_stage("train", stage(extra)).resources.extra == tuple(extra)
    with pytest.raises(UsageError, match=r"stages\.train\.resources\.extra: --(signal|open-mode) is set by slurmflow"):
        config.parse_stage("train", stage(extra, checkpoint={"signal": "USR1", "seconds": 120}))
    with pytest.raises(UsageError, match="is set by slurmflow"):
        config.parse_stage("train", stage(extra, checkpoint=True))


@pytest.mark.parametrize(
    "extra",
    [
        ["--nice=10"],
        ["--partition=gpu"],
        ["--part=gpu"],  # an abbreviation of --partition, not of --parsable
        ["--mail-type=END", "--mail-user=me@example.org"],
        ["--exclusive"],
        ["--signal=USR2@60"],  # no checkpoint: the user's own signal
    ],
)
def test_other_options_pass(extra: list[str]) -> None:
    assert config.parse_stage("train", stage(extra)).resources.extra == tuple(extra)


def test_a_space_inside_the_option_name_is_refused() -> None:
    with pytest.raises(UsageError, match=r"'--nice 10' has a space in the option name: write '--nice=10'"):
        config.parse_stage("train", stage(["--nice 10"]))
    assert config.parse_stage("train", stage(["--mail-user=a b"])).resources.extra == ("--mail-user=a b",)


def test_allowed_extra_never_overrides_the_planners_options() -> None:
    """Whatever passes validation, the planner's job name, array, dependency and log stay."""
    parsed = config.parse_stage("train", stage(["--nice=10", "--exclusive"]))
    spec = jobs.node_spec(
        JobNode("train.0", "train", size=4, array=True),
        parsed,
        {},
        run_id="r",
        script="true",
        logs_dir="/r/logs",
        chdir="/p",
    )
    names = [w.split("=", 1)[0] for w in sbatch.argv(spec)[1:]]
    assert len(names) == len(set(names)), names
