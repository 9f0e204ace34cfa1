"""Durations and memory sizes, parsed in one place, in Slurm's formats (man sbatch).

Time limits: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, a bare number of minutes, or the
friendlier `90s`, `30m`, `1.5h`, `2d`; `0`, `UNLIMITED` and `infinite` mean no limit (Slurm's own
meaning of `--time=0`), written `UNLIMITED`, and counted as unbounded by every budget.
Memory: a whole number with an optional K, M, G or T suffix; a bare number is megabytes.
This module imports nothing of slurmflow's: every other module may use it.
"""

from __future__ import annotations

import math
import re

from slurmflow.errors import UsageError

UNLIMITED = "UNLIMITED"
_NO_LIMIT = {"0", "unlimited", "infinite", "infinity"}
# ASCII digits only, and \Z: `\d` alone takes any script's digits and `$` a trailing newline.
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\Z", re.ASCII)
_HUMAN_TIME = re.compile(
    r"^(\d+(?:\.\d+)?) ?(s|sec|secs|m|min|mins|h|hr|hrs|hour|hours|d|day|days)\Z", re.IGNORECASE | re.ASCII
)
_HUMAN_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MEM = re.compile(r"^(\d+)([KMGT]?)B?\Z", re.IGNORECASE | re.ASCII)
_TIME_FORMS = "write 30m, 2h, 1d, Slurm's H:MM:SS, or 0 for none"
_MIB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _human(text: str) -> float | None:
    m = _HUMAN_TIME.match(text)
    return float(m.group(1)) * _HUMAN_UNIT[m.group(2)[0].lower()] if m else None


def _clock(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def time_limit(value: object, where: str) -> str:
    """A stage's time limit in Slurm's format: '30m' -> '00:30:00', 90 -> '90' (minutes, as
    sbatch reads it), 0 / 'UNLIMITED' -> 'UNLIMITED'. Raises UsageError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UsageError(f"{where}: {value!r} is not a time limit: {_TIME_FORMS}")
    text = str(value)
    if text.lower() in _NO_LIMIT:
        return UNLIMITED
    if _SLURM_TIME.match(text):
        if time_hours(text) == 0:
            return UNLIMITED
        return text
    seconds = _human(text)
    if seconds is None:
        raise UsageError(f"{where}: time limit {text!r} is not valid: {_TIME_FORMS}")
    if seconds < 1:
        raise UsageError(f"{where}: time limit {text!r} is under a second: write at least 1s, or 0 for no limit")
    return _clock(math.ceil(seconds))


def time_hours(text: str | None) -> float | None:
    """A Slurm time limit in hours; None for no limit (unset or UNLIMITED)."""
    if text is None or text.lower() in _NO_LIMIT:
        return None
    m = _SLURM_TIME.match(text)
    if not m:
        raise ValueError(f"not a Slurm time limit: {text!r}")
    days, first, second, third = m.groups()
    parts = [int(first), *(int(p) for p in (second, third) if p is not None)]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        h, mins, s = [*parts, 0, 0][:3]
        return int(days) * 24 + h + mins / 60 + s / 3600
    if len(parts) == 1:  # minutes
        return parts[0] / 60
    if len(parts) == 2:  # M:S
        return parts[0] / 60 + parts[1] / 3600
    return parts[0] + parts[1] / 60 + parts[2] / 3600


def seconds(value: object, where: str) -> float:
    """A positive duration of slurmflow's own (sampling intervals, idle windows): a number of
    seconds, '90s', '10m', '2h', '1d' or H:MM:SS."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{where}: {value!r} is not a duration: write 30s, 10m, 2h or a number of seconds")
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        text = value
        human = _human(text)
        if human is not None:
            out = human
        elif _SLURM_TIME.match(text) and ":" in text:
            out = (time_hours(text) or 0.0) * 3600
        else:
            raise UsageError(f"{where}: {text!r} is not a duration: write 30s, 10m, 2h or a number of seconds")
    if not math.isfinite(out) or out <= 0:
        raise UsageError(f"{where}: {value!r} must be a positive duration")
    return out


def memory(value: object, where: str) -> str:
    """A memory size as sbatch takes it ('4G', '512M', '2048'), checked; a whole number is MB."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UsageError(f"{where}: {value!r} is not a memory size: write 4G, 512M or 1T")
    text = str(value)
    m = _MEM.match(text)
    if not m:
        raise UsageError(f"{where}: {text!r} is not a memory size: write 4G, 512M or 1T")
    return f"{int(m.group(1))}{m.group(2).upper()}"


def megabytes(mem: str) -> int:
    """'2G' -> 2048; a bare number is megabytes (man sbatch, --mem); at least 1."""
    m = _MEM.match(mem)
    if not m:
        raise ValueError(f"not a memory size: {mem!r}")
    return max(1, int(int(m.group(1)) * _MIB[(m.group(2) or "M").upper()]))
