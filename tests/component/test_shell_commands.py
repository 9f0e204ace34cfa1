"""Stage commands as bash lines, end to end without Slurm: a launch on the local backend runs the real
task wrapper; signals reach the program through bash, and nothing the line started outlives it."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import string
import subprocess
import sys
from pathlib import Path

import pytest

from tests.component.processes import alive, wait_for

REPO = Path(__file__).resolve().parents[2]
PY = shlex.quote(sys.executable)

# Swept from the command line (Hydra's quoted strings) and set in the config body: hostile to a shell.
SWEPT = ["a b 'c' \"d\" * ~ \\ # % {x,y} é !x", "$(touch {m}/swept) `touch {m}/tick2`; touch {m}/s2 | & > <", ""]
EVIL = "$(touch {m}/dollar) `touch {m}/tick`; touch {m}/semi\ntouch {m}/newline | touch {m}/pipe"

EXPERIMENT = """\
# @package _global_
name: shell
word: plain
evil: {evil}
stages:
  one:
    per_trial: true
    command: >-
      cd "$SLURMFLOW_TRIAL_DIR" &&
      python -c 'import sys; print(sys.argv[1])' ${{word}} | tr a-z A-Z > upper.txt &&
      printf %s ${{word}} > word.txt && printf %s "${{evil}}" > evil.txt &&
      echo "task $SLURM_ARRAY_TASK_ID" > task.txt && echo \\${{SLURMFLOW_STAGE}} >> task.txt
    resources: {{partition: cpu, time: 5m}}
"""


def test_a_sweep_of_hostile_values_runs_as_shell_lines_on_the_local_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from slurmflow.cli.main import main

    markers = tmp_path / "markers"
    markers.mkdir()
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    evil = EVIL.replace("{m}", str(markers))
    (tmp_path / "configs" / "experiment" / "shell.yaml").write_text(EXPERIMENT.format(evil=json.dumps(evil)))
    monkeypatch.chdir(tmp_path)
    swept = [v.replace("{m}", str(markers)) for v in SWEPT]
    sweep = ",".join("'" + v.replace("'", "\\'") + "'" for v in swept)  # Hydra escapes only quotes
    code = main(["launch", "--backend", "local", "--runs-dir", "runs", "--json", "experiment=shell", f"word={sweep}"])
    out = capsys.readouterr().out
    assert code == 0, out
    (run,) = (tmp_path / "runs").iterdir()
    trials = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == len(SWEPT)
    upper = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)
    for trial in trials:
        d = run / "trials" / str(trial["index"])
        value = swept[trial["index"]]
        assert (d / "word.txt").read_text() == value
        assert (d / "upper.txt").read_text() == value.translate(upper) + "\n"  # a pipe, then >
        assert (d / "evil.txt").read_text() == evil
        assert (d / "task.txt").read_text() == f"task {trial['index']}\none\n"  # shell variables are bash's
        status = json.loads((d / "one.status.json").read_text())
        assert status["state"] == "completed" and status["exit_code"] == 0
    assert list(markers.iterdir()) == []  # no value ran as code


# A stand-in for the task wrapper: the line as task.py builds it, run and forwarded as task.py does.
WRAPPER = """
import signal, sys
from omegaconf import OmegaConf
from slurmflow.experiment import trialcfg
from slurmflow.slurm.runner import run_child
argv = trialcfg.stage_argv(sys.argv[1], None, OmegaConf.create({}))
forward = [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGUSR2]
child = run_child(argv, forward=forward, shell=True)
sys.exit(child.wait())
"""

# Saves on USR1 (as a training job checkpoints) and asks its worker, which never handles USR1,
# whether it is still alive afterwards; exits 7 once saved.
PROGRAM = """
import os, signal, subprocess, sys
d = sys.argv[1]
worker = subprocess.Popen([sys.executable, "-c", "import sys\\nfor line in sys.stdin: print('pong', flush=True)"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
def save(signum, frame):
    worker.stdin.write("ping\\n"); worker.stdin.flush()
    open(os.path.join(d, "saved"), "w").write(worker.stdout.readline())
    sys.exit(7)
signal.signal(signal.SIGUSR1, save)
open(os.path.join(d, "ready"), "w").write(str(worker.pid))
signal.pause()
"""


def start(line: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRAPPER, line], cwd=REPO)


def test_the_checkpoint_signal_reaches_the_program_and_bash_outlives_it(tmp_path: Path) -> None:
    (tmp_path / "program.py").write_text(PROGRAM)
    d = shlex.quote(str(tmp_path))
    wrapper = start(f'{PY} {d}/program.py {d}; echo "bash saw $?" > {d}/after')
    wait_for(lambda: (tmp_path / "ready").exists() and (tmp_path / "ready").read_text() != "", "the program to start")
    worker = int((tmp_path / "ready").read_text())
    wrapper.send_signal(signal.SIGUSR1)
    assert wrapper.wait(timeout=60) == 0  # the line's last command: the echo
    assert (tmp_path / "saved").read_text() == "pong\n"  # its worker was spared the warning
    assert (tmp_path / "after").read_text() == "bash saw 7\n"  # bash waited for the program's status
    wait_for(lambda: not alive(worker), "the worker to be stopped with the line")


def test_the_exit_status_is_the_programs(tmp_path: Path) -> None:
    (tmp_path / "program.py").write_text(PROGRAM)
    d = shlex.quote(str(tmp_path))
    wrapper = start(f"cd {d} && {PY} program.py .")
    wait_for(lambda: (tmp_path / "ready").exists() and (tmp_path / "ready").read_text() != "", "the program to start")
    wrapper.send_signal(signal.SIGUSR1)
    assert wrapper.wait(timeout=60) == 7


def test_term_ends_everything_the_line_started(tmp_path: Path) -> None:
    d = shlex.quote(str(tmp_path))
    # A background job, one that ignores TERM, and a foreground program, all waiting forever.
    line = (
        f"sleep 300 & echo $! > {d}/bg; (trap '' TERM; exec sleep 301) & echo $! > {d}/deaf; "
        f'{PY} -c \'import os, signal; open("{tmp_path}/fg", "w").write(str(os.getpid())); signal.pause()\'; '
        f"touch {d}/went-on"
    )
    wrapper = start(line)
    files = [tmp_path / n for n in ("bg", "deaf", "fg")]
    wait_for(lambda: all(f.exists() and f.read_text().strip() for f in files), "the line to start its commands")
    pids = [int(f.read_text()) for f in files]
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=60) == 128 + signal.SIGTERM  # the program's status: killed by TERM
    for pid in pids:
        wait_for(lambda pid=pid: not alive(pid), f"process {pid} to end")  # type: ignore[misc]
    assert not (tmp_path / "went-on").exists()  # TERM ends the line


def test_what_a_line_leaves_running_ends_with_it(tmp_path: Path) -> None:
    d = shlex.quote(str(tmp_path))
    wrapper = start(f"sleep 300 & echo $! > {d}/bg")
    assert wrapper.wait(timeout=60) == 0
    pid = int((tmp_path / "bg").read_text())
    wait_for(lambda: not alive(pid), "the background sleep to be killed")
