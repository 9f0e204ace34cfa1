"""Stage commands are bash lines on the mini cluster: `&&` and `>` work in the job, and hostile swept
values reach the program as exactly themselves, as Slurm's accounting and the files written show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurmflow.slurm.types import JobState
from tests.integration.test_launch import launch_json, wait_final, workdir

pytestmark = pytest.mark.integration
__all__ = ["workdir"]  # the fixture, shared with test_launch

# Swept (Hydra's quoted strings): quotes of both kinds, glob, tilde, a backslash, a comment sign,
# braces, unicode, `!`, command substitution, backticks, ; | & > <. Set in the config body: a newline.
SWEPT = ["a b 'c' \"d\" * ~ \\ # % {x,y} é !x", "$(touch ../swept) `touch ../tick`; touch ../semi | & > < -n"]
EVIL = "$(touch ../dollar)\ntouch ../newline"

EXPERIMENT = """\
# @package _global_
name: shell
word: plain
evil: {evil}
stages:
  write:
    per_trial: true
    command: >-
      cd "$SLURMFLOW_TRIAL_DIR" && printf %s ${{word}} > word.txt &&
      printf '%s' "${{evil}}" > evil.txt && echo "task $SLURM_ARRAY_TASK_ID" > task.txt
    resources: {{partition: cpu, time: 5m}}
"""


def test_hostile_values_in_a_shell_line_reach_the_job_exactly(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "shell.yaml").write_text(EXPERIMENT.format(evil=json.dumps(EVIL)))
    sweep = ",".join("'" + v.replace("'", "\\'") + "'" for v in SWEPT)  # Hydra escapes only quotes
    doc = launch_json(mini_cluster, workdir, "experiment=shell", f"word={sweep}")
    jobs = wait_final(mini_cluster, list(doc["nodes"].values()))
    assert len(jobs) == len(SWEPT) and all(j.state is JobState.COMPLETED for j in jobs.values()), jobs
    run_dir = Path(str(doc["run_dir"]))
    manifest = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    for trial in manifest:
        d = run_dir / "trials" / str(trial["index"])
        assert (d / "word.txt").read_text() == SWEPT[trial["index"]]
        assert (d / "evil.txt").read_text() == EVIL
        assert (d / "task.txt").read_text() == f"task {trial['index']}\n"
    assert sorted(p.name for p in (run_dir / "trials").iterdir()) == sorted(
        str(t["index"]) for t in manifest
    )  # no markers
