"""The exception tree. Every error slurmflow raises on purpose derives from SlurmflowError.

SlurmflowError
├── UsageError                 bad input a user can fix: one line, exit code 2, nothing submitted
├── NotPermitted               the user lacks a Slurm privilege the command needs (exit code 2)
├── CommandError               a command exited non-zero: argv, exit code, stdout, stderr
│   ├── CommandTimeout         it ran past its timeout and was killed
│   ├── CommandNotFound        the program is not installed (or not on PATH)
│   └── SlurmError             a Slurm command failed
│       ├── ControllerUnavailable   "Unable to contact slurm controller": retry later
│       ├── AccountingUnavailable   slurmdbd does not answer: only the controller's view remains
│       ├── SubmissionAmbiguous     "Socket timed out": the job may exist; reconcile before resubmitting
│       ├── ControllerFull          the controller holds MaxJobCount jobs: sbatch gave up retrying
│       ├── SlurmNotConfigured      Slurm's commands are installed but find no configuration
│       └── PolicyViolation         rejected by an association or QOS limit
├── SubmissionRefused          a limit, or a controller away too long, stopped a launch: it resumes
└── ParseError                 Slurm printed something we do not understand (a bug or a new version)
"""

from __future__ import annotations

from collections.abc import Sequence


class SlurmflowError(Exception):
    """Base of every error slurmflow raises on purpose."""

    exit_code = 1


class UsageError(SlurmflowError):
    """Input a user can fix. The message is one line naming what is wrong and how to fix it."""

    exit_code = 2


class NotPermitted(SlurmflowError):
    """The user lacks a Slurm privilege the command needs; the message names it."""

    exit_code = 2


class ParseError(SlurmflowError):
    """Output from Slurm that the parser does not understand."""

    def __init__(self, what: str, text: str) -> None:
        self.what = what
        self.text = text
        super().__init__(f"cannot parse {what}: {text[:200]!r}")


class CommandError(SlurmflowError):
    """A command failed. Carries everything needed to reproduce and diagnose it."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str, note: str = "") -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.note = note
        detail = (stderr.strip() or stdout.strip()).splitlines()
        first = detail[-1] if detail else ""
        what = note or f"exit code {returncode}"
        super().__init__(f"{' '.join(self.argv)}: {what}" + (f": {first}" if first else ""))


class CommandTimeout(CommandError):
    """The command ran past its timeout and was killed."""


class CommandNotFound(CommandError):
    """The program is not installed or not on PATH."""


class SlurmError(CommandError):
    """A Slurm command failed."""


class ControllerUnavailable(SlurmError):
    """slurmctld did not answer; running jobs survive and queued jobs are recovered on restart."""


class AccountingUnavailable(SlurmError):
    """slurmdbd did not answer; only what the controller knows is available."""


class SubmissionAmbiguous(SlurmError):
    """The submission may or may not have created a job (e.g. "Socket timed out")."""


class PolicyViolation(SlurmError):
    """Slurm refused a job because of an association or QOS limit."""


class SlurmNotConfigured(SlurmError):
    """Slurm's client commands exist but have no configuration ("Could not establish a
    configuration source"): not a login node of a cluster."""


class ControllerFull(SlurmError):
    """The controller holds MaxJobCount job records ("Slurm temporarily unable to accept job");
    finished and cancelled jobs keep counting until MinJobAge has passed."""


class SubmissionRefused(SlurmflowError):
    """A limit the controller or accounting enforces refused a submission part-way through a launch,
    or the controller stayed away longer than the launch waits. What was submitted stays submitted,
    the rest is recorded as not yet submitted, and the message says why and how to resume."""

    exit_code = 3

    def __init__(self, message: str, *, node: str, cause: SlurmError) -> None:
        self.node = node
        self.cause = cause
        super().__init__(message)
