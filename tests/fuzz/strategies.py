"""Generated experiments, command lines and quota files: valid ones, each carrying what a correct
slurmflow must make of it, and mutations of them, each carrying the verdict it deserves.

A case is data only (file contents, overrides, options); tests/fuzz/conftest.py writes it into a
fresh directory and runs the CLI on it. Three tokens in a case are replaced when it is written:
`ROOTTOKEN` by that directory, `PKGTOKEN` by a package name never imported before in this process
(a stage's callable names it; importing it leaves a marker file), `CFGTOKEN` by the config
directory.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, TypeVar

import yaml
from hypothesis import strategies as st

T = TypeVar("T")
ROOT = "ROOTTOKEN"
PKG = "PKGTOKEN"
CFG = "CFGTOKEN"
MARKER = "imported-user-code"  # written (in the case's directory) when the user package is imported


class Verdict(Enum):
    PLAN = "plan"  # must be accepted (exit 0) and planned as the intent says
    REFUSE = "refuse"  # must be refused: exit 2, one line naming the problem
    EITHER = "either"  # refused, or accepted and planned as the intent says
    ANY = "any"  # refused or accepted, no claim on the plan (never a traceback, though)


@dataclass(frozen=True)
class StageIntent:
    """What a stage must be planned as."""

    per_trial: bool = False
    singleton: bool = False
    requeue: bool | None = None
    max_parallel: int | None = None
    gpus: int = 0
    hours: float | None = None  # the time limit in hours; None: no limit, so GPU-hours unknown


@dataclass(frozen=True)
class Intent:
    n_trials: int
    stages: Mapping[str, StageIntent]
    # (stage, path in the plan's stage record, value): an accepted mutation must read as this,
    # type included (False, not 'false').
    echo: tuple[tuple[str, tuple[str, ...], Any], ...] = ()
    max_array_size: int | None = None


@dataclass(frozen=True)
class Case:
    files: Mapping[str, str | bytes]  # path under the case's directory -> content
    intent: Intent
    verdict: Verdict
    what: str  # the mutation, in words
    overrides: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # after the defaults, so they win (argparse keeps the last)
    names: tuple[str, ...] = ()  # a refusal's message must mention one of these (case-insensitive)
    forbid: tuple[str, ...] = ()  # ... and none of these (a message that misstates the problem)


def pick(draw: st.DrawFn, items: Sequence[T]) -> T:
    """One of `items`, uniformly. `sampled_from` leans on its first items (the simplest, to it):
    most examples would go to the first entry of each catalogue below."""
    return draw(st.randoms(use_true_random=False)).choice(items)


def chooser(draw: st.DrawFn) -> random.Random:
    """The choices a mutation makes, drawn BEFORE the experiment it mutates: Hypothesis gives
    its simplest value to every draw past a size budget, and a generated experiment is large, so
    choices drawn after it would nearly always be the first of each list."""
    return random.Random(draw(st.integers(0, 2**64 - 1)))  # noqa: S311 - reproducible choices, not secrets


# --- valid experiments ---------------------------------------------------------------------------

PARAMS: dict[str, Any] = {"seed": 0, "tag": "base", "model": {"lr": 0.1, "depth": 3}, "unused": 1}
GROUP = {"opt/sgd.yaml": {"lr": 0.1}, "opt/adam.yaml": {"lr": 0.001}, "opt/rms.yaml": {"lr": 0.01}}
REFS = {"seed": "${seed}", "tag": "${tag}", "model.lr": "${model.lr}", "model.depth": "${model.depth}"}
# Sweep values a list in the sweep block may hold: commas, spaces, quotes, brackets and non-ASCII
# letters are all plain text in a YAML list, and each list item is one trial.
TEXT = st.text(alphabet="abxyz019 ,.-_:'()[]éßλ€", min_size=1, max_size=6).map(str.strip).filter(bool)
# The same, in letters and digits: the base that other mutations start from, so that a failure
# they find is theirs, not the sweep block's.
PLAIN_TEXT = st.text(alphabet="abxyz019", min_size=1, max_size=6)
COMMA_TEXT = st.from_regex(r"[a-c]{1,3}([, ][a-c]{1,3})?", fullmatch=True)  # ["a,b", "c d"]


@dataclass(frozen=True)
class Draft:
    """A valid experiment as data, and what it means."""

    doc: dict[str, Any]
    groups: bool
    axes: Mapping[str, int]  # swept key -> number of values
    stages: Mapping[str, StageIntent]
    uses_package: bool

    def files(self, doc: Mapping[str, Any] | None = None) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {"configs/config.yaml": dump(self.doc if doc is None else doc)}
        if self.groups:
            out.update({f"configs/{k}": dump(v) for k, v in GROUP.items()})
        if self.uses_package:
            out.update(package_files())
        return out

    def intent(self, **changes: Any) -> Intent:
        return Intent(n_trials=math.prod(self.axes.values()), stages=self.stages, **changes)

    def case(self, verdict: Verdict = Verdict.PLAN, what: str = "valid", **fields: Any) -> Case:
        return Case(files=self.files(), intent=self.intent(), verdict=verdict, what=what, **fields)


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=1 << 16)


def package_files(*, dotted: bool = False) -> dict[str, str | bytes]:
    """The user code a callable stage names: module PKGTOKEN (`PKGTOKEN:main`), or package
    PKGTOKEN with module jobs (`PKGTOKEN.jobs:main`). Importing it writes the marker file."""
    marker = f"open({f'{ROOT}/{MARKER}'!r}, 'w').close()\n"
    main = "def main(cfg):\n    return cfg\n"
    if dotted:
        return {f"{PKG}/__init__.py": marker, f"{PKG}/jobs.py": main}
    return {f"{PKG}.py": marker + main}


@st.composite
def time_limits(draw: st.DrawFn) -> tuple[Any, float]:
    """A valid time limit as a user writes it, and its hours (read as man sbatch says)."""
    n = draw(st.integers(1, 600))
    m, s, h, d = draw(st.integers(0, 59)), draw(st.integers(0, 59)), draw(st.integers(0, 23)), draw(st.integers(1, 9))
    forms: list[tuple[Any, float]] = [
        (n, n / 60),  # a bare number is minutes
        (str(n), n / 60),
        (f"{n}m", n / 60),
        (f"{n} min", n / 60),
        (f"{n}M", n / 60),
        (f"{n}s", n / 3600),
        (f"{n}h", float(n)),
        (f"{d}d", 24.0 * d),
        (f"{h}.5h", h + 0.5),
        (f"{n}:{s:02d}", n / 60 + s / 3600),  # M:S
        (f"{h}:{m:02d}:{s:02d}", h + m / 60 + s / 3600) if (h or m or s) else (f"{n}:00:00", float(n)),
        (f"{d}-{h}", 24.0 * d + h),  # D-H
        (f"{d}-{h}:{m:02d}", 24.0 * d + h + m / 60),
        (f"{d}-{h:02d}:{m:02d}:{s:02d}", 24.0 * d + h + m / 60 + s / 3600),
    ]
    value, hours = pick(draw, forms)
    return value, hours


@st.composite
def sweep_values(draw: st.DrawFn, key: str, plain: bool) -> tuple[Any, int]:
    """A sweep-block value for `key` and how many trials it makes."""
    if key == "tag":
        texts = PLAIN_TEXT if plain else pick(draw, [TEXT, COMMA_TEXT])
        values = draw(st.lists(texts, min_size=1, max_size=3, unique=True))
        return values, len(values)
    if key == "model.lr":
        floats = draw(
            st.lists(st.sampled_from([0.1, 0.3, 0.01, 0.001, 3e-4, 1.5]), min_size=1, max_size=3, unique=True)
        )
        form = pick(draw, ["list", "text"])
        return (floats if form == "list" else ",".join(map(str, floats))), len(floats)
    ints = draw(st.lists(st.integers(0, 99), min_size=1, max_size=3, unique=True))
    form = pick(draw, ["list", "text", "spaced", "range"])
    if form == "range":
        start = draw(st.integers(0, 50))
        return f"range({start},{start + len(ints)})", len(ints)
    if form == "list":
        return ints, len(ints)
    return (", " if form == "spaced" else ",").join(map(str, ints)), len(ints)


@st.composite
def resources(draw: st.DrawFn, gpus: int, hours_out: list[float | None], plain: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if gpus:
        out["gpus"] = gpus
    if draw(st.booleans()):
        value, hours = draw(time_limits())
        out["time"] = value
        hours_out[0] = hours
    optional: dict[str, st.SearchStrategy[Any]] = {
        "partition": st.sampled_from(["cpu", "gpu", "cpu,gpu", "batch.q"]),
        "account": st.just("lab-a"),
        "qos": st.sampled_from(["normal", "high"]),
        "cpus": st.integers(1, 4),
        "mem": st.sampled_from(["512M", "4G", "1T", "2048", "16g"]),
        # Slurm's feature expressions: & and | are its operators (man sbatch, --constraint).
        "constraint": st.just("a100") if plain else st.sampled_from(["a100", "a100|h100", "[rack1&rack2]"]),
        "extra": st.sampled_from([["--nice=10"], ["--exclusive"], ["--mail-type=END", "--nice=5"]]),
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=4)):
        out[name] = draw(optional[name])
    return out


@st.composite
def stage_body(
    draw: st.DrawFn, name: str, earlier: Mapping[str, StageIntent], refs: Sequence[str], plain: bool
) -> tuple[dict[str, Any], StageIntent, bool]:
    """One valid stage, its intent, and whether it names the user package."""
    per_trial = draw(st.booleans())
    body: dict[str, Any] = {}
    uses_package = draw(st.integers(0, 5)) == 0
    if uses_package:
        body["callable"] = f"{PKG}:main"
    else:
        words = ["python", "run.py", *(f"--{r.replace('.', '-')} {REFS.get(r, '${' + r + '}')}" for r in refs)]
        body["command"] = " ".join(words)
    parents = draw(st.lists(st.sampled_from(sorted(earlier)), unique=True, max_size=2)) if earlier else []
    kinds: dict[str, list[str]] = {}
    for parent in parents:
        choices = ["after_ok", "after_any", "after_not_ok"]
        if per_trial and earlier[parent].per_trial:
            choices.append("after_corr")
        kind = pick(draw, choices)
        if kind == "after_not_ok":  # a stage split into arrays takes after_not_ok only on its own
            kinds = {kind: [parent]}
            break
        kinds.setdefault(kind, []).append(parent)
    for kind, names in kinds.items():
        body[kind] = names[0] if len(names) == 1 and draw(st.booleans()) else names
    if per_trial or draw(st.booleans()):
        body["per_trial"] = per_trial
    gpus = draw(st.integers(0, 2))
    hours: list[float | None] = [None]
    res = draw(resources(gpus, hours, plain))
    if res:
        body["resources"] = res
    singleton = draw(st.booleans()) and draw(st.booleans())
    if singleton:
        body["singleton"] = True
    requeue = draw(st.none() | st.booleans())
    if requeue is not None:
        body["requeue"] = requeue
    max_parallel = draw(st.none() | st.integers(1, 5)) if per_trial else None
    if max_parallel is not None:
        body["max_parallel"] = max_parallel
    if draw(st.booleans()):
        body["retry"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "infra": st.integers(0, 3),
                    "exit_codes": st.sampled_from([[75], [3, 75]]),
                    "exit_retries": st.integers(0, 2),
                    "timeouts": st.integers(0, 1),
                    "exclude_failed_node": st.booleans(),
                    "oom_mem_factor": st.sampled_from([2, 1.5]),
                    "oom_mem_cap": st.sampled_from(["64G", "512G"]),
                },
            )
        )
    if draw(st.booleans()) and draw(st.booleans()):
        body["checkpoint"] = draw(
            st.just(True)
            | st.fixed_dictionaries(
                {},
                optional={
                    "signal": st.sampled_from(["USR1", "SIGUSR2", "TERM"]),
                    "seconds": st.integers(0, 300),
                    "grace": st.integers(0, 120),
                    "max_restarts": st.integers(0, 5),
                },
            )
        )
    if gpus and draw(st.booleans()):
        body["gpu_sampling"] = pick(draw, [False, {"interval": "1s"}, {"interval": 2, "flush": "10s"}])
    if gpus and draw(st.booleans()):
        body["gpu_idle"] = draw(
            st.fixed_dictionaries(
                {"below": st.sampled_from([5, 12.5])},
                optional={"for": st.sampled_from(["10m", "90s", 600]), "action": st.sampled_from(["warn", "cancel"])},
            )
        )
    intent = StageIntent(per_trial, singleton, requeue, max_parallel, gpus, hours[0])
    return body, intent, uses_package


STAGE_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,6}", fullmatch=True)


@st.composite
def drafts(draw: st.DrawFn, *, plain: bool = False) -> Draft:
    groups = draw(st.booleans()) and draw(st.booleans())
    doc: dict[str, Any] = {}
    if groups:
        doc["defaults"] = [{"opt": "sgd"}, "_self_"]
    doc["name"] = draw(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,10}", fullmatch=True))
    axes: dict[str, int] = {}
    sweep: dict[str, Any] = {}
    keys = ["seed", "tag", "model.lr", "model.depth", *(["opt"] if groups else [])]
    for key in draw(st.lists(st.sampled_from(keys), unique=True, max_size=3)):
        if key == "opt":
            options = draw(st.lists(st.sampled_from(["sgd", "adam", "rms"]), min_size=1, unique=True))
            sweep[key], axes[key] = ",".join(options), len(options)
        else:
            sweep[key], axes[key] = draw(sweep_values(key, plain))
    if sweep:
        doc["sweep"] = sweep
    doc.update(copy.deepcopy(PARAMS))
    names = draw(st.lists(STAGE_NAME, min_size=1, max_size=4, unique_by=str.lower))
    stages: dict[str, Any] = {}
    intents: dict[str, StageIntent] = {}
    uses_package = False
    refs_pool = [*REFS, *(["opt.lr"] if groups else [])]
    for name in names:
        refs = draw(st.lists(st.sampled_from(refs_pool), unique=True, max_size=3))
        body, intent, pkg = draw(stage_body(name, intents, refs, plain))
        stages[name], intents[name] = body, intent
        uses_package = uses_package or pkg
    doc["stages"] = stages
    return Draft(doc, groups, axes, intents, uses_package)


# --- valid command lines -------------------------------------------------------------------------


def valid_overrides(rnd: random.Random, draft: Draft) -> tuple[tuple[str, ...], dict[str, int]]:
    """Overrides a Hydra user may give, and the sweep axes they leave (command line replaces the
    config's sweep of a key, as in Hydra's --multirun)."""
    axes = dict(draft.axes)
    out: list[str] = []
    choices = [
        "seed",
        "tag",
        "model.lr",
        "model.depth",
        "+extra",
        "+newkey",
        "~unused",
        *(["opt"] if draft.groups else []),
    ]
    for key in rnd.sample(choices, rnd.randint(0, 3)):
        if key == "~unused":
            out.append(key)
            continue
        if key == "+extra":
            out.append(f"+extra={rnd.choice(['1', 'x', '[1,2]', '{a: 1}'])}")
            continue
        if key == "+newkey":  # a sweep over a key the config does not have, added with +
            n = rnd.randint(1, 3)
            out.append("+newkey=" + ",".join(f"v{i}" for i in range(n)))
            axes["newkey"] = n
            continue
        if key == "opt":
            form = rnd.choice(["adam", "sgd,rms", "glob(*)"])
            out.append(f"opt={form}")
            axes.pop("opt", None)
            if form != "adam":
                axes["opt"] = {"sgd,rms": 2, "glob(*)": 3}[form]
            continue
        axes.pop(key, None)
        if key == "tag":
            form = rnd.choice(["fixed", "quoted", "choice"])
            if form == "fixed":
                out.append("tag=abc")
            elif form == "quoted":
                out.append("tag='é x'")
            else:
                out.append("tag=choice(a,b)")
                axes["tag"] = 2
            continue
        form = rnd.choice(["fixed", "list", "range"])
        if key == "model.lr":
            form = "list" if form == "range" else form
        if form == "fixed":
            out.append(f"{key}={rnd.randint(0, 9)}")
        elif form == "list":
            n = rnd.randint(2, 3)
            out.append(f"{key}=" + ",".join(str(i + 1) for i in range(n)))
            axes[key] = n
        else:
            n = rnd.randint(1, 3)
            out.append(f"{key}=range(1,{n + 1})")
            axes[key] = n
    return tuple(out), axes


@st.composite
def valid_cases(draw: st.DrawFn, *, plain: bool = False) -> Case:
    rnd = chooser(draw)
    draft = draw(drafts(plain=plain))
    overrides, axes = valid_overrides(rnd, draft)
    options: list[str] = []
    size = rnd.choice([None, 1, 2, 3, 4])
    if size is not None:
        options += ["--max-array-size", str(size)]
    if rnd.random() < 0.5:
        options += ["--local-gpus", str(rnd.randint(2, 4))]
    if rnd.random() < 0.5:
        options += ["--max-tasks", "100000"]
    intent = Intent(math.prod(axes.values()), draft.stages, max_array_size=size)
    return Case(draft.files(), intent, Verdict.PLAN, "valid", overrides=overrides, options=tuple(options))


# --- mutations of one field ----------------------------------------------------------------------

_UNSET = object()


@dataclass(frozen=True)
class Bad:
    value: Any
    verdict: Verdict
    meaning: Any = _UNSET  # with EITHER: what an accepting reader must take the value to mean


R, E, A = Verdict.REFUSE, Verdict.EITHER, Verdict.ANY
NAN, INF = float("nan"), float("inf")

BOOLS = [
    *(Bad(v, E, m) for v, m in [("false", False), ("true", True), ("False", False), ("TRUE", True)]),
    *(Bad(v, E, m) for v, m in [("0", False), ("1", True), (0, False), (1, True), ("no", False), ("yes", True)]),
    *(Bad(v, R) for v in ["maybe", "", 0.5, 2, -1, [True], {"x": 1}, [], NAN]),
    Bad(None, A),
]


def ints(low: int) -> list[Bad]:
    return [
        *(Bad(v, R) for v in [True, False, 1.5, low - 1, -(10**6), "two", [2], {"n": 2}, NAN, INF, "", "2 "]),
        Bad(2.0, E, 2),
        Bad("2", E, 2),
        Bad(10**30, A),
        Bad(None, A),
    ]


HOSTILE = ["cpu;rm -rf ~", "$(id)", "`id`", "a|b", "a&&b", "a>b", "cpu\n", "cpu\nx", "cpu\r", "cpu\0", "cpu gpu"]
SLURM_NAMES = [
    *(Bad(v, R) for v in [*HOSTILE, "gpü", "\u202ecpu", "cpu\t", ["cpu"], {"a": 1}, True, [], "a'b"]),
    *(Bad(v, A) for v in [5, None, "", "a" * 3000, "x.y-z_1"]),
]
MEMS = [
    *(Bad(v, R) for v in ["lots", "-1G", "1.5G", "\u0664G", "4G\n", "4 G", "G", "", [4], {"g": 4}, True, "4G;id", -5]),
    *(Bad(v, A) for v in [4096, None, "0", "4GB", "4g", 10**30]),
]
ZERO_TIMES = [0, "0", "0:00", "00:00:00", "0-0", "0-00:00:00", "0s", "0m", "0.0h", "UNLIMITED", "infinite"]
TIMES = [
    *(Bad(v, R) for v in ["half an hour", "-5m", "5:", ":30", "1-", "1.5", "30m\n", "\u0663\u0660m", "\u0663\u0660"]),
    *(Bad(v, R) for v in ["1e3m", "nanh", "", "1-2-3", True, [30], {"m": 30}, -5, 1.5, INF, NAN, "5m;id", "5:7:8:9"]),
    *(Bad(v, E, None) for v in ZERO_TIMES),  # zero is Slurm's "no limit": never 0 GPU-hours
    *(Bad(v, A) for v in [None, "99:99:99", "100000d", "30 minutes", "9" * 40]),
]
COMMANDS = [
    *(Bad(v, R) for v in ["", "   ", "python 'x", 'python "x', 5, ["python", "x"], {"a": 1}, True, None]),
    *(Bad(v, R) for v in ["echo ${nope_key}", "echo ${seed", "echo \0x", "echo ${model.nope}"]),
    *(Bad(v, A) for v in ["echo a; rm -rf ~", "echo $(id)", "echo `id`", "echo a\nb", "echo é ü 你好", "echo \\"]),
    *(Bad(v, A) for v in ["echo " + "x" * 5000, "echo ${oc.env:SLURMFLOW_FUZZ_UNSET}", "echo $HOME", "\techo\t"]),
    *(Bad(v, A) for v in ["echo ${seed}${tag}", "echo '${tag}'", "echo ${oc.select:nope,x}", "echo ${}"]),
]
CALLABLES = [
    *(Bad(v, R) for v in ["nomodule_xyz:f", "json", "json:", ":f", "a b:c", "json:dumps;id", 5, ["json:dumps"], True]),
    *(Bad(v, R) for v in ["json:dumps\n", "", None, "json:dumps:x", "json.:dumps"]),
    *(Bad(v, A) for v in ["json:dumps", "os.path:join", "json:no_such_function", f"{PKG}:main", f"{PKG}:nope"]),
]
TOP_NAMES = [
    *(Bad(v, R) for v in ["demo\n", "a b", "é", "a/b", "../x", "-x", "1abc", [1], {"a": 1}, True, "a;b", "a\0"]),
    *(Bad(v, A) for v in [None, "", 5, "a" * 300]),
]
COUNTS = [  # retry.exit_codes
    *(Bad(v, R) for v in [[0], [256], [-1], [True], ["75"], 75, [1.5], "75", {"a": 75}]),
    *(Bad(v, A) for v in [[], None, [75, 75]]),
]
FACTORS = [*(Bad(v, R) for v in [1, 0.5, 17, True, "2", NAN, INF, -2, [2]]), Bad(None, A)]
PERCENTS = [*(Bad(v, R) for v in [0, -1, 101, True, "5", NAN, INF, [5]]), Bad(None, A)]
DURATIONS = [
    *(Bad(v, R) for v in ["0s", 0, -1, "soon", True, NAN, "-5m", [1], "1s\n"]),
    *(Bad(v, A) for v in [None, INF]),
]
SIGNALS = [*(Bad(v, R) for v in ["KILL", "USR3", 10, True, ["USR1"], "", "USR1\n"]), Bad(None, A)]
CHOICE = {
    "action": [*(Bad(v, R) for v in ["kill", 5, True, ["warn"], "warn\n"]), Bad(None, A)],
    "gpus": [*(Bad(v, R) for v in ["some", 5, True, ["all"]]), Bad(None, A)],
}
EXTRAS = [
    *(Bad(v, R) for v in [["-J", "x"], ["--job-name=x"], ["--array=0-3"], ["--dependency=afterok:1"], ["--nice 10"]]),
    *(Bad(v, R) for v in [["--nice=10\n"], "--nice=10", [5], [{"a": 1}], ["nice=10"], ["--output=x"], ["--chdir=/"]]),
    *(Bad(v, R) for v in [["--hold"], ["-H"], ["--kill-on-invalid-dep=no"], [None], True]),
    *(Bad(v, A) for v in [[], None, ["--comment-x=a;b"], ["--wrap=id"]]),
]
CONTAINERS = [*(Bad(v, R) for v in [[1, 2], "x", 5, [], 1.5]), Bad(None, A), Bad({}, A)]


@dataclass(frozen=True)
class Field:
    path: tuple[str, ...]  # inside a stage's body
    values: Sequence[Bad]
    attr: str | None = None  # the StageIntent attribute it sets, else echoed from the plan record
    plan_path: tuple[str, ...] | None = None


STAGE_FIELDS = [
    Field(("per_trial",), BOOLS, "per_trial"),
    Field(("singleton",), BOOLS, "singleton"),
    Field(("requeue",), BOOLS, "requeue"),
    Field(("max_parallel",), ints(1), "max_parallel"),
    Field(("resources", "gpus"), ints(0), "gpus"),
    Field(("resources", "cpus"), ints(0), plan_path=("resources", "cpus")),
    Field(("resources", "partition"), SLURM_NAMES),
    Field(("resources", "qos"), SLURM_NAMES),
    Field(("resources", "account"), SLURM_NAMES),
    Field(("resources", "constraint"), SLURM_NAMES),
    Field(("resources", "mem"), MEMS),
    Field(("resources", "time"), TIMES, "hours"),
    Field(("resources", "extra"), EXTRAS),
    Field(("command",), COMMANDS),
    Field(("callable",), CALLABLES),
    Field(("retry", "infra"), ints(0), plan_path=("retry", "infra")),
    Field(("retry", "exit_retries"), ints(0), plan_path=("retry", "exit_retries")),
    Field(("retry", "timeouts"), ints(0), plan_path=("retry", "timeouts")),
    Field(("retry", "exclude_failed_node"), BOOLS, plan_path=("retry", "exclude_failed_node")),
    Field(("retry", "exit_codes"), COUNTS),
    Field(("retry", "oom_mem_factor"), FACTORS),
    Field(("retry", "oom_mem_cap"), MEMS),
    Field(("checkpoint", "seconds"), ints(0), plan_path=("checkpoint", "seconds")),
    Field(("checkpoint", "max_restarts"), ints(0), plan_path=("checkpoint", "max_restarts")),
    Field(("checkpoint", "signal"), SIGNALS),
    Field(("gpu_sampling", "interval"), DURATIONS),
    Field(("gpu_sampling", "enabled"), BOOLS, plan_path=("gpu", "enabled")),
    Field(("gpu_idle", "below"), PERCENTS),
    Field(("gpu_idle", "for"), DURATIONS),
    Field(("gpu_idle", "action"), CHOICE["action"]),
    Field(("gpu_idle", "gpus"), CHOICE["gpus"]),
    *(Field((c,), CONTAINERS) for c in ("resources", "retry", "gpu_idle")),
    Field(("checkpoint",), [*CONTAINERS[:-2], Bad("yes", R), Bad(None, A)]),
    Field(("gpu_sampling",), [*CONTAINERS[:-2], Bad("off", R), Bad(None, A)]),
]
_BODY_VALUES: list[Any] = [["python x"], "python x", None, 5, {}, True]
BODIES = [Bad(v, R) for v in _BODY_VALUES]

# Half of the mutations go to the inputs the issue names (a string where a bool goes, zero time
# limits, a trailing newline in a name, ...), so that a CI-sized run always tries them; the other
# half roam the whole catalogue.
FOCUS_SHARE = 0.5
_FOCUS_VALUES: list[tuple[tuple[str, ...], Any]] = [
    (("per_trial",), "false"),
    (("per_trial",), 0),
    (("requeue",), "false"),
    (("singleton",), "false"),
    (("resources", "time"), 0),
    (("resources", "time"), "0:00"),
    (("resources", "time"), "30m\n"),
    (("resources", "time"), "\u0663\u0660m"),
    (("resources", "mem"), "4G\n"),
    (("resources", "mem"), "\u0664G"),
    (("resources", "partition"), True),
    (("resources", "gpus"), True),
    (("max_parallel",), True),
    (("retry", "exit_codes"), [True]),
    (("gpu_idle", "for"), NAN),
    (("command",), "echo \0x"),
    (("callable",), "json:dumps\n"),
]


def _focus(path: tuple[str, ...], value: Any) -> tuple[Field, Bad]:
    spec = next(f for f in STAGE_FIELDS if f.path == path)
    return spec, next(b for b in spec.values if repr(b.value) == repr(value) and type(b.value) is type(value))


FOCUS = [_focus(path, value) for path, value in _FOCUS_VALUES]
FOCUS_OPTIONS = {("--max-array-size", "0"), ("--local-gpus", "-1"), ("--runs-dir", f"{ROOT}/occupied"), ("--hold",)}


def rename_stage(stages: dict[Any, Any], old: str, new: Any) -> None:
    """Rename a stage, and every dependency on it."""
    stages[new] = stages.pop(old)
    for other in stages.values():
        for k in ("after_ok", "after_any", "after_not_ok", "after_corr"):
            if other.get(k) == old or other.get(k) == [old]:
                other[k] = [new]
            elif isinstance(other.get(k), list):
                other[k] = [new if p == old else p for p in other[k]]


def put(doc: dict[str, Any], path: Sequence[str], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
        doc = doc[key]
    doc[path[-1]] = value


def hydra_value(value: Any) -> str | None:
    """The value in Hydra's override grammar, or None where the grammar cannot say it plainly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else repr(value)
    if isinstance(value, str):
        if any(c in value for c in "'\\\n\r\0\t") or len(value) > 100:
            return None
        return f"'{value}'"
    if isinstance(value, list):
        items = [hydra_value(v) for v in value]
        return None if any(i is None for i in items) else "[" + ",".join(i or "" for i in items) + "]"
    if isinstance(value, dict):
        pairs = [(k, hydra_value(v)) for k, v in value.items()]
        return None if any(v is None for _, v in pairs) else "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    return None


def _with_gpu(draft: Draft, doc: dict[str, Any], stage: str) -> Mapping[str, StageIntent]:
    """Make sure the stage asks for a GPU (so its time limit counts): the doc is edited in place."""
    intents = dict(draft.stages)
    if intents[stage].gpus == 0:
        put(doc["stages"][stage], ("resources", "gpus"), 1)
        intents[stage] = replace(intents[stage], gpus=1)
    return intents


def field_mutations(rnd: random.Random, draft: Draft) -> Case:
    """One stage field set to a wrong type, a hostile string or an out-of-range number; in the
    YAML, or on the command line as `++stages.NAME.FIELD=VALUE`."""
    stage = rnd.choice(sorted(draft.stages))
    if rnd.random() < FOCUS_SHARE:
        spec, bad = rnd.choice(FOCUS)
    else:
        spec = rnd.choice(STAGE_FIELDS)
        bad = rnd.choice(list(spec.values))
    doc = copy.deepcopy(draft.doc)
    intents: Mapping[str, StageIntent] = draft.stages
    if spec.path == ("resources", "time"):
        intents = _with_gpu(draft, doc, stage)
    body = doc["stages"][stage]
    if spec.path == ("command",):
        body.pop("callable", None)
    if spec.path == ("callable",):
        body.pop("command", None)
    if spec.path[0] == "gpu_idle" and len(spec.path) > 1:
        intents = _with_gpu(draft, doc, stage)
        body.setdefault("gpu_idle", {"below": 5})
        if not isinstance(body["gpu_idle"], dict):
            body["gpu_idle"] = {"below": 5}
    what = f"stages.{stage}.{'.'.join(spec.path)} = {bad.value!r}"
    overrides: tuple[str, ...] = ()
    text = hydra_value(bad.value)
    if text is not None and bad.value is not None and rnd.randint(0, 3) == 0:
        overrides = (f"++stages.{stage}.{'.'.join(spec.path)}={text}",)
        what += " (on the command line)"
    else:
        put(body, spec.path, bad.value)
    echo: tuple[tuple[str, tuple[str, ...], Any], ...] = ()
    if bad.verdict is Verdict.EITHER:
        if spec.attr is not None:
            intents = {**intents, stage: replace(intents[stage], **{spec.attr: bad.meaning})}
        elif spec.plan_path is not None:
            echo = ((stage, spec.plan_path, bad.meaning),)
    intent = Intent(math.prod(draft.axes.values()), intents, echo=echo)
    files = draft.files(doc)
    if isinstance(bad.value, str) and PKG in bad.value:
        files.update(package_files())
    names = (spec.path[-1],) if bad.verdict is Verdict.REFUSE else ()
    return Case(files, intent, bad.verdict, what, overrides=overrides, names=names)


def structure_mutations(rnd: random.Random, draft: Draft) -> Case:
    """Wrong shapes and broken references: stage bodies, stage names, dependencies, the stages
    and sweep blocks, unknown and missing fields."""
    doc = copy.deepcopy(draft.doc)
    stages: dict[Any, Any] = doc["stages"]
    names = sorted(stages)
    stage = rnd.choice(names)
    kind = rnd.choice(
        ["stages_list", "top_name", "rename"]
        if rnd.random() < FOCUS_SHARE
        else [
            "body",
            "rename",
            "unknown_parent",
            "self_dep",
            "cycle",
            "dep_type",
            "dup_dep",
            "corr_single",
            "both",
            "neither",
            "unknown_field",
            "stages_list",
            "stages_other",
            "top_unknown",
            "top_name",
            "no_stages",
        ]
    )
    n = math.prod(draft.axes.values())
    verdict, what = Verdict.REFUSE, kind
    names_out: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    dep = rnd.choice(["after_ok", "after_any", "after_not_ok"])
    if kind == "body":
        bad = rnd.choice(BODIES)
        stages[stage] = bad.value
        what, names_out = f"stages.{stage} = {bad.value!r}", (stage,)
    elif kind == "rename":
        new = rnd.choice(["a\n", "a b", "1a", "é", "a.b", "-a", "_a", "a;b", "", "a\0", "a/b", "a" * 300, 5, True])
        new = "a\n" if rnd.random() < FOCUS_SHARE else new
        rename_stage(stages, stage, new)
        verdict = Verdict.ANY if new == "a" * 300 else Verdict.REFUSE
        what, names_out = f"stage {stage!r} renamed {new!r}", ("stage",)
    elif kind == "unknown_parent":
        parent = rnd.choice(["nope", "Nope", f"{stage}_x", " " + stage, stage + "\n"])
        stages[stage][dep] = [parent]
        what, names_out = f"stages.{stage}.{dep} = [{parent!r}]", (dep,)
    elif kind == "self_dep":
        stages[stage][dep] = [stage]
        what, names_out = f"stages.{stage}.{dep} = [{stage!r}]", (stage,)
    elif kind == "cycle":
        other = rnd.choice(names)
        stages[stage]["after_any"] = [other]
        stages[other]["after_any"] = [stage]
        what, names_out = f"cycle {stage} <-> {other}", (stage,)
    elif kind == "dep_type":
        value = rnd.choice([[1], {"a": 1}, True, [["x"]], "", 5, [None]])
        stages[stage][dep] = value
        what, names_out = f"stages.{stage}.{dep} = {value!r}", (dep,)
    elif kind == "dup_dep":
        if len(names) < 2:
            return draft.case(Verdict.ANY, "no second stage to depend on twice")
        parent = next(p for p in names if p != stage)
        stages[stage].pop("after_not_ok", None)
        stages[stage]["after_any"] = [parent, parent]
        verdict, what = Verdict.ANY, f"stages.{stage}.after_any = [{parent!r}, {parent!r}]"
    elif kind == "corr_single":
        if len(names) < 2:
            return draft.case(Verdict.ANY, "no second stage for after_corr")
        parent = next(p for p in names if p != stage)
        for key in ("after_ok", "after_any", "after_not_ok", "after_corr"):
            stages[stage].pop(key, None)
        stages[stage]["after_corr"] = [parent]
        stages[stage]["per_trial"] = False
        what, names_out = f"stages.{stage}.after_corr on a stage that is not per_trial", ("after_corr",)
    elif kind == "both":
        stages[stage]["command"] = "python x.py"
        stages[stage]["callable"] = "json:dumps"
        what, names_out = f"stages.{stage}: command and callable", ("command", "callable")
    elif kind == "neither":
        stages[stage].pop("command", None)
        stages[stage].pop("callable", None)
        what, names_out = f"stages.{stage}: no command, no callable", ("command", "callable")
    elif kind == "unknown_field":
        where = rnd.choice([(), ("resources",), ("retry",), ("checkpoint",), ("gpu_idle",)])
        key = rnd.choice(["afterok", "pertrial", "gpu", "per-trial", "command ", "Per_Trial", "timelimit", "é"])
        target = stages[stage]
        for part in where:
            if not isinstance(target.get(part), dict):
                target[part] = {"below": 5} if part == "gpu_idle" else {}
            target = target[part]
        if where == ("gpu_idle",):
            _with_gpu(draft, doc, stage)
        target[key] = 1
        what, names_out = f"unknown field {'.'.join((stage, *where, key))!r}", (key.strip() or key,)
    elif kind == "stages_list":
        doc["stages"] = [{k: v} for k, v in stages.items()]
        what, names_out, forbid = "stages written as a YAML list", ("stages",), ("no stages", "defines no")
    elif kind == "stages_other":
        value = rnd.choice([{}, None, "prep", 5, [], True])
        doc["stages"] = value
        what, names_out = f"stages = {value!r}", ("stages",)
    elif kind == "no_stages":
        doc.pop("stages")
        what, names_out = "no stages block", ("stages",)
    elif kind == "top_unknown":  # a top-level key is a parameter of the experiment, not a mistake
        doc[rnd.choice(["lr", "notes", "per_trial", "resources", "x_y"])] = 1
        return Case(draft.files(doc), draft.intent(), Verdict.PLAN, "an extra top-level parameter")
    else:
        bad = TOP_NAMES[0] if rnd.random() < FOCUS_SHARE else rnd.choice(TOP_NAMES)
        doc["name"] = bad.value
        verdict, what = bad.verdict, f"name = {bad.value!r}"
        names_out = ("name",) if verdict is Verdict.REFUSE else ()
    return Case(draft.files(doc), Intent(n, draft.stages), verdict, what, names=names_out, forbid=forbid)


SWEEP_BAD = [
    *(Bad(v, R) for v in [[], "range(0)", "range(1,0)", "interval(0,1)", "glob(*)", "choice()", "1;2", "$(id),1"]),
    *(Bad(v, R) for v in ["a\nb", ["a;b", "c"], "range(a)", "[1,2", "'a", "range(0,3,0)"]),
    *(Bad(v, A) for v in [None, {"a": 1}, [[1, 2], [3]], [1, 1], "1,,2", ",", "x" * 2000, "sort(3,1,2)"]),
    *(Bad(v, A) for v in ["shuffle(1,2)", "range(1,3,0.5)", [None, 1], ["", "a"], [True, False], "é,ü"]),
    *(Bad(v, A) for v in ["range(1,2),1", "choice(1,2),3", "range(5,0,-1)"]),
]


def sweep_mutations(rnd: random.Random, draft: Draft) -> Case:
    doc = copy.deepcopy(draft.doc)
    kind = rnd.choice(["value", "unknown_key", "block"])
    axes = dict(draft.axes)
    if kind == "block":
        value = rnd.choice([["seed=1,2"], "seed=1,2", 5, True])
        doc["sweep"] = value
        return Case(draft.files(doc), Intent(1, draft.stages), R, f"sweep = {value!r}", names=("sweep",))
    sweep = doc.setdefault("sweep", {})
    if not isinstance(sweep, dict):
        sweep = doc["sweep"] = {}
    if kind == "unknown_key":
        key = rnd.choice(["nokey", "model.nope", "seed.x", "a;b", "é"])
        sweep[key] = "1,2"
        return Case(draft.files(doc), Intent(1, draft.stages), R, f"sweep of unknown key {key!r}", names=(key,))
    key = rnd.choice(["seed", "tag", "model.depth"])
    bad = SWEEP_BAD[0] if rnd.random() < FOCUS_SHARE else rnd.choice(SWEEP_BAD)
    sweep[key] = bad.value
    axes.pop(key, None)
    names = (key,) if bad.verdict is Verdict.REFUSE else ()
    return Case(draft.files(doc), Intent(1, draft.stages), bad.verdict, f"sweep {key}: {bad.value!r}", names=names)


# --- mutations of the file as text ---------------------------------------------------------------

YAML_EXTRAS = [
    "evil: !!python/object/apply:os.system ['touch ROOTTOKEN/pwned']",
    "evil: !!python/name:os.system",
    "when: 2020-01-01",
    "blob: !!binary aGVsbG8=",
    "alias: *nope",
    "loop: &a [*a]",
    "deep: " + "[" * 200 + "]" * 200,
    "deeper: " + "[" * 5000 + "]" * 5000,
    "big: 1e400",
    "key: [1, 2",
    "'unclosed: 1",
    "\tindented: 1",
    "stages: 5",
    'nul: "\\0"',
    "interp: ${nope}",
    "interp2: ${oc.env:SLURMFLOW_FUZZ_UNSET}",
    "<<: {seed: 5}",
]


def text_mutations(rnd: random.Random, draft: Draft) -> Case:
    """The YAML as bytes, broken: truncated, a character inserted, a line doubled or dropped,
    invalid UTF-8, hostile YAML tags, a stage defined twice."""
    files = draft.files()
    text = str(files["configs/config.yaml"])
    kind = rnd.choice(["truncate", "insert", "dup_line", "drop_line", "bytes", "extra", "dup_stage"])
    pos = rnd.randint(0, len(text))
    verdict, what = Verdict.ANY, kind
    content: str | bytes
    if kind == "truncate":
        content, what = text[:pos], f"truncated at {pos}"
    elif kind == "insert":
        char = rnd.choice([*":{}[]&*!|>'\"%@`#\t-?,\\\r", "\u2028", "\ufeff", "\x85", "\x1b"])
        content, what = text[:pos] + char + text[pos:], f"{char!r} inserted at {pos}"
    elif kind in ("dup_line", "drop_line"):
        lines = text.splitlines(keepends=True)
        i = rnd.randint(0, len(lines) - 1)
        lines[i : i + 1] = [lines[i]] * (2 if kind == "dup_line" else 0)
        content, what = "".join(lines), f"line {i + 1} {'doubled' if kind == 'dup_line' else 'dropped'}"
    elif kind == "bytes":
        raw = rnd.choice([b"\xff\xfe", b"\x00", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf"])
        data = text.encode()
        content, what = data[:pos] + raw + data[pos:], f"bytes {raw!r} at {pos}"
    elif kind == "extra":
        line = rnd.choice(YAML_EXTRAS)
        content, what = text + line + "\n", f"appended {line[:60]!r}"
        if "python/" in line or line.startswith(("alias", "key", "'", "\t", "stages:")):
            verdict = Verdict.REFUSE
    else:
        stage = rnd.choice(sorted(draft.stages))
        body = dump({"stages": {stage: draft.doc["stages"][stage]}}).split("\n", 1)[1]
        head, _, tail = text.partition("stages:\n")
        content, what, verdict = f"{head}stages:\n{body}{tail}", f"stage {stage!r} defined twice", Verdict.REFUSE
    files["configs/config.yaml"] = content
    return Case(files, draft.intent(), verdict, what)


# --- hostile command lines -----------------------------------------------------------------------

OVERRIDES_BAD = [
    *(Bad(v, A) for v in ["tag=é", "tag=日本", "tag=[1,2", "tag='abc", 'tag="abc', "tag={a:", "tag=)", "tag=("]),
    *(Bad(v, A) for v in ["=1", "tag", "tag==1", ".tag=1", "tag.=1", "+", "~", "++", "tag=a b", "tag=\t"]),
    *(Bad(v, A) for v in ["seed=${seed}", "seed=range(0,3,0)", "seed=choice()", "seed=sort(3,1)", "-m", "--multirun"]),
    *(Bad(v, A) for v in ["hydra.verbose=true", "hydra/launcher=basic", "tag=" + "x" * 5000, "seed=1", "tag=str(1)"]),
    *(Bad(v, A) for v in ["tag=a\u200bb", "tag=\u202e", "tag=${oc.env:HOME}", "~nokey", "seed=1,1", "@x=1", "x@y=1"]),
    *(Bad(v, A) for v in ["tag=nul\x01", "tag=a:b", "tag=a=b", "seed=0x10", "seed=1_000", "seed=1e3", "seed=-1"]),
    *(Bad(v, A) for v in ["seed=range(1,2),1", "seed=[1,2],[3]", "seed=range(1,100000)"]),
    *(Bad(v, R) for v in ["tag=a\nb", "tag=$(id)", "tag=`id`", "tag=a;b", "tag=a|b", "tag='a;b'", "tag='$(id)'"]),
    *(Bad(v, R) for v in ["nokey=1", "+tag=1", "seed=range(1,0)", "seed=interval(0,1)", "seed=glob(*)", "seed=1;2"]),
    *(Bad(v, R) for v in ["model.nope=1", "model.lr.x=1", "stages=[]", "stages=null", "~stages", "stages=5"]),
    *(Bad(v, R) for v in ["tag='a\nb'", "seed=1,'$(id)'", "+new='a;b'", "tag=\r"]),
]


def _option_cases(runs_file: bool) -> list[tuple[tuple[str, ...], Verdict, tuple[str, ...]]]:
    out: list[tuple[tuple[str, ...], Verdict, tuple[str, ...]]] = [
        (("--max-array-size", "0"), R, ("max-array-size",)),
        (("--max-array-size", "-3"), R, ("max-array-size",)),
        (("--max-array-size", "x"), R, ("max-array-size",)),
        (("--local-gpus", "-1"), R, ("local-gpus",)),
        (("--local-gpus", "x"), R, ("local-gpus",)),
        (("--max-tasks", "0"), R, ("max-tasks", "tasks")),
        (("--max-tasks", "-5"), R, ("max-tasks", "tasks")),
        (("-cd", f"{ROOT}/missing"), R, ("config",)),
        (("-cd", f"{ROOT}/occupied"), R, ("config",)),
        (("-cd", f"{CFG}/config.yaml"), R, ("config",)),
        (("-cn", "nosuch"), R, ("nosuch",)),
        (("-cn", ""), A, ()),
        (("-cn", "config.yaml"), A, ()),
        (("-cn", "../configs/config"), A, ()),
        (("--backend", "bogus"), R, ("backend",)),
        (("--local-gpus", "0"), A, ()),
        (("--max-array-size", str(10**30)), A, ()),
    ]
    if runs_file:
        out += [
            (("--runs-dir", f"{ROOT}/occupied"), R, ("runs",)),
            (("--runs-dir", f"{ROOT}/occupied/sub"), R, ("runs",)),
            (("--runs-dir", f"{CFG}"), A, ()),
            (("--runs-dir", ""), A, ()),
            (("--hold",), R, ("hold",)),
        ]
    return out


def command_line_mutations(rnd: random.Random, draft: Draft, *, options: bool, launch: bool = False) -> Case:
    """A hostile override, or a bad option value."""
    files = draft.files()
    files["occupied"] = "a file, not a directory\n"
    if not options:
        bad = rnd.choice(OVERRIDES_BAD)
        names: tuple[str, ...] = ()
        if bad.verdict is Verdict.REFUSE:
            names = (bad.value.lstrip("+~").split("=", 1)[0].split(".", 1)[0] or "override",)
        return Case(files, draft.intent(), bad.verdict, f"override {bad.value!r}", overrides=(bad.value,), names=names)
    every = _option_cases(launch)
    focus = [c for c in every if c[0] in FOCUS_OPTIONS]
    chosen, verdict, names = rnd.choice(focus if rnd.random() < FOCUS_SHARE else every)
    return Case(files, draft.intent(), verdict, f"options {' '.join(chosen)!r}", options=chosen, names=names)


Mutator = Callable[[random.Random, Draft], Case]


@st.composite
def mutated_cases(draw: st.DrawFn, *, launch: bool = False) -> Case:
    rnd = chooser(draw)
    draft = draw(drafts(plain=True))
    mutators: list[Mutator] = [
        field_mutations,
        field_mutations,
        field_mutations,
        structure_mutations,
        structure_mutations,
        sweep_mutations,
        text_mutations,
        lambda r, d: command_line_mutations(r, d, options=False),
        lambda r, d: command_line_mutations(r, d, options=True, launch=launch),
    ]
    return rnd.choice(mutators)(rnd, draft)


@st.composite
def dotted_callable_cases(draw: st.DrawFn) -> Case:
    """A valid experiment whose stage calls `PKGTOKEN.jobs:main`, a module inside a package."""
    rnd = chooser(draw)
    draft = draw(drafts(plain=True))
    doc = copy.deepcopy(draft.doc)
    stage = rnd.choice(sorted(draft.stages))
    doc["stages"][stage].pop("command", None)
    doc["stages"][stage]["callable"] = f"{PKG}.jobs:main"
    files = {**draft.files(doc), **package_files(dotted=True)}
    return Case(files, draft.intent(), Verdict.PLAN, f"stages.{stage}.callable = {PKG}.jobs:main")


def launch_mutations(rnd: random.Random, draft: Draft) -> Case:
    """What only a launch meets: names that become file names, trials that become directories,
    options about the queue and the run directory."""
    doc = copy.deepcopy(draft.doc)
    kind = rnd.choice(["long_name", "long_stage", "duplicate_trials", "options"])
    if kind == "options":
        return command_line_mutations(rnd, draft, options=True, launch=True)
    if kind == "long_name":
        doc["name"] = "n" * rnd.choice([120, 250, 300])
        what = f"name of {len(doc['name'])} characters"
    elif kind == "long_stage":
        new = "s" * rnd.choice([120, 250, 300])
        rename_stage(doc["stages"], rnd.choice(sorted(draft.stages)), new)
        what = f"a stage name of {len(new)} characters"
    else:  # two equal values: two trials with the same overrides, hence the same trial id
        doc["sweep"] = {**(doc.get("sweep") or {}), "seed": rnd.choice([[1, 1], "1,1", "range(1,2),1"])}
        what = f"sweep seed: {doc['sweep']['seed']!r}"
    return Case(draft.files(doc), draft.intent(), Verdict.ANY, what)


@st.composite
def launch_cases(draw: st.DrawFn) -> Case:
    """Mostly bad input (a launch must refuse it leaving nothing behind), some valid."""
    share = draw(st.integers(0, 3))
    if share == 0:
        return draw(valid_cases(plain=True))
    if share == 1:
        rnd = chooser(draw)
        return launch_mutations(rnd, draw(drafts(plain=True)))
    return draw(mutated_cases(launch=True))


# --- quota files ---------------------------------------------------------------------------------

# The associations the fake sacctmgr knows (tests/fuzz/conftest.py): account -> users.
ACCOUNTS: Mapping[str, tuple[str, ...]] = {"lab-a": ("alice", "carol"), "lab-b": ("bob",), "lab-c": ()}
QOS_NAMES = ("normal", "high")
CURRENT_QOS = ("normal",)  # what every association holds now


@dataclass(frozen=True)
class QuotaCase:
    content: str | bytes
    verdict: Verdict
    what: str
    changes: frozenset[tuple[str, str | None, str, str]] = frozenset()  # (account, user, field, JSON)
    names: tuple[str, ...] = ()
    path: str | None = None  # instead of the written file (ROOTTOKEN is the case's directory)
    doc: Any = field(default=None, compare=False)


def _limit(kind: str) -> st.SearchStrategy[Any]:
    if kind == "gpu_hours":
        return st.integers(0, 10_000) | st.floats(0, 10_000).map(lambda h: round(h, 2)) | st.just("unlimited")
    if kind == "qos":
        return st.lists(st.sampled_from(QOS_NAMES), min_size=1, max_size=2, unique=True) | st.sampled_from(QOS_NAMES)
    return st.integers(0, 100_000) | st.just("unlimited")


def _declared(kind: str, value: Any) -> Any:
    """What Slurm is to hold, as the JSON of `admin quota apply --json` says it."""
    if value == "unlimited":
        return None
    if kind == "qos":
        return sorted([value] if isinstance(value, str) else value)
    if kind == "gpu_hours":
        return round(value * 60)  # GrpTRESMins: whole GPU-minutes
    return value


def _current(kind: str) -> Any:
    return list(CURRENT_QOS) if kind == "qos" else None


@st.composite
def quota_docs(draw: st.DrawFn) -> tuple[dict[str, Any], frozenset[tuple[str, str | None, str, str]]]:
    import json

    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["cluster"] = "mini"
    accounts: dict[str, Any] = {}
    changes: set[tuple[str, str | None, str, str]] = set()
    for account in draw(st.lists(st.sampled_from(sorted(ACCOUNTS)), min_size=1, unique=True)):
        body: dict[str, Any] = {}
        for kind in draw(
            st.lists(st.sampled_from(["gpus", "gpu_hours", "max_running_jobs", "max_submit_jobs", "qos"]))
        ):
            body[kind] = draw(_limit(kind))
        users: dict[str, Any] = {}
        for user in draw(st.lists(st.sampled_from(ACCOUNTS[account]), unique=True)) if ACCOUNTS[account] else []:
            limits: dict[str, Any] = {}
            for kind in draw(st.lists(st.sampled_from(["gpus", "max_running_jobs", "max_submit_jobs", "qos"]))):
                limits[kind] = draw(_limit(kind))
            users[user] = limits
        if users:
            body["users"] = users
        accounts[account] = body
        owners: list[tuple[str | None, dict[str, Any]]] = [(None, body), *users.items()]
        for owner, declared in owners:
            for kind, value in declared.items():
                if kind != "users" and _declared(kind, value) != _current(kind):
                    changes.add((account, owner, kind, json.dumps(_declared(kind, value))))
    doc["accounts"] = accounts
    return doc, frozenset(changes)


@st.composite
def valid_quota_cases(draw: st.DrawFn) -> QuotaCase:
    doc, changes = draw(quota_docs())
    return QuotaCase(dump(doc), Verdict.PLAN, "valid", changes, doc=doc)


QUOTA_COUNTS = [
    *(Bad(v, R) for v in [-1, True, False, 1.5, "two", [2], {"n": 2}, NAN, INF, -(10**9), "", "-1", "Unlimited\n"]),
    *(Bad(v, A) for v in ["5", None, 10**30, "UNLIMITED", "none", 2.0]),
]
GPU_HOURS = [*(Bad(v, R) for v in [-1, -1.5, True, INF, NAN, "lots", [1], {"h": 1}, "", -(10**9)]), Bad(None, A)]
QOS_BAD = [
    *(Bad(v, R) for v in [[], ["no;pe"], [1], {"a": 1}, ["normal\n"], ["gold"], "gold", [None], True, ["nor mal"]]),
    *(Bad(v, A) for v in ["normal,high", None, ["normal", "normal"]]),
]
QUOTA_NAMES = ["lab a", "lab-a\n", "", "läb", "lab-z", "lab;a", "a" * 300, "lab-a ", " lab-a", "LAB-A"]


@st.composite
def mutated_quota_cases(draw: st.DrawFn) -> QuotaCase:
    rnd = chooser(draw)
    doc, _ = draw(quota_docs())
    accounts: dict[str, Any] = doc["accounts"]
    account = rnd.choice(sorted(accounts))
    kind = rnd.choice(["count", "gpu_hours", "qos", "account", "user", "unknown", "shape", "cluster", "text", "path"])
    verdict, what = Verdict.REFUSE, kind
    names: tuple[str, ...] = ()
    content: str | bytes
    path = None
    top: Any = doc  # what the file holds
    target: Any = accounts[account]
    if kind in ("count", "gpu_hours", "qos"):
        members = ACCOUNTS[account]
        if len(members) > 0 and (rnd.random() < 0.5):
            member = rnd.choice(members)
            target = target.setdefault("users", {}).setdefault(member, {})
        name = {"count": rnd.choice(["gpus", "max_running_jobs", "max_submit_jobs"])}.get(kind, kind)
        bad = rnd.choice({"count": QUOTA_COUNTS, "gpu_hours": GPU_HOURS, "qos": QOS_BAD}[kind])
        target[name] = bad.value
        verdict, what, names = bad.verdict, f"{name} = {bad.value!r}", (name,)
    elif kind == "account":
        new = rnd.choice(QUOTA_NAMES)
        accounts[new] = accounts.pop(account)
        what, names = f"account {new!r}", ("account",)
    elif kind == "user":
        user = rnd.choice(["bob the", "alice\n", "", "zed", "al;ice", "ålice", "dave"])
        if account == "lab-b" and user == "bob":
            user = "alice"
        target = target if isinstance(target, dict) else {}
        accounts[account] = target
        target.setdefault("users", {})[user] = {"gpus": 1}
        what, names = f"user {user!r} in {account}", ("user",)
    elif kind == "unknown":
        where = rnd.choice(["top", "account", "user"])
        key = rnd.choice(["gpu", "limits", "GPUs", "max_jobs", "users "])
        if where == "top":
            doc[key] = 1
        elif where == "account":
            target[key] = 1
        else:
            users = ACCOUNTS[account] or ("alice",)
            accounts[account] = {"users": {users[0]: {key: 1}}} if account != "lab-c" else {key: 1}
        what, names = f"unknown field {key!r} ({where})", (key.strip(),)
    elif kind == "shape":
        where = rnd.choice(["accounts", "account", "users", "user", "doc"])
        value = rnd.choice([[1, 2], "x", 5, [], True])
        if where == "accounts":
            doc["accounts"] = value
        elif where == "account":
            accounts[account] = value
        elif where in ("users", "user"):
            users = ACCOUNTS[account] or ("alice",)
            target = {} if account == "lab-c" else target
            accounts[account] = target
            target["users"] = value if where == "users" else {users[0]: value}
        else:
            top = value
        what = f"{where} = {value!r}"
        names = {"doc": ("quota file",), "accounts": ("accounts",)}.get(where, ("accounts",))
    elif kind == "cluster":
        value = rnd.choice([["mini"], {"a": 1}, "mini\n", "mini;rm", "other", 5, True, ""])
        doc["cluster"] = value
        what, names = f"cluster = {value!r}", ("cluster",)
        verdict = Verdict.ANY if value == "" else Verdict.REFUSE
    elif kind == "path":
        path = rnd.choice([f"{ROOT}/missing.yaml", ROOT, f"{ROOT}/quota.yaml/x", ""])
        what, names = f"quota file path {path!r}", ("quota",)
    if kind == "text":
        base = dump(doc)
        line = rnd.choice(
            [
                "x: ${nope}",
                "x: ${oc.env:SLURMFLOW_FUZZ_UNSET}",
                "x: !!python/object/apply:os.system ['touch ROOTTOKEN/pwned']",
                "when: 2020-01-01",
                "blob: !!binary aGVsbG8=",
                "loop: &a [*a]",
                "[unclosed",
                "\tx: 1",
                "accounts: 5",
                "deep: " + "[" * 5000 + "]" * 5000,
            ]
        )
        pos = rnd.randint(0, len(base))
        variant = rnd.choice(["append", "truncate", "bytes", "empty", "scalar", "dup"])
        verdict = Verdict.ANY
        if variant == "append":
            content, what = base + line + "\n", f"appended {line[:50]!r}"
        elif variant == "truncate":
            content, what = base[:pos], f"truncated at {pos}"
        elif variant == "bytes":
            content, what = base.encode()[:pos] + b"\xff\xfe" + base.encode()[pos:], f"invalid UTF-8 at {pos}"
        elif variant == "empty":
            content, what, verdict = "", "an empty file", Verdict.REFUSE
        elif variant == "scalar":
            content, what, verdict = "5\n", "a file holding a number", Verdict.REFUSE
        else:
            block = dump({account: accounts[account]})
            content, what = base.replace("accounts:\n", "accounts:\n" + _indent(block), 1), f"{account} twice"
            verdict = Verdict.REFUSE
    else:
        content = dump(top)
    return QuotaCase(content, verdict, what, names=names, path=path, doc=doc)


def _indent(block: str) -> str:
    return "".join("  " + line + "\n" for line in block.splitlines())
