"""A `search:` space as Optuna takes it (distributions, a grid, the sampler and the pruner), and a
proposed value back as the Hydra override a trial is composed with.

What advances a study (the monitor, a new process every tick) and what reads a run must not pay
for Hydra, so this package reads slurmflow's model types only and never imports Hydra or
OmegaConf; experiment/search.py reads the YAML. Optuna is an extra (`slurmflow[search]`) and costs
about half a second to import, so it is imported inside the functions that build its objects:
importing this module stays cheap, and a run without a search never loads Optuna.

Each SearchParam is one Optuna distribution: float -> FloatDistribution (log, or a step),
int -> IntDistribution (log, or a step), categorical (a config group's options too) ->
CategoricalDistribution. Bounds are inclusive, as Optuna's are.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import math
import re
import warnings
from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from slurmflow.errors import UsageError
from slurmflow.model import Search, SearchParam

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler

__all__ = [
    "GRID_MAX",
    "MISSING",
    "PRUNERS",
    "SAMPLERS",
    "check",
    "distribution",
    "distributions",
    "from_json",
    "grid",
    "grid_size",
    "override",
    "pruner",
    "sampler",
    "to_json",
]

T = TypeVar("T")
Choice = str | int | float | bool | None  # a categorical value: what Optuna stores and JSON writes

MISSING = "search: needs Optuna: pip install 'slurmflow[search]'"
SAMPLERS = ("tpe", "cmaes", "random", "grid", "qmc")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "nop")
# Optuna imports these packages only when the sampler first samples, which would be in the
# monitor after the launch: checked before anything is submitted instead.
_NEEDS = {"cmaes": ("cmaes", "pip install cmaes"), "qmc": ("scipy", "pip install scipy")}
# Optuna's GridSampler lists every combination of values when it is made (about 100 bytes each),
# and it is made again at every monitor tick.
GRID_MAX = 100_000
# Keyword arguments that take Python objects (callables, samplers, trials): no YAML value is one.
_OBJECT_ONLY = re.compile(r"Callable|Sampler|FrozenTrial|ndarray")
# What slurmflow passes itself, with what to write instead.
_OURS = {"seed": "set search.seed instead", "search_space": "the grid is made of search.params: remove it"}
# A string Hydra's override grammar reads back unquoted as that same string: an identifier-like
# name (group options, `adam`); words Hydra reads as another type are quoted.
_BARE = re.compile(r"[A-Za-z_][\w\-./]*", re.ASCII)
_HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}


def _require() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UsageError(MISSING) from None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# --- launch.json: the search as the monitor reads it back -------------------------------------


def to_json(s: Search) -> dict[str, Any]:
    """The search as JSON data (launch.json), read back exactly by from_json."""
    doc = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
    doc["params"] = [_param_json(p) for p in s.params]
    doc["sampler_options"] = dict(s.sampler_options)
    doc["pruner_options"] = dict(s.pruner_options)
    return doc


def _param_json(p: SearchParam) -> dict[str, Any]:
    doc = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    doc["choices"] = list(p.choices)
    return doc


def from_json(doc: Mapping[str, Any]) -> Search:
    """A search written by to_json. Keys this version does not know are skipped (a run written by
    a later slurmflow stays readable); a missing optional key takes its default."""
    known = {f.name for f in dataclasses.fields(Search)}
    given = {k: v for k, v in doc.items() if k in known}
    given["params"] = tuple(_param_from_json(p) for p in doc["params"])
    given["sampler_options"] = dict(doc.get("sampler_options") or {})
    given["pruner_options"] = dict(doc.get("pruner_options") or {})
    return Search(**given)


def _param_from_json(doc: Mapping[str, Any]) -> SearchParam:
    known = {f.name for f in dataclasses.fields(SearchParam)}
    given = {k: v for k, v in doc.items() if k in known}
    given["choices"] = tuple(doc.get("choices") or ())
    return SearchParam(**given)


# --- Optuna's view of the space ----------------------------------------------------------------


def _bounds(p: SearchParam) -> tuple[float, float]:
    if p.low is None or p.high is None:
        raise ValueError(f"search.params.{p.name}: a {p.kind} param without bounds")
    return p.low, p.high


def distribution(p: SearchParam) -> BaseDistribution:
    """The param as an Optuna distribution."""
    _require()
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind == "categorical":
        return CategoricalDistribution(p.choices)
    low, high = _bounds(p)
    if p.kind == "int":
        return IntDistribution(int(low), int(high), log=p.log, step=int(p.step or 1))
    if p.kind == "float":
        return FloatDistribution(float(low), float(high), log=p.log, step=None if p.step is None else float(p.step))
    raise ValueError(f"search.params.{p.name}: unknown kind {p.kind!r}")


def distributions(s: Search) -> dict[str, BaseDistribution]:
    """Every param's distribution, by config key, in the order the params were written."""
    return {p.name: distribution(p) for p in s.params}


# --- a proposed value as a trial's override ----------------------------------------------------


def override(p: SearchParam, value: object) -> str:
    """`key=value` that Hydra's override parser reads back as exactly `value`, typed as the param
    is: a float stays a float (`1.0`, never `1`), a string that Hydra would read as a number, a
    boolean or null, or that holds spaces, commas, quotes or `${`, is quoted. The text is Hydra's,
    not a shell's: quote it again for a shell."""
    return f"{p.name}={_value_text(p, value)}"


def _value_text(p: SearchParam, value: object) -> str:
    if p.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"search.params.{p.name}: {value!r} is not a number")
        return _float_text(float(value))
    if p.kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise ValueError(f"search.params.{p.name}: {value!r} is not a whole number")
        return str(int(value))
    return _scalar_text(value)


def _float_text(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)  # the shortest text that reads back as the same float


def _scalar_text(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        return _string_text(value)
    raise ValueError(f"{value!r} is not a categorical value (a string, number, true/false or null)")


def _string_text(text: str) -> str:
    if _BARE.fullmatch(text) and text.lower() not in _HYDRA_WORDS:
        return text
    # Hydra's quoted strings: a backslash escapes a quote, and the backslashes before a quote (or
    # before the closing quote) are doubled; every other backslash is itself.
    body = re.sub(r"(\\*)('|\Z)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text)
    return f"'{body}'"


# --- samplers and pruners ----------------------------------------------------------------------


def _grid_count(p: SearchParam) -> int:
    if p.kind == "categorical":
        return len(p.choices)
    low, high = _bounds(p)
    if p.kind == "float" and p.step is None:
        raise UsageError(
            f"search.params.{p.name}: the grid sampler lists values, and a float interval has none to list: "
            "write range(low, stop, step) or choice(...), or use another sampler"
        )
    step = Decimal(repr(p.step or 1))
    return int(((Decimal(repr(high)) - Decimal(repr(low))) / step).to_integral_value(ROUND_FLOOR)) + 1


def _grid_values(p: SearchParam) -> list[Choice]:
    if p.kind == "categorical":
        return list(p.choices)
    low, _ = _bounds(p)
    n = _grid_count(p)
    if p.kind == "int":
        step = int(p.step or 1)
        return [int(low) + i * step for i in range(n)]
    # Decimal steps give the values as written (0.3, never 0.30000000000000004).
    start, step_d = Decimal(repr(float(low))), Decimal(repr(float(p.step or 1)))
    return [float(start + i * step_d) for i in range(n)]


def grid(s: Search) -> dict[str, list[Choice]]:
    """The values of each param for Optuna's GridSampler: choices as they are, ints from low to
    high by their step, floats with a step likewise; a float interval cannot be listed."""
    counts = {p.name: _grid_count(p) for p in s.params}
    size = math.prod(counts.values())
    if size > GRID_MAX:
        raise UsageError(
            f"search.sampler: grid: the params make {size:,} points, more than the {GRID_MAX:,} Optuna's GridSampler "
            "holds well: narrow them, or use tpe or random"
        )
    return {p.name: _grid_values(p) for p in s.params}


def grid_size(s: Search) -> int:
    """How many points the grid sampler would visit (checked against GRID_MAX by grid())."""
    return math.prod(len(v) for v in grid(s).values())


def _kwargs(
    cls: type[Any], name: str, options: Mapping[str, object], where: str, ours: Mapping[str, str]
) -> dict[str, Any]:
    """The options as keyword arguments of Optuna's class, checked against its signature: an
    unknown name fails here, in one line, not inside Optuna at the monitor's first tick."""
    params = inspect.signature(cls).parameters
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    takes = [n for n, p in params.items() if p.kind in kinds and n not in ours]
    for key in options:
        if key in ours:
            raise UsageError(f"{where}.{key}: {ours[key]}")
        if key not in takes:
            known = ", ".join(takes) or "none"
            raise UsageError(
                f"{where}.{key}: Optuna's {cls.__name__} takes no option {key!r} (it takes: {known}): "
                "remove it or fix its name"
            )
        annotation = str(params[key].annotation)
        if _OBJECT_ONLY.search(annotation):
            raise UsageError(
                f"{where}.{key}: {cls.__name__} takes a Python object there, which YAML cannot write: remove it"
            )
        wanted = _plain_types(annotation)
        if wanted is not None and not _is_one_of(options[key], wanted):
            raise UsageError(f"{where}.{key}: {cls.__name__} takes {annotation} there (got {options[key]!r})")
    missing = [n for n in takes if params[n].default is inspect.Parameter.empty and n not in options]
    if missing:
        raise UsageError(f"{where}: {name} needs {missing[0]}: write {{name: {name}, {missing[0]}: ...}}")
    return dict(options)


_PLAIN = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}


def _plain_types(annotation: str) -> set[str] | None:
    """The names of an annotation such as 'int', 'float | None' or 'str | int'; None when it has
    any other type (those Optuna checks itself)."""
    names = {part.strip() for part in annotation.split("|")}
    return names if names <= set(_PLAIN) else None


def _is_one_of(value: object, names: set[str]) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never to an option taking a count
        return "bool" in names
    if isinstance(value, int) and "float" in names:
        return True
    return any(type(value) is _PLAIN[n] for n in names)


def _build(cls: type[T], kwargs: Mapping[str, Any], where: str) -> T:
    from optuna.exceptions import ExperimentalWarning

    try:
        with warnings.catch_warnings():
            # About Optuna's API changing, not the study's behaviour: noise in every monitor tick.
            warnings.simplefilter("ignore", ExperimentalWarning)
            return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {_one_line(exc)}") from None


def sampler(s: Search, n_objectives: int = 1) -> BaseSampler:
    """Optuna's sampler of the search, seeded with search.seed, its options as keyword arguments."""
    _require()
    import optuna.samplers as samplers

    classes: dict[str, type[BaseSampler]] = {
        "tpe": samplers.TPESampler,
        "cmaes": samplers.CmaEsSampler,
        "random": samplers.RandomSampler,
        "grid": samplers.GridSampler,
        "qmc": samplers.QMCSampler,
    }
    cls = classes.get(s.sampler)
    if cls is None:
        raise UsageError(f"search.sampler: unknown sampler {s.sampler!r}: use one of {', '.join(SAMPLERS)}")
    if s.sampler == "cmaes" and n_objectives > 1:
        raise UsageError(
            f"search.sampler: cmaes optimises one objective and the experiment has {n_objectives}: "
            "use tpe, random, qmc or grid"
        )
    package = _NEEDS.get(s.sampler)
    if package is not None and importlib.util.find_spec(package[0]) is None:
        raise UsageError(f"search.sampler: {s.sampler} needs the {package[0]} package: {package[1]}")
    kwargs = _kwargs(cls, s.sampler, s.sampler_options, "search.sampler", _OURS)
    if s.sampler == "grid":
        kwargs["search_space"] = grid(s)
    elif s.sampler == "tpe" and s.batch > 1:
        # Trials in flight have no value yet: without the lie TPE proposes the same point for all
        # of a batch. Optuna 5 defaults to it; Optuna 4 did not.
        kwargs.setdefault("constant_liar", True)
    if s.seed is not None:
        kwargs["seed"] = s.seed
    return _build(cls, kwargs, "search.sampler")


def pruner(s: Search) -> BasePruner:
    """Optuna's pruner of the search (NopPruner when there is none), its options as keyword arguments."""
    _require()
    import optuna.pruners as pruners

    classes: dict[str, type[BasePruner]] = {
        "median": pruners.MedianPruner,
        "percentile": pruners.PercentilePruner,
        "successive_halving": pruners.SuccessiveHalvingPruner,
        "hyperband": pruners.HyperbandPruner,
        "nop": pruners.NopPruner,
    }
    if s.pruner is None:
        return pruners.NopPruner()
    cls = classes.get(s.pruner)
    if cls is None:
        raise UsageError(f"search.pruner: unknown pruner {s.pruner!r}: use one of {', '.join(PRUNERS)}, or null")
    return _build(cls, _kwargs(cls, s.pruner, s.pruner_options, "search.pruner", {}), "search.pruner")


def check(s: Search, n_objectives: int | None = None) -> None:
    """Raise the UsageError that running the study would meet: every distribution, the sampler
    and the pruner are made once. `n_objectives` None: not known yet (the objectives are checked
    against the sampler and pruner when they are)."""
    for p in s.params:
        try:
            distribution(p)
        except ValueError as exc:
            raise UsageError(f"search.params.{p.name}: {_one_line(exc)}") from None
    sampler(s, n_objectives or 1)
    pruner(s)
    if (n_objectives or 1) > 1 and s.pruner not in (None, "nop"):
        raise UsageError(
            f"search.pruner: Optuna prunes single-objective studies only, and the experiment has {n_objectives} "
            "objectives: remove the pruner (or write pruner: nop), or keep one objective"
        )
