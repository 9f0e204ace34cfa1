"""The fuzz suite's settings and its driver: write a generated case into a fresh directory, run
`slurmflow.cli.main.main` on it in-process, and check what every answer must be.

CI runs the `ci` profile: a fixed seed (derandomize), a bounded number of examples, no example
database (nothing is written into the repository). For a long local run:

    SLURMFLOW_FUZZ_EXAMPLES=2000 pytest tests/fuzz                      # more examples per test
    SLURMFLOW_FUZZ_PROFILE=explore pytest tests/fuzz --hypothesis-seed=7   # other examples
    SLURMFLOW_FUZZ_PROFILE=minimal pytest tests/fuzz                      # shrink each failure
"""

from __future__ import annotations

import atexit
import io
import itertools
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, Phase, settings
from hypothesis.configuration import set_hypothesis_home_dir

from slurmflow.backends import local
from slurmflow.backends.local import LocalSlurm
from slurmflow.backends.sim import Scheduler
from slurmflow.backends.sim import Task as _Task
from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.cli import commands
from slurmflow.cli import main as cli
from slurmflow.run import schedulers
from slurmflow.slurm.runner import FunctionRunner
from slurmflow.slurm.types import JobSpec
from tests.fuzz.strategies import CFG, MARKER, PKG, ROOT

# Hypothesis caches the constants it finds in the code under .hypothesis/constants whatever the
# database setting: keep that out of the repository too.
_storage = tempfile.mkdtemp(prefix="slurmflow-hypothesis-")
atexit.register(shutil.rmtree, _storage, ignore_errors=True)
set_hypothesis_home_dir(_storage)

settings.register_profile(
    "ci",
    derandomize=True,  # the same examples on every run: a red CI run is red again locally
    database=None,  # no .hypothesis/ example database in the repository
    deadline=None,  # a compose takes ~0.1 s, and a loaded 2-core runner is slower still
    max_examples=100,
    # No shrinking: at ~0.1 s an example, shrinking one failure takes minutes. A failing case is
    # plain data and says what was mutated; `minimal` shrinks it when you want the smallest.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("minimal", settings.get_profile("ci"), phases=list(Phase))
settings.register_profile("explore", settings.get_profile("ci"), derandomize=False)
# The profile is this directory's, passed to its tests below: loading it would change the
# defaults of every other Hypothesis test in the session.
PROFILE = settings.get_profile(os.environ.get("SLURMFLOW_FUZZ_PROFILE", "ci"))


def examples(ci: int) -> settings:
    """The profile with `ci` examples (sized so the whole suite takes under a minute on 2 cores);
    $SLURMFLOW_FUZZ_EXAMPLES, when set, gives every test that many instead."""
    wanted = os.environ.get("SLURMFLOW_FUZZ_EXAMPLES", "")
    return settings(PROFILE, max_examples=int(wanted) if wanted.isdigit() and int(wanted) > 0 else ci)


# A command that has not answered in this long is a hang (a sweep materialised without bound,
# a loop on bad input): the example fails instead of stalling CI.
ANSWER_WITHIN_S = 20.0


class Hang(BaseException):
    """Raised into a command that did not answer in time (a BaseException: no `except
    Exception` in the code under test may swallow it)."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@dataclass(frozen=True)
class Answer:
    code: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The one line a refusal prints (after argparse's usage block, which it may print first)."""
        lines = self.stderr.strip().splitlines()
        if lines and lines[0].startswith("usage:"):
            while lines and not _ERROR_LINE.match(lines[0]):
                lines.pop(0)
        assert len(lines) == 1, f"a refusal prints one line on stderr, not {len(lines)}:\n{self.stderr}"
        return lines[0]


_ERROR_LINE = re.compile(r"^slurmflow(?: [\w-]+)*: error: \S")
# A Python exception's class name in a message is an internal error leaking out, not a message.
_EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception)\b")


@contextmanager
def big_machine() -> Iterator[None]:
    """The local engine on a machine big enough for any stage the strategies write: what is
    fuzzed is the experiment, not the size of the machine the tests run on."""
    with mock.patch("os.cpu_count", return_value=64), mock.patch.object(local, "machine_mem_mb", return_value=2**22):
        yield


def run_cli(argv: Sequence[str], cwd: Path) -> Answer:
    """`slurmflow ARGV`, in-process; any exception but SystemExit propagates: it is a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with (
        working_directory(cwd),
        redirect_stdout(out),
        redirect_stderr(err),
        watchdog(ANSWER_WITHIN_S),
        big_machine(),
    ):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse; Python exits 1 for a non-integer code
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Answer(code, out.getvalue(), err.getvalue())


def check_answer(answer: Answer, what: str, names: Sequence[str] = (), forbid: Sequence[str] = ()) -> None:
    """What every answer must be: exit 0 or 2, no traceback; a refusal is one line that says what
    is wrong (naming one of `names`, saying none of `forbid`)."""
    assert answer.code in (0, 2), f"[{what}] exit {answer.code}, not 0 or 2; stderr:\n{answer.stderr}"
    assert "Traceback (most recent call last)" not in answer.stderr, f"[{what}] a traceback:\n{answer.stderr}"
    if answer.code != 2:
        return
    line = answer.error_line()
    assert _ERROR_LINE.match(line), f"[{what}] not a slurmflow error line: {line!r}"
    leaked = _EXCEPTION_NAME.search(line)
    assert leaked is None, f"[{what}] the message shows an internal exception ({leaked.group()}): {line!r}"
    low = line.lower()
    if names:
        assert any(n.lower() in low for n in names), f"[{what}] the message names none of {list(names)}: {line!r}"
    for phrase in forbid:
        assert phrase not in low, f"[{what}] the message misstates the problem ({phrase!r}): {line!r}"


# --- a case on disk ------------------------------------------------------------------------------

_packages = itertools.count()


@dataclass(frozen=True)
class Written:
    root: Path
    package: str  # the user package's name in this example (never imported before)

    @property
    def config_dir(self) -> Path:
        return self.root / "configs"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def fill(self, text: str) -> str:
        return text.replace(ROOT, str(self.root)).replace(CFG, str(self.config_dir)).replace(PKG, self.package)

    def imported_user_code(self) -> bool:
        return (self.root / MARKER).exists() or (self.root / "pwned").exists()  # pwned: a YAML tag ran


@contextmanager
def written(files: Mapping[str, str | bytes]) -> Iterator[Written]:
    with tempfile.TemporaryDirectory(prefix="slurmflow-fuzz-") as tmp:
        case = Written(Path(tmp).resolve(), f"sfzpkg{os.getpid()}_{next(_packages)}")
        (case.config_dir).mkdir()
        for rel, content in files.items():
            path = case.root / case.fill(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content.replace(ROOT.encode(), str(case.root).encode()))
            else:
                path.write_text(case.fill(content))
        yield case


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root (files with their content), bytecode caches aside."""
    out: dict[str, bytes | None] = {}
    for path in root.rglob("*"):
        if "__pycache__" in path.parts:
            continue
        out[str(path.relative_to(root))] = path.read_bytes() if path.is_file() else None
    return out


# --- a launch that queues without running --------------------------------------------------------


class QueueOnly(LocalSlurm):
    """The local engine's queue (the shared scheduler) without its processes: a launch submits
    into it, and no generated command is ever executed."""

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        return Scheduler.submit(self, spec, script_path)

    def _start(self, t: _Task) -> None:
        t.ends = self.now + 1.0

    def _poll(self, t: _Task) -> int | None:
        return 0 if t.ends <= self.now else None

    def _stop(self, t: _Task) -> None:
        pass


@contextmanager
def queue_only() -> Iterator[list[QueueOnly]]:
    """`--backend local` as a queue: the backends a launch built, to look into afterwards."""
    made: list[QueueOnly] = []
    real = schedulers.for_launch

    def for_launch(*args: Any, **kwargs: Any) -> schedulers.Chosen:
        chosen = real(*args, **kwargs)  # whatever checks the real one makes on the options
        if chosen.local is None:
            return chosen
        queue = QueueOnly(devices=chosen.local.devices, cpus=chosen.local.cpus, mem_mb=chosen.local.mem_mb)
        made.append(queue)
        return schedulers.Chosen(queue, queue, chosen.note)

    with (
        mock.patch.object(schedulers, "for_launch", for_launch),
        mock.patch.object(schedulers, "local_run", lambda _store, engine: engine),  # the queue, no supervisor
        mock.patch.object(commands, "_follow_local", lambda *a, **k: 0),
    ):
        yield made


# --- a Slurm accounting that answers the quota commands ------------------------------------------

ASSOCIATIONS = "\n".join(
    [
        "mini|root||||||||normal",
        "mini|lab-a||||||||normal",
        "mini|lab-a|alice|||||||normal",
        "mini|lab-a|carol|||||||normal",
        "mini|lab-b||||||||normal",
        "mini|lab-b|bob|||||||normal",
        "mini|lab-c||||||||normal",
    ]
)


@contextmanager
def fake_accounting() -> Iterator[FunctionRunner]:
    """`sacctmgr` and `id` answered from the associations above; every call is recorded."""

    def handler(argv: tuple[str, ...], _input: str | None) -> tuple[int, str, str]:
        if argv[:1] == ("id",):
            return 0, "alice\n", ""
        if argv[:1] == ("sacctmgr",):
            if "modify" in argv:
                return 0, "", ""
            if "assoc" in argv:
                return 0, ASSOCIATIONS + "\n", ""
            if "qos" in argv:
                return 0, "normal\nhigh\n", ""
            if "user" in argv:
                return 0, "Administrator\n", ""
        return 127, "", f"{argv[0]}: command not found"

    runner = FunctionRunner(handler)
    with mock.patch.object(schedulers, "slurm", lambda prefix=None: SlurmCLI(runner)):
        yield runner
