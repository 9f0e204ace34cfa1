"""The only module that composes Hydra configs: experiments in, validated model types out.

A launch composes the experiment ONCE (with the non-sweep overrides), parses sweep overrides
with Hydra's own grammar (`a,b`, `range()`, `choice()`, `glob()`), and composes one
representative per distinct config-group choice to validate the sweep. Each task composes its
own trial config in the job, from a snapshot of the config directory (about 95 ms a compose:
10,000 trials composed at plan time would take 16 minutes).
"""

from __future__ import annotations

import contextlib
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, QuotedString, Sweep, Transformer, ValueType
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from slurmflow.errors import UsageError
from slurmflow.experiment import appargs, objective, trialcfg
from slurmflow.experiment import search as search_block
from slurmflow.experiment.appargs import hydra_value
from slurmflow.experiment.stages import NAME, parse_stage
from slurmflow.experiment.sweep import Axis
from slurmflow.model import MlflowTracking, Objective, Search, Stage

__all__ = ["Experiment", "load", "parse_overrides", "parse_stage", "to_yaml", "trial_config", "validate_trials"]


@dataclass(frozen=True)
class Experiment:
    """A composed, validated experiment."""

    name: str
    config_dir: Path
    config_name: str
    base_overrides: tuple[str, ...]
    axes: tuple[Axis, ...]
    stages: Mapping[str, Stage]
    config: Any  # the base DictConfig (sweep keys at their defaults), without its hydra node
    hydra: HydraSettings = field(default_factory=lambda: HydraSettings())
    objectives: tuple[Objective, ...] = ()
    tracking: MlflowTracking | None = None
    search: Search | None = None  # `search:`: an Optuna study instead of the sweep (axes is empty)


# Hydra's own defaults of what an experiment may set under hydra: (hydra/config.yaml).
HYDRA_SWEEP_DIR = "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}"
HYDRA_SWEEP_SUBDIR = "${hydra.job.num}"


@dataclass(frozen=True)
class HydraSettings:
    """What an experiment's `hydra:` node says that slurmflow honours."""

    sweep_dir: str | None = None  # hydra.sweep.dir when set: the run directory, resolved at launch
    chdir: bool = False  # hydra.job.chdir: trials' tasks run in their trial directory
    multirun_yaml: str = ""  # the composed config with its hydra node, as Hydra's multirun.yaml


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    parser = OverridesParser.create()
    out = []
    for line in overrides:
        try:
            out.extend(parser.parse_overrides([line]))
        except OverrideParseException as exc:
            raise UsageError(_override_error(line, exc)) from None
        except HydraException as exc:
            raise UsageError(f"override {line!r}: {_one_line(exc)}") from None
    return out


def _override_error(line: str, exc: OverrideParseException) -> str:
    key, eq, value = line.partition("=")
    if not eq and not line.startswith("~"):
        return f"override {line!r}: expected key=value (or +key=value, ~key)"
    if not re.fullmatch(r"[+~]{0,2}[\w.@/-]+", key, re.ASCII):
        return f"override {line!r}: {key!r} is not a config key (letters, digits, _ and . between names)"
    if "\n" in value or "\r" in value:
        return f"override {line!r}: the value holds a line break; put it in the config file instead"
    if any(ord(c) > 127 for c in value) and not value.strip().startswith(("'", '"')):
        return f"override {line!r}: Hydra reads non-ASCII text only in quotes: write {key}='{value}'"
    # Hydra's message without the name of its parser's exception class.
    said = re.sub(r"^\w+(Exception|Error): ", "", _one_line(exc))
    return (
        f"override {line!r}: not valid in Hydra's override grammar ({said}); "
        "quote a value holding spaces, commas or symbols"
    )


def _axis(ov: Override, config_dir: Path) -> Axis:
    key = ov.key_or_group
    group_dir = config_dir / key.replace(".", "/")
    group = group_dir.is_dir()
    if not ov.is_sweep_override():  # a sweep block entry with one value
        value = ov.get_value_element_as_str()
        return Axis(key, (value,), group, None if group else (_plain(ov.value()),))
    if ov.value_type == ValueType.INTERVAL_SWEEP:
        raise UsageError(f"sweep {key}: interval() needs an optimising sweeper; list values or use range()")
    if ov.value_type == ValueType.GLOB_CHOICE_SWEEP:
        if not group:
            raise UsageError(f"sweep {key}: glob() selects config-group options, and {key} is not a config group")
        options = sorted(p.stem for p in group_dir.glob("*.yaml"))
        glob = ov.value()
        assert isinstance(glob, Glob)
        values = list(glob.filter(options))
        typed = None
    else:
        # One pass (a shuffle() sweep must give the strings and the typed values in one order):
        # the strings go into trials' overrides, the values as Hydra types them (0.3, 'a b', [1, 2])
        # are what the job sets (trialcfg.py).
        try:
            elements = list(ov.sweep_iterator())
        except ValueError as exc:  # range(0, 3, 0)
            raise UsageError(f"sweep {key}: {_one_line(exc)}") from None
        if any(isinstance(e, Sweep) for e in elements):
            raise UsageError(
                f"sweep {key}: a range() or choice() cannot be one value among others: sweep one or list values"
            )
        values = [Transformer.str(e) for e in elements]
        typed = None if group else tuple(_plain(e) for e in elements)
    if not values:
        raise UsageError(f"sweep {key}: yields no values; give at least one")
    seen: set[str] = set()
    twice = None
    for v in values:  # one pass, with a set: a sweep of 100,000s of values
        if v in seen:
            twice = v
            break
        seen.add(v)
    if twice is not None:
        raise UsageError(f"sweep {key}: the value {twice} is given twice: two trials would be the same one")
    prefix = "++" if ov.is_force_add() else "+" if ov.is_add() else ""
    return Axis(key, tuple(values), group, typed, prefix)


def _plain(value: Any) -> Any:
    """A parsed override value as Hydra applies it: quoted strings become their text."""
    if isinstance(value, QuotedString):
        return value.text
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _compose(config_dir: Path, config_name: str, overrides: Sequence[str], *, hydra: bool = False) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None, job_name="slurmflow"):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = _one_line(exc) if getattr(exc, "problem", None) is None else str(exc.problem)  # type: ignore[attr-defined]
        raise UsageError(f"malformed YAML in {config_dir}{where}: {problem}; fix the file") from None
    except RecursionError:
        raise UsageError(f"a config file in {config_dir} is nested too deeply: flatten it") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"a config file in {config_dir} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except MissingConfigException as exc:
        missing = exc.missing_cfg_file or ""
        if missing == config_name or not exc.options:
            raise UsageError(
                f"config {config_name!r} not found in {config_dir}: check -cd/--config-dir and -cn/--config-name"
            ) from None
        group = missing.rpartition("/")[0]
        raise UsageError(
            f"config group {group}: no option {missing.rpartition('/')[2]!r}; choose one of {', '.join(exc.options)}"
        ) from None
    except OverrideParseException as exc:
        raise UsageError(_override_error(exc.override or "", exc)) from None
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__
        if isinstance(cause, yaml.YAMLError):
            raise UsageError(f"malformed YAML: {_one_line(cause)}; fix the file") from None
        missing_key = _missing_key(exc, [o.split("=", 1)[0].lstrip("+~") for o in overrides])
        if isinstance(exc, ConfigCompositionException) and missing_key is not None:
            raise UsageError(
                f"override {missing_key}: no such key in the config; fix the name, or add it with +{missing_key}=..."
            ) from None
        raise UsageError(f"config: {_one_line(exc)}") from None


def _missing_key(exc: BaseException, keys: Sequence[str]) -> str | None:
    """The missing key behind a composition error: OmegaConf's full key of the node it could not
    find, widened to the override's key that reached it (`a.b` for `a.b=1` or `a={b: 1}`)."""
    inner: BaseException | None = exc
    while inner is not None:
        if isinstance(inner, (ConfigKeyError, ConfigAttributeError)) and inner.full_key:
            full = str(inner.full_key)
            related = [k for k in keys if k == full or k.startswith(full + ".") or full.startswith(k + ".")]
            return max([full, *related], key=len)
        inner = inner.__cause__
    return None


def _sweep_block(block: object) -> list[Override]:
    """The config's `sweep:` block as overrides. A list value is a list of values, each one value
    whatever it contains; a string value is Hydra's sweep syntax (`1e-3,3e-4`, `range(0,3)`)."""
    if block is None:
        return []
    if not isinstance(block, dict):
        raise UsageError("sweep: expected a mapping of key: values (e.g. model.lr: [1e-3, 3e-4])")
    lines = []
    for key, value in block.items():
        if isinstance(value, list):
            if not value:
                raise UsageError(f"sweep.{key}: an empty list yields no trials; give at least one value")
            text = ",".join(hydra_value(v) for v in value)
        elif isinstance(value, dict):
            raise UsageError(f"sweep.{key}: expected a list of values or Hydra sweep text, not a mapping")
        else:
            text = value if isinstance(value, str) else hydra_value(value)
        lines.append(f"{key}={text}")
    return parse_overrides(lines)


def _stage_fields(cfg: DictConfig, name: str, raw: Any, swept: set[str]) -> Any:
    """A stage's fields with their interpolations resolved (`gpus: ${model.gpus}`), except the
    command, which is resolved per trial. A field may not depend on a swept key: one stage is one
    job array, the same for every trial."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for key, value in raw.items():
        if key in ("command", "argv", "overrides") or "${" not in json.dumps(value, default=str):
            continue
        text = json.dumps(value, default=str)
        for axis in swept:
            if re.search(r"\$\{\s*" + re.escape(axis) + r"\s*\}", text):
                raise UsageError(
                    f"stages.{name}.{key}: depends on the swept key {axis}; a stage's settings are the same "
                    "for every trial (one job array): sweep a value the command uses instead"
                )
        try:
            node = cfg.stages[name][key]
            out[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except OmegaConfBaseException as exc:
            raise UsageError(f"stages.{name}.{key}: cannot resolve {value!r}: {_one_line(exc)}") from None
    return out


def _hydra_settings(cfg: DictConfig, config_dir: Path) -> tuple[HydraSettings, Any]:
    """Take the hydra node off the composed experiment: what it says that slurmflow honours,
    and `hydra.sweeper.params` (Hydra's own place for a sweep)."""
    node = cfg.hydra
    multirun = OmegaConf.to_yaml(cfg, resolve=False)
    raw = OmegaConf.to_container(node, resolve=False)
    assert isinstance(raw, dict)
    sweep = raw.get("sweep") or {}
    subdir = sweep.get("subdir")
    if subdir not in (None, HYDRA_SWEEP_SUBDIR):
        raise UsageError(
            f"hydra.sweep.subdir: {subdir!r}: a trial's directory is trials/<trial number>, Hydra's "
            f"{HYDRA_SWEEP_SUBDIR}; remove hydra.sweep.subdir (hydra.sweep.dir places the run)"
        )
    sweep_dir = sweep.get("dir")
    placed = None
    if sweep_dir not in (None, HYDRA_SWEEP_DIR):
        from hydra.core.hydra_config import HydraConfig

        before = HydraConfig.instance().cfg
        try:  # as Hydra resolves it: ${now:...}, ${hydra.job.name}, ${hydra:job.name}
            HydraConfig.instance().set_config(cfg)
            placed = str(OmegaConf.select(cfg, "hydra.sweep.dir"))
        except (HydraException, OmegaConfBaseException) as exc:
            raise UsageError(f"hydra.sweep.dir: cannot resolve {sweep_dir!r}: {_one_line(exc)}") from None
        finally:
            HydraConfig.instance().cfg = before
    chdir = (raw.get("job") or {}).get("chdir")
    if chdir not in (None, True, False):
        raise UsageError(f"hydra.job.chdir: {chdir!r} is not true or false")
    params = OmegaConf.select(node, "sweeper.params", default=None)
    if params is not None and not isinstance(params, DictConfig):
        raise UsageError("hydra.sweeper.params: expected a mapping of key: values (e.g. model.lr: 0.1,0.01)")
    # As Hydra's BasicSweeper reads them: each `key: value` is the override text key=value.
    lines = [f"{k!s}={v}" for k, v in params.items()] if params is not None else []
    with open_dict(cfg):
        del cfg["hydra"]
    return HydraSettings(sweep_dir=placed, chdir=bool(chdir), multirun_yaml=multirun), parse_overrides(lines)


def _sweeps(block: list[Override], params: list[Override], cli: list[Override]) -> list[Override]:
    """The sweeps in Hydra's order: the config's (its `sweep:` block, then hydra.sweeper.params),
    each replaced in its place by the command line's override of the same key (a fixed value
    there ends its sweep), then the command line's other sweeps. A key in both the block and
    the params is refused."""
    both = sorted({o.key_or_group for o in block} & {o.key_or_group for o in params})
    if both:
        raise UsageError(
            f"sweep.{both[0]} and hydra.sweeper.params.{both[0]}: the key is swept in both places; keep one"
        )
    given = {o.key_or_group: o for o in cli}
    out: list[Override] = []
    for o in [*block, *params]:
        o = given.pop(o.key_or_group, o)
        if o.is_sweep_override() or o not in cli:
            out.append(o)
    return out + [o for o in given.values() if o.is_sweep_override()]


def load(config_dir: Path, config_name: str, overrides: Sequence[str]) -> Experiment:
    """Compose, split sweeps off, validate. Raises UsageError with a one-line message."""
    config_dir = config_dir.resolve()
    if not config_dir.is_dir():
        raise UsageError(f"config directory {config_dir} does not exist: pass -cd/--config-dir")
    parsed = parse_overrides(overrides)
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = _compose(config_dir, config_name, [b for b in base if b is not None], hydra=True)
    settings, params = _hydra_settings(cfg, config_dir)
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)

    # The config's own sweeps (its sweep: block and hydra.sweeper.params), then the command line:
    # a key given on the command line (swept or fixed) replaces the config's sweep of that key,
    # as in Hydra's --multirun.
    sweeps = _sweeps(_sweep_block(raw.get("sweep")), params, parsed)
    axes = tuple(_axis(o, config_dir) for o in sweeps)

    stages_raw = raw.get("stages")
    if isinstance(stages_raw, list):
        raise UsageError("stages: written as a list; write a mapping of stage name -> stage (train: {command: ...})")
    if stages_raw is not None and not isinstance(stages_raw, dict):
        raise UsageError("stages: expected a mapping of stage name -> stage (train: {command: ...})")
    if not stages_raw:
        raise UsageError("stages: the experiment defines no stages; add at least one under stages:")
    found = search_block.parse(raw.get("search"), config_dir)
    objs = objective.objectives(raw.get("objective"))
    if found is not None:
        _check_search(found, axes, objs)
    swept = {a.key for a in axes} | {p.name for p in (found.params if found else ())}
    stages = {
        str(name): parse_stage(str(name), _stage_fields(cfg, str(name), body, swept))
        for name, body in stages_raw.items()
    }
    name = raw.get("name") or config_name
    if not isinstance(name, str) or not NAME.match(unicodedata.normalize("NFC", name)) or not name.isascii():
        raise UsageError(f"name: {name!r} must be up to 64 letters, digits, _ and -, starting with a letter")
    exp = Experiment(
        name,
        config_dir,
        config_name,
        tuple(b for b in base if b),
        axes,
        stages,
        cfg,
        settings,
        objs,
        objective.tracking(raw.get("tracking")),
        found,
    )
    if found is not None:
        _check_search_stages(exp)
    return exp


def _check_search(found: Search, axes: Sequence[Axis], objs: Sequence[Objective]) -> None:
    if axes:
        key = axes[0].key
        raise UsageError(
            f"search: and a sweep of {key} (sweep:, hydra.sweeper.params or the command line) cannot be combined: "
            f"move {key} into search.params, or drop search:"
        )
    if not objs:
        raise UsageError("search: needs an objective: add objective: {metric: NAME, mode: min} (or max)")
    if found.pruner not in (None, "nop") and len(objs) > 1:
        raise UsageError(
            "search.pruner: Optuna prunes single-objective studies only: drop the pruner or keep one objective"
        )


def _check_search_stages(exp: Experiment) -> None:
    assert exp.search is not None
    per_trial = [s.name for s in exp.stages.values() if s.per_trial]
    if not per_trial:
        raise UsageError("search: no stage is per_trial: a trial needs at least one (per_trial: true)")
    stage = exp.search.prune_stage
    if stage is not None and stage not in per_trial:
        raise UsageError(
            f"search.prune_stage: {stage!r} is not a per_trial stage (per_trial stages: {', '.join(per_trial)})"
        )


# Resolvers whose values exist only in the job: at plan time each gives its default, or this.
JOB_TIME_RESOLVERS = ("oc.env",)
JOB_TIME_PLACEHOLDER = "0"


@contextlib.contextmanager
def job_time_resolvers() -> Iterator[None]:
    """While planning, `${oc.env:...}` is left for the job: it resolves to its default (or a
    placeholder), never to the launching shell's environment, so that
    `hydra.run.dir=${oc.env:SLURMFLOW_TRIAL_DIR}` plans and the job gets its own value.
    `${hydra:...}` exists only inside a Hydra app: a stage command using it is refused here
    (an app stage's overrides pass it to the app as written)."""
    from omegaconf.basecontainer import BaseContainer

    saved = {name: BaseContainer._resolvers.get(name) for name in (*JOB_TIME_RESOLVERS, "hydra")}

    def later(*args: Any) -> Any:
        return args[1] if len(args) > 1 and args[1] is not None else JOB_TIME_PLACEHOLDER

    def app_only(*args: Any) -> Any:
        raise ValueError(
            "${hydra:...} is known only to a Hydra app: pass it in an app stage's overrides, "
            "or use the job's $SLURMFLOW_* variables"
        )

    try:
        for name in JOB_TIME_RESOLVERS:
            OmegaConf.register_new_resolver(name, later, replace=True, use_cache=False)
        OmegaConf.register_new_resolver("hydra", app_only, replace=True, use_cache=False)
        yield
    finally:
        for name, resolver in saved.items():
            if resolver is None:
                BaseContainer._resolvers.pop(name, None)
            else:
                BaseContainer._resolvers[name] = resolver


def validate_trials(exp: Experiment, representatives: Sequence[Sequence[str]]) -> None:
    """Compose one representative trial per distinct config-group choice and resolve every stage
    command in it: an unknown sweep key or a broken interpolation fails here, before submission.
    Job-time interpolations (`${oc.env:...}`, `${hydra:...}`) are left for the job."""
    with job_time_resolvers():
        _validate_trials(exp, representatives)


def _validate_trials(exp: Experiment, representatives: Sequence[Sequence[str]]) -> None:
    group_keys = {a.key for a in exp.axes if a.group}
    for overrides in representatives:
        if any(o.split("=", 1)[0].lstrip("+~") in group_keys for o in overrides):
            cfg = _compose(exp.config_dir, exp.config_name, [*exp.base_overrides, *overrides])
        else:
            # Only values change: set them on the config composed at load (a compose costs ~0.1 s).
            cfg = _with_values(exp.config, overrides)
        for stage in exp.stages.values():
            if stage.command is not None or stage.argv is not None:
                field = "command" if stage.command is not None else "argv"
                try:
                    trialcfg.stage_argv(stage.command, stage.argv, cfg)
                except UsageError as exc:
                    raise UsageError(f"stages.{stage.name}.{field}: {exc}") from None
            elif stage.app is not None:
                try:
                    appargs.app_argv(stage.app, stage.app_overrides, cfg, "/", "python")
                except UsageError as exc:
                    raise UsageError(f"stages.{stage.name}.overrides: {exc}") from None


_ABSENT = object()


def _with_values(base: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The base config with `key=value` overrides applied, checked as Hydra would: a key must exist
    unless added with `+`; values are parsed by Hydra's grammar."""
    cfg = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    assert isinstance(cfg, DictConfig)
    for ov in parse_overrides(overrides):
        key = ov.key_or_group
        if not ov.is_add() and OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            raise UsageError(f"sweep {key}: no such key in the config; fix the name, or add it with +{key}=...")
        OmegaConf.update(cfg, key, ov.value(), force_add=True)
    return cfg


def trial_config(exp_dir: Path, config_name: str, overrides: Sequence[str]) -> DictConfig:
    """A trial's config, composed from a snapshot of the config directory (in the job)."""
    return _compose(exp_dir, config_name, overrides)


def to_yaml(cfg: DictConfig | ListConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=False)
