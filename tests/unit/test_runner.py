from __future__ import annotations

import sys

import pytest

from slurmflow.errors import CommandError, CommandNotFound, CommandTimeout
from slurmflow.slurm.runner import Completed, FunctionRunner, SubprocessRunner


def test_runs_argv_without_a_shell() -> None:
    done = SubprocessRunner().run([sys.executable, "-c", "import sys; print(sys.argv[1])", "$(id); *"])
    assert done.stdout == "$(id); *\n" and done.returncode == 0 and done.argv[0] == sys.executable


def test_refuses_shell_strings() -> None:
    with pytest.raises(TypeError, match="not a string"):
        SubprocessRunner().run("echo hi")
    with pytest.raises(TypeError):
        SubprocessRunner().run([])
    with pytest.raises(ValueError, match="NUL"):
        SubprocessRunner().run(["echo", "a\0b"])


def test_error_carries_argv_code_and_output() -> None:
    code = "import sys; print('out'); print('bad thing', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CommandError) as info:
        SubprocessRunner().run([sys.executable, "-c", code])
    err = info.value
    assert err.returncode == 3 and err.stdout == "out\n" and err.stderr == "bad thing\n"
    assert err.argv[-1] == code and "bad thing" in str(err)


def test_check_false_returns_failures() -> None:
    done = SubprocessRunner().run([sys.executable, "-c", "raise SystemExit(4)"], check=False)
    assert done.returncode == 4


def test_timeout() -> None:
    with pytest.raises(CommandTimeout, match="timed out"):
        SubprocessRunner().run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)


def test_not_found() -> None:
    with pytest.raises(CommandNotFound, match="not found"):
        SubprocessRunner().run(["slurmflow-no-such-program"])


def test_prefix_and_input() -> None:
    runner = SubprocessRunner(prefix=(sys.executable, "-c", "import sys; print(sys.argv[1:], sys.stdin.read())"))
    done = runner.run(["sbatch", "--parsable"], input="#!/bin/bash\n")
    assert done.stdout == "['sbatch', '--parsable'] #!/bin/bash\n\n"
    assert runner.calls == 1


def test_function_runner_records_and_checks() -> None:
    runner = FunctionRunner(lambda argv, stdin: (0, "42\n", "") if argv[0] == "sbatch" else (1, "", "no"))
    assert runner.run(["sbatch"]).stdout == "42\n"
    with pytest.raises(CommandError):
        runner.run(["squeue"])
    assert runner.calls == [("sbatch",), ("squeue",)]
    done = FunctionRunner(lambda a, i: Completed(a, 0, "x", "")).run(["a"])
    assert done.stdout == "x"
