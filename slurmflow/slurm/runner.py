"""The one place slurmflow starts a subprocess: argv lists only, a timeout on every call, typed errors.

`Runner` is a protocol so tests can pass `FunctionRunner(handler)`, a runner that is just a
function from argv to a result (replaying recorded Slurm output), the way a mock transport works.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from slurmflow.errors import CommandError, CommandNotFound, CommandTimeout


@dataclass(frozen=True)
class Completed:
    """A finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0


class Runner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> Completed: ...


def _check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str):
        # A string here means someone built a shell command line: refuse it.
        raise TypeError("argv must be a sequence of strings, not a string")
    items = tuple(argv)
    if not items or not all(isinstance(a, str) for a in items):
        raise TypeError(f"argv must be a non-empty sequence of strings: {items!r}")
    if any("\0" in a for a in items):
        raise ValueError("argv items must not contain NUL bytes")
    return items


@dataclass
class SubprocessRunner:
    """Runs argv with subprocess, never through a shell.

    `prefix` is prepended to every argv, e.g. ("docker", "exec", "-i", "-u", "alice", "slurmflow-mini")
    to run Slurm commands inside the mini cluster, or ("ssh", "login1") for a remote login node.
    """

    prefix: tuple[str, ...] = ()
    timeout: float = 60.0
    env: Mapping[str, str] | None = None
    calls: int = field(default=0, init=False)

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> Completed:
        full = self.prefix + _check_argv(argv)
        limit = self.timeout if timeout is None else timeout
        env = None if self.env is None else {**os.environ, **self.env}
        self.calls += 1
        start = time.monotonic()
        try:
            proc = subprocess.run(
                full,
                input=input,
                capture_output=True,
                text=True,
                timeout=limit,
                env=env,
                check=False,
                # No stdin from our terminal: a command that would prompt fails instead of hanging.
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise CommandNotFound(full, None, "", str(exc), note=f"{full[0]} not found on PATH") from exc
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise CommandTimeout(full, None, out, err, note=f"timed out after {limit:g} s") from exc
        done = Completed(full, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
        if check and proc.returncode != 0:
            raise CommandError(full, proc.returncode, proc.stdout, proc.stderr)
        return done


Handler = Callable[[tuple[str, ...], "str | None"], "Completed | tuple[int, str, str]"]


@dataclass
class FunctionRunner:
    """A runner that calls `handler(argv, input)` instead of a process: for tests and replays.

    The handler returns a Completed or a (returncode, stdout, stderr) tuple. Every call is kept
    in `calls`, so a test can assert exactly which commands were issued.
    """

    handler: Handler
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> Completed:
        items = _check_argv(argv)
        self.calls.append(items)
        got = self.handler(items, input)
        done = got if isinstance(got, Completed) else Completed(items, got[0], got[1], got[2])
        if check and done.returncode != 0:
            raise CommandError(items, done.returncode, done.stdout, done.stderr)
        return done


# Signals that stop a command go to its whole process group, as Slurm signals every process of a
# job on scancel or at its time limit. Any other (a checkpoint warning: USR1, USR2, HUP) goes to
# the program only: under bash, to bash and the commands it is running, never to their children,
# which a warning would kill (default action) although they never asked for it: a data loader's
# worker processes, say.
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGKILL})


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc (Linux)."""
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


@dataclass
class Child:
    """A job's own command, running in its own session and process group (its id is the child's
    pid); what the task wrapper needs to forward signals and wait."""

    proc: subprocess.Popen[bytes]
    received: list[int] = field(default_factory=list)
    shell: str | None = None  # the shell running the command line, if one does
    ended: bool = False

    def signal(self, signum: int) -> None:
        """Send a signal: a stop signal to every process of the command, another to the program
        (under the shell: the shell and the commands it runs), recording nothing."""
        if self.ended:
            return
        if signum in _STOP_SIGNALS or not os.path.isdir("/proc"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signum)
            return
        targets = [self.proc.pid]
        with contextlib.suppress(OSError):
            # Still the shell (not a program it exec'd): its commands are its children.
            if self.shell and os.path.realpath(f"/proc/{self.proc.pid}/exe") == self.shell:
                targets += _children(self.proc.pid)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def wait(self) -> int:
        """Wait for the command; then kill what it left running in its process group, as Slurm
        does when a batch script ends. 128 + N if it was killed by signal N."""
        code = self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.ended = True
        return 128 - code if code < 0 else code


def run_child(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    forward: Sequence[int] = (),
    on_signal: Callable[[Child, int], None] | None = None,
    shell: bool = False,
) -> Child:
    """Start a job's own command in the foreground (its output goes straight to Slurm's log), in a
    new session so that its whole process group can be signalled, and forward the given signals to
    it (`Child.signal`), recording them; `on_signal` runs after each forward. `shell`: argv[0] is a
    shell running a command line. Call `.wait()` for its exit status (128 + N if killed by signal N)."""
    items = _check_argv(argv)
    try:
        proc = subprocess.Popen(items, cwd=cwd, env=None if env is None else dict(env), start_new_session=True)
    except FileNotFoundError as exc:
        raise CommandNotFound(items, None, "", str(exc), note=f"{items[0]} not found on PATH") from exc
    child = Child(proc, shell=os.path.realpath(items[0]) if shell else None)

    def handler(signum: int, _frame: object) -> None:
        child.received.append(signum)
        if proc.poll() is None:
            child.signal(signum)
        if on_signal is not None:
            on_signal(child, signum)

    for sig in forward:
        signal.signal(sig, handler)
    return child
