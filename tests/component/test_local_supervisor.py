"""A local run outlives its terminal: its supervisor (started detached) runs it to the end, and
`status`, `logs`, `cancel` and `retry` work on it during and after the run, as on Slurm. Every
command here is the real `slurmflow` in its own process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.component.processes import alive, wait_for

REPO = Path(__file__).resolve().parents[2]

# Trial `seed` writes its pid, appends to runs.txt, then waits for the gate file (or its nap).
EXPERIMENT = """\
# @package _global_
name: sup
seed: 0
gate: {gate}
nap: {nap}
sweep:
  seed: range(3)
stages:
  work:
    per_trial: true
    command: >-
      cd "$SLURMFLOW_TRIAL_DIR" && echo run >> runs.txt &&
      {{ sleep ${{nap}} & echo $! > sleeper.pid; wait; }} &&
      {{ test ${{seed}} != 1 || test -e ${{gate}}; }}
    resources: {{time: 5m}}
"""


class Project:
    def __init__(self, root: Path, nap: float) -> None:
        self.root = root
        shutil.copytree(REPO / "configs", root / "configs")
        self.gate = root / "gate"
        (root / "configs" / "experiment" / "sup.yaml").write_text(EXPERIMENT.format(gate=self.gate, nap=nap))

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "slurmflow", *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(*args), cwd=self.root, capture_output=True, text=True, timeout=120)
        assert not check or done.returncode == 0, done.stderr
        return done

    def launch(self, *extra: str) -> subprocess.Popen[str]:
        """`slurmflow launch` as from a terminal: its own session, as a shell would start it."""
        argv = self.argv("launch", "--backend", "local", "--local-gpus", "0", "--runs-dir", "runs", *extra)
        argv.append("experiment=sup")
        return subprocess.Popen(
            argv, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )

    @property
    def run_dir(self) -> Path:
        runs = list((self.root / "runs").glob("sup-*")) if (self.root / "runs").exists() else []
        return runs[0] if runs else self.root / "runs" / "none"

    def trial(self, seed: int) -> Path:
        # The sweep is seed=range(n): trial number == seed.
        return self.run_dir / "trials" / str(seed)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.run("status", str(self.run_dir), "--json", "--tasks").stdout)
        return doc

    def states(self) -> dict[int, str]:
        return {t["trial"]: t["state"] for t in self.status()["tasks"]}

    def started(self) -> bool:
        """A task runs its command (as many run at once as this machine has CPUs)."""
        return self.run_dir.exists() and bool(self.sleepers())

    def sleepers(self) -> list[int]:
        pids = [p.read_text().strip() for p in self.run_dir.glob("trials/*/sleeper.pid")]
        return [int(p) for p in pids if p]


def test_closing_the_terminal_of_a_launch_leaves_the_run_to_finish(tmp_path: Path) -> None:
    project = Project(tmp_path, nap=2)
    project.gate.touch()
    launch = project.launch()
    wait_for(project.started, "a trial to start", timeout=60)
    os.killpg(launch.pid, signal.SIGKILL)  # the terminal and everything of its session, gone
    launch.wait(timeout=30)
    wait_for(lambda: project.status()["done"], "the run to end without its launch", timeout=60)
    assert project.states() == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}
    assert project.run("logs", str(project.run_dir), "work", "2").returncode == 0


def test_a_detached_run_is_cancelled_by_slurmflow_cancel_with_its_processes(tmp_path: Path) -> None:
    project = Project(tmp_path, nap=300)
    launch = project.launch("--detach")
    out, err = launch.communicate(timeout=60)
    assert launch.returncode == 0, err
    assert "goes on in the background" in out
    wait_for(project.started, "a trial to start", timeout=60)
    assert "RUNNING" in set(project.states().values())
    project.run("cancel", str(project.run_dir))
    assert set(project.states().values()) == {"CANCELLED"}
    pids = project.sleepers()
    wait_for(lambda: not any(alive(p) for p in pids), "the cancelled tasks' processes to end", timeout=30)


def test_retry_of_a_finished_local_run_reruns_only_its_failed_trial(tmp_path: Path) -> None:
    project = Project(tmp_path, nap=0)
    launch = project.launch("--detach")
    assert launch.wait(timeout=60) == 0
    wait_for(lambda: project.run_dir.exists() and project.status()["done"], "the run to end", timeout=60)
    assert project.states() == {0: "COMPLETED", 1: "FAILED", 2: "COMPLETED"}
    project.gate.touch()  # what made trial 1 fail is fixed
    project.run("retry", str(project.run_dir), "--failed")
    wait_for(lambda: project.status()["done"], "the retried trial to end", timeout=60)
    assert project.states() == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}
    runs = {s: (project.trial(s) / "runs.txt").read_text().count("run") for s in range(3)}
    assert runs == {0: 1, 1: 2, 2: 1}
    # The run's other commands work on it as on Slurm: monitor sees it ended, resume adds nothing.
    assert "every job has ended" in project.run("monitor", str(project.run_dir), "--once").stdout
    resumed = json.loads(project.run("resume", str(project.run_dir), "--json").stdout)
    assert resumed["run_id"] == project.run_dir.name and len(resumed["nodes"]) == 1
    assert project.states() == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}


def test_ctrl_c_of_a_foreground_launch_cancels_its_tasks_and_leaves_no_process(tmp_path: Path) -> None:
    project = Project(tmp_path, nap=300)
    launch = project.launch()
    wait_for(project.started, "a trial to start", timeout=60)
    launch.send_signal(signal.SIGINT)
    _out, err = launch.communicate(timeout=60)
    assert launch.returncode == 130, err
    assert set(project.states().values()) == {"CANCELLED"}
    for pid in project.sleepers():
        assert not alive(pid), "Ctrl-C left a task's process running"


def test_a_killed_supervisor_is_replaced_and_the_run_still_finishes(tmp_path: Path) -> None:
    from slurmflow.backends.local_run import supervisor_alive

    project = Project(tmp_path, nap=3)
    project.gate.touch()
    launch = project.launch("--detach")
    assert launch.wait(timeout=60) == 0
    wait_for(project.started, "a trial to start", timeout=60)
    local = project.run_dir / "local"
    pids = subprocess.run(["pgrep", "-f", f"slurmflow supervise {project.run_dir}"], capture_output=True, text=True)
    (supervisor,) = [int(p) for p in pids.stdout.split()]
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not alive(supervisor), "the supervisor to die", timeout=60)
    # The tasks it started run on; the next look at the run starts a new supervisor, which reads
    # their exit codes from the files their batch steps write.
    wait_for(lambda: project.status()["done"], "the run to end under a new supervisor", timeout=60)
    assert project.states() == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}
    assert sorted(p.name.split(".")[-1] for p in (local / "exits").iterdir()) == ["0", "0", "0"]
    wait_for(lambda: not supervisor_alive(local), "the new supervisor to leave once the run has ended", timeout=60)


@pytest.fixture(autouse=True)
def _no_slurm_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURMFLOW_SLURM_PREFIX", raising=False)


HOG = """\
# @package _global_
name: hog
stages:
  hog:
    command: >-
      python -c 'import time; b = bytearray(300 * 2**20); b[::4096] = b"x" * len(b[::4096]); time.sleep(60)'
    resources: {mem: 100M, time: 5m}
  after:
    after_not_ok: [hog]
    command: "true"
"""


def test_the_memory_of_the_command_the_wrapper_runs_counts_and_ends_it_out_of_memory(tmp_path: Path) -> None:
    """The stage's command runs in a session of its own under the job wrapper: its memory is still
    the task's, as in Slurm's cgroup."""
    project = Project(tmp_path, nap=0)
    (tmp_path / "configs" / "experiment" / "hog.yaml").write_text(HOG)
    done = project.run("launch", "--backend", "local", "--runs-dir", "runs", "experiment=hog", check=False)
    assert done.returncode == 1, done.stderr  # a task ran out of memory
    (run,) = (tmp_path / "runs").glob("hog-*")
    status = json.loads(project.run("status", str(run), "--json", "--tasks").stdout)
    states = {t["stage"]: (t["state"], t["reason"]) for t in status["tasks"]}
    assert states == {"hog": ("OUT_OF_MEMORY", "OutOfMemory"), "after": ("COMPLETED", "None")}
