"""sbatch options the planner sets itself, refused in a stage's `resources.extra`. Pure.

`resources.extra` goes on the sbatch line after the planner's own options, and sbatch keeps the
last value of an option (man sbatch), so a `--job-name` there would rename the job: a resume then
finds no job by its planned name and submits it again. Each refusal names the option and why.

sbatch reads options with getopt_long, so every spelling counts: `--opt=value`, `--opt value`
(one entry or two), an unambiguous abbreviation (`--dep=...`) and the short form, alone or in a
cluster of flags (`-J name`, `-Jname`, `-HJname`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from slurmflow.errors import UsageError

_LOGS = "it writes each task's log to <run>/logs/<node>/, where `slurmflow logs` reads it"

# long option -> (short letter or "", why slurmflow owns it)
ALWAYS: dict[str, tuple[str, str]] = {
    "--job-name": ("J", "it names jobs sf.<run>.<node> to find them again after a crash"),
    "--array": ("a", "it sizes each array from the sweep and throttles it with max_parallel"),
    "--dependency": ("d", "it wires the stage's after_ok/after_corr/... fields to job ids: use those"),
    "--output": ("o", _LOGS),
    "--error": ("e", _LOGS),
    "--comment": ("", "it tags each job slurmflow:<run>:<node> so status and the monitor know it"),
    "--parsable": ("", "it reads the job id from sbatch's --parsable answer"),
    "--kill-on-invalid-dep": ("", "a job whose dependency can never be met must end, not pend forever"),
    "--chdir": ("D", "jobs run in the launch directory recorded in the run"),
    "--hold": ("H", "use `slurmflow launch --hold`, which records that the jobs are held"),
}
WITH_CHECKPOINT: dict[str, tuple[str, str]] = {
    "--open-mode": ("", "a checkpointed task is requeued and appends to its log, keeping earlier attempts"),
    "--signal": ("", "the checkpoint block sets it from its signal and seconds: change those"),
}
# sbatch's short options (Slurm's opt_string): letters followed by ':' take an argument, which is
# the rest of the word or the next word; the others are flags and may be followed by more letters.
_SHORT_WITH_ARG = set("aABcCdDeFGiJLmMnNopPqStUwx")
# Fewer letters than this after `--` is no abbreviation we guess at: sbatch finds those ambiguous.
_MIN_ABBREV = 3
# '--par' abbreviates both --parsable and --partition: sbatch refuses it as ambiguous by itself.
_OTHER_LONG = ("--partition",)
_SPACE = re.compile(r"\s")


def _long(name: str, reserved: dict[str, tuple[str, str]]) -> str | None:
    """The reserved option a long name spells (itself or an abbreviation of it), if any."""
    if name in reserved:
        return name
    if len(name) - 2 < _MIN_ABBREV or any(o.startswith(name) for o in _OTHER_LONG):
        return None
    found = [opt for opt in reserved if opt.startswith(name)]
    return found[0] if len(found) == 1 else None


def _shorts(word: str) -> list[str]:
    """The short option letters in one word: '-HJname' -> ['H', 'J']."""
    letters: list[str] = []
    for letter in word[1:]:
        letters.append(letter)
        if letter in _SHORT_WITH_ARG:  # the rest of the word is its argument
            break
    return letters


def check_extra(extra: Sequence[object], where: str, *, checkpoint: bool) -> None:
    """Refuse, in one line naming the option and why, any option of `extra` slurmflow sets itself."""
    reserved = {**ALWAYS, **(WITH_CHECKPOINT if checkpoint else {})}
    by_letter = {short: long for long, (short, _) in reserved.items() if short}
    for entry in extra:
        if not isinstance(entry, str):
            continue  # the shape of the list is checked by its reader
        word = _SPACE.split(entry.strip(), maxsplit=1)[0]
        found: list[tuple[str, str]] = []  # (as written, the option)
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            opt = _long(name, reserved)
            if opt:
                found.append((name, opt))
        elif word.startswith("-") and len(word) > 1:
            found += [(f"-{c}", by_letter[c]) for c in _shorts(word) if c in by_letter]
        if found:
            written, opt = found[0]
            spelled = opt if written == opt else f"{written} ({opt})"
            raise UsageError(f"{where}: {spelled} is set by slurmflow ({reserved[opt][1]}); remove it")
