"""An experiment's `search:` block -> slurmflow.model.Search: an Optuna study instead of a grid sweep.

search:
  params: {lr: tag(log, interval(1e-4, 1e-1)), layers: int(interval(1, 8)), opt: choice(adam, sgd)}
  sampler: tpe                  # or {name: tpe, n_startup_trials: 20}: the Optuna class's arguments
  pruner: median                # or {name: percentile, percentile: 25.0}; null: none
  n_trials: 40
  batch: 4                      # trials in flight; more than n_trials is allowed (n_trials bounds it)

Each param is read by Hydra's own override parser, as Hydra's Optuna sweeper reads
`hydra.sweeper.params`, so that its users' params mean the same here:

  interval(a, b)                 float, uniform from a to b (Hydra's interval() makes a and b floats)
  tag(log, interval(a, b))       float, log-uniform; a > 0
  int(interval(a, b))            int from a to b, both included (int() truncates a and b, as in Hydra)
  tag(log, int(interval(a, b)))  int, log-uniform; a >= 1
  range(a, b[, step])            int, or float with a step when any of a, b, step is a float
  choice(a, b), a,b or a list    categorical: strings, numbers, true/false, and null in a,b,null (Hydra's
                                 choice() takes no null); equal values (1, 1.0, true) are refused
  shuffle(range(...))            categorical of the range's values (as Hydra's Optuna sweeper does)

One difference: Hydra's Optuna sweeper hands range(a, b, step) to Optuna with b as the upper
bound, which Optuna includes (range(1, 8) may give 8), while Hydra's range() elsewhere, its
`--multirun` and slurmflow's `sweep:` stop before b. Here range() stops before b too, so a key
moved from `sweep:` to `search:` keeps its values; written with b one step past the last value
(range(16, 129, 16): 16 to 128) it means the same in both.

A param whose key is a config group of the experiment is a categorical of option names.
cmaes samples categorical params independently (Optuna's own fallback); the grid sampler needs
every param listable: choices, ints, floats with a step. slurmflow.search.space is what Optuna
sees of the result, without Hydra; it is a layer above this one, so nothing here imports it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    OverrideType,
    QuotedString,
    RangeSweep,
    Sweep,
    Transformer,
    ValueType,
)
from hydra.errors import HydraException, OverrideParseException

from slurmflow.errors import UsageError
from slurmflow.experiment import schema
from slurmflow.experiment.appargs import hydra_value
from slurmflow.experiment.schema import SearchIn
from slurmflow.experiment.stages import NAME
from slurmflow.model import Search, SearchParam
from slurmflow.slurm import units

__all__ = ["parse"]

Choice = str | int | float | bool | None

# A config key as Hydra writes one: names joined by `.`, or by `/` for a group inside a group.
_KEY = re.compile(r"[A-Za-z_][\w-]*(?:[./][A-Za-z_][\w-]*)*", re.ASCII)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://", re.ASCII)
_FORMS = "interval(a, b), tag(log, interval(a, b)), int(interval(a, b)), range(a, b, step) or choice(a, b)"
# shuffle(range(...)) is listed as its values: a categorical of more than this is not one.
_MAX_CHOICES = 10_000
# The names slurmflow.search.space makes Optuna objects of, and the most points its grid holds
# (Optuna's GridSampler lists them all). Repeated here, not imported: the experiment layer is
# below the search package's, which reads Search without Hydra (tests keep the two equal).
SAMPLERS = ("tpe", "cmaes", "random", "grid", "qmc")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "nop")
GRID_MAX = 100_000


def parse(raw: object, config_dir: Path) -> Search | None:
    """The `search:` node (plain data) as a Search; None when the experiment has none. Raises
    UsageError with one line naming the field. The sampler's and the pruner's options are Optuna's
    to judge: slurmflow.search.space.check(search, n_objectives) makes them once, at launch."""
    if raw is None:
        return None
    shape = schema.convert(raw, SearchIn, "search")
    sampler, sampler_options = _named(shape.sampler, "search.sampler", SAMPLERS, "sampler")
    pruner, pruner_options = _pruner(shape.pruner)
    found = Search(
        params=_params(shape.params, config_dir),
        n_trials=shape.n_trials,
        batch=shape.batch,
        sampler=sampler,
        sampler_options=sampler_options,
        pruner=pruner,
        pruner_options=pruner_options,
        seed=shape.seed,
        storage=_storage(shape.storage),
        study_name=_study_name(shape.study_name),
        max_gpu_hours=None if shape.max_gpu_hours is None else float(shape.max_gpu_hours),
        deadline_s=None if shape.deadline is None else units.seconds(shape.deadline, "search.deadline"),
        prune_stage=_prune_stage(shape.prune_stage, pruner),
        grace_s=_grace(shape.grace, pruner),
    )
    if found.sampler == "grid":
        # As Hydra's Optuna sweeper does: the grid ends the study (a trial past it would repeat one).
        found = dataclasses.replace(found, n_trials=min(found.n_trials, _grid_points(found.params)))
    return found


def _grid_points(params: tuple[SearchParam, ...]) -> int:
    """How many points Optuna's GridSampler would visit: every param must be listable."""
    total = 1
    for p in params:
        total *= _listed(p)
    if total > GRID_MAX:
        raise UsageError(
            f"search.sampler: grid: the params make {total:,} points, more than the {GRID_MAX:,} Optuna's GridSampler "
            "holds well: narrow them, or use tpe or random"
        )
    return total


def _listed(p: SearchParam) -> int:
    if p.kind == "categorical":
        return len(p.choices)
    assert p.low is not None and p.high is not None  # made so by _interval and _range
    if p.kind == "float" and p.step is None:
        raise UsageError(
            f"search.params.{p.name}: the grid sampler lists values, and a float interval has none to list: "
            "write range(low, stop, step) or choice(...), or use another sampler"
        )
    span = (Decimal(repr(p.high)) - Decimal(repr(p.low))) / Decimal(repr(p.step or 1))
    return int(span.to_integral_value(ROUND_FLOOR)) + 1


def _named(value: str | dict[str, Any], where: str, known: tuple[str, ...], what: str) -> tuple[str, dict[str, Any]]:
    """A sampler or pruner: `tpe`, or {name: tpe, <keyword arguments of Optuna's class>}."""
    if isinstance(value, dict):
        name = value.get("name")
        options = {k: v for k, v in value.items() if k != "name"}
    else:
        name, options = value, {}
    if not isinstance(name, str):
        raise UsageError(f"{where}: a mapping needs name: one of {', '.join(known)} (then the {what}'s options)")
    if name not in known:
        none = ", or null for none" if what == "pruner" else ""
        raise UsageError(f"{where}: unknown {what} {name!r}: use one of {', '.join(known)}{none}")
    return name, options


def _pruner(value: str | dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    if value is None:
        return None, {}
    return _named(value, "search.pruner", PRUNERS, "pruner")


def _storage(value: str | None) -> str | None:
    if value is None or value == "sqlite":  # `sqlite` names the default: SQLite in the run directory
        return None
    if value == "journal":
        return value
    if not _URL.match(value):
        raise UsageError(
            f"search.storage: {value!r} is not a database URL: write null (SQLite in the run directory), "
            "journal (a journal file there), or a URL such as postgresql://host/db"
        )
    if ":memory:" in value:  # each monitor tick is a new process: the study would start empty each time
        raise UsageError(
            "search.storage: an in-memory database is lost between monitor ticks: write null or a file URL"
        )
    return value


def _study_name(value: str | None) -> str | None:
    if value is not None and (not value.strip() or not value.isprintable()):
        raise UsageError(f"search.study_name: {value!r} must be one line of printable text, or null (the run id)")
    return value


def _prune_stage(value: str | None, pruner: str | None) -> str | None:
    if value is None:
        return None
    if not NAME.match(value):
        raise UsageError(f"search.prune_stage: {value!r} is not a stage name: give the name of a per_trial stage")
    if pruner is None:
        raise UsageError("search.prune_stage: set, but search.pruner is not: add a pruner (pruner: nop keeps it off)")
    return value


def _grace(value: str | float, pruner: str | None) -> float:
    if value in (0, "0"):
        return 0.0
    grace = units.seconds(value, "search.grace")
    if pruner is None:
        raise UsageError("search.grace: set, but search.pruner is not: add a pruner (pruner: nop keeps it off)")
    return grace


# --- params ------------------------------------------------------------------------------------


def _params(raw: dict[str, Any], config_dir: Path) -> tuple[SearchParam, ...]:
    if not raw:
        raise UsageError("search.params: empty: give at least one, e.g. lr: tag(log, interval(1e-4, 1e-1))")
    parser = OverridesParser.create()
    return tuple(_param(key, value, config_dir, parser) for key, value in raw.items())


def _param(key: str, value: Any, config_dir: Path, parser: OverridesParser) -> SearchParam:
    where = f"search.params.{key}"
    if not _KEY.fullmatch(key):
        raise UsageError(
            f"{where}: {key!r} is not a config key: names of letters, digits, _ and - joined by . "
            "(or / for a group in a group), without + or ~: a searched key must be in the config"
        )
    ov = _parse(key, _text(value, where), where, parser)
    group = (config_dir / key.replace(".", "/")).is_dir()  # as a sweep's axis is told a group
    out = _from_sweep(ov, where)
    if group and out.kind != "categorical":
        raise UsageError(f"{where}: {key} is a config group: search its options with choice(a, b)")
    names = [c for c in out.choices if isinstance(c, str)]
    if group and len(names) < len(out.choices):
        bad = next(c for c in out.choices if not isinstance(c, str))
        raise UsageError(
            f"{where}: {key} is a config group, whose options are names, and {hydra_value(bad)} is not one: "
            "quote an option's name that Hydra would read as a number, true/false or null"
        )
    return dataclasses.replace(out, name=key, group=group)


def _text(value: Any, where: str) -> str:
    """The param's Hydra text. A YAML list is a categorical of its items, as a `sweep:` list is."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) > 1:
        return ",".join(hydra_value(v) for v in value)
    if isinstance(value, dict):
        raise UsageError(f"{where}: expected Hydra's Optuna-sweeper text ({_FORMS}), not a mapping")
    raise _fixed(where, value)


def _fixed(where: str, value: object) -> UsageError:
    return UsageError(
        f"{where}: {value!r} is one value, not a space to search: a fixed value belongs in the config; "
        f"search with {_FORMS}"
    )


def _parse(key: str, text: str, where: str, parser: OverridesParser) -> Override:
    try:
        ov = parser.parse_override(f"{key}={text}")
    except (OverrideParseException, HydraException) as exc:
        said = _one_line(exc)
        if "NoneType is incompatible" in said:  # Hydra's choice() takes no null; its comma list does
            raise UsageError(f"{where}: null cannot be in choice(): write a comma list, a,b,null") from None
        said = re.sub(r"^\w+(Exception|Error)( while evaluating '.*?')?: ", "", said)
        raise UsageError(
            f"{where}: {text!r} is not valid in Hydra's grammar ({said}): write {_FORMS}, quoting text with symbols"
        ) from None
    if ov.key_or_group != key or ov.package is not None or ov.type != OverrideType.CHANGE:
        raise UsageError(f"{where}: write the plain config key, without +, ~ or @package")
    return ov


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _from_sweep(ov: Override, where: str) -> SearchParam:
    """Hydra's sweep object as a param (named later): what each form means is in the docstring."""
    if ov.value_type == ValueType.GLOB_CHOICE_SWEEP:
        raise UsageError(f"{where}: glob() picks options for a grid: list them with choice(a, b)")
    value = ov.value()
    if not isinstance(value, Sweep):
        raise _fixed(where, ov.get_value_element_as_str())
    _tags(value, where)
    if isinstance(value, IntervalSweep):
        return _interval(value, where)
    if isinstance(value, RangeSweep):
        return _range(value, where)
    if isinstance(value, ChoiceSweep):
        return _categorical(value.list, where)
    raise UsageError(f"{where}: not a search space: write {_FORMS}")


def _tags(sweep: Sweep, where: str) -> None:
    # Hydra's tags are free labels; of them, Hydra's Optuna sweeper reads `log` on an interval.
    unknown = sorted(sweep.tags - {"log"})
    if unknown:
        raise UsageError(f"{where}: tag {unknown[0]!r} means nothing here: the one tag read is log, on an interval")
    if sweep.tags and not isinstance(sweep, IntervalSweep):
        raise UsageError(f"{where}: log applies to an interval: write tag(log, interval(a, b)) or its int()")


def _interval(sweep: IntervalSweep, where: str) -> SearchParam:
    low, high = sweep.start, sweep.end
    assert low is not None and high is not None  # the grammar gives both
    whole = isinstance(low, int) and isinstance(high, int)  # int() cast the interval
    log = "log" in sweep.tags
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UsageError(f"{where}: interval({low}, {high}): both ends must be finite numbers")
    if low >= high:
        raise UsageError(f"{where}: interval({low}, {high}): the low end must be below the high end")
    if log and low <= 0:
        raise UsageError(f"{where}: tag(log, ...) needs a low end above 0 (got {low}): a log scale has no 0")
    if whole:
        return SearchParam("", "int", int(low), int(high), log=log)
    return SearchParam("", "float", float(low), float(high), log=log)


def _range(sweep: RangeSweep, where: str) -> SearchParam:
    start, stop, step = sweep.start, sweep.stop, sweep.step
    assert start is not None and stop is not None  # the grammar gives both
    shown = f"range({start}, {stop}, {step})"
    if any(isinstance(x, float) and not math.isfinite(x) for x in (start, stop, step)):
        raise UsageError(f"{where}: {shown}: start, stop and step must be finite numbers")
    if step == 0:
        raise UsageError(f"{where}: {shown}: the step must not be 0")
    if sweep.shuffle:
        values = list(islice(sweep.range(), _MAX_CHOICES + 1))
        if len(values) > _MAX_CHOICES:
            raise UsageError(f"{where}: shuffle({shown}) is over {_MAX_CHOICES:,} choices: drop shuffle()")
        return _categorical(values, where)
    if isinstance(start, int) and isinstance(stop, int) and isinstance(step, int):
        r = range(start, stop, step)
        n = len(r)  # r[0] and r[-1], never min(r): a range of 10**12 values is fine
        low, high = (min(r[0], r[-1]), max(r[0], r[-1])) if n else (start, start)
        out = SearchParam("", "int", low, high, step=abs(step))
    else:
        n, low_d, high_d = _float_range(start, stop, step)
        out = SearchParam("", "float", float(low_d), float(high_d), step=abs(float(step)))
    if n < 2:
        raise UsageError(
            f"{where}: {shown} holds {n} value(s) (range() stops before {stop}): "
            "a search needs two or more; a fixed value belongs in the config"
        )
    return out


def _float_range(start: float, stop: float, step: float) -> tuple[int, Decimal, Decimal]:
    """How many values a float range holds and its lowest and highest, counted in decimal on the
    numbers as written: range(0, 0.9, 0.3) is 0, 0.3, 0.6 (in binary, 3 x 0.3 falls below 0.9)."""
    a, b, s = (Decimal(repr(float(x))) for x in (start, stop, step))
    n = max(0, int(((b - a) / s).to_integral_value(ROUND_CEILING)))
    last = a + (n - 1) * s if n else a
    return n, min(a, last), max(a, last)


def _categorical(items: list[Any], where: str) -> SearchParam:
    choices = [_choice(item, where) for item in items]
    if len(choices) < 2:
        raise UsageError(f"{where}: a choice of one value is not a search: a fixed value belongs in the config")
    seen: dict[Choice, Choice] = {}
    for c in choices:  # Optuna finds a choice by ==: 1, 1.0 and true would be one choice
        if c in seen:
            first = seen[c]
            same = type(first) is type(c)
            raise UsageError(
                f"{where}: {c!r} is given twice: keep one"
                if same
                else f"{where}: {first!r} and {c!r} are one choice to Optuna (equal values): keep one"
            )
        seen[c] = c
    return SearchParam("", "categorical", choices=tuple(choices))


def _choice(item: Any, where: str) -> Choice:
    if isinstance(item, QuotedString):
        return item.text
    if isinstance(item, float) and not math.isfinite(item):
        raise UsageError(f"{where}: {item} cannot be a choice: Optuna compares choices, and nan or inf do not compare")
    if item is None or isinstance(item, (str, int, float, bool)):
        return item
    if isinstance(item, Sweep):
        raise UsageError(f"{where}: a sweep inside a choice: list plain values, choice(a, b)")
    raise UsageError(
        f"{where}: {Transformer.str(item)} is a list or mapping: a choice is a string, number, true/false or null"
    )
