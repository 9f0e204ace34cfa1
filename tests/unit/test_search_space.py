"""`search:` -> Search (Hydra's Optuna-sweeper grammar), and Search -> what Optuna and Hydra take
back: distributions, grid, sampler, pruner, and each proposed value as a Hydra override."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import QuotedString
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from slurmflow.errors import UsageError
from slurmflow.experiment import search
from slurmflow.model import Search, SearchParam
from slurmflow.search import space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _parse(params: dict[str, Any], config_dir: Path | None = None, **fields: Any) -> Search:
    found = search.parse({"params": params, "n_trials": 10, **fields}, config_dir or Path("/nonexistent"))
    assert found is not None
    return found


def _one(text: Any, config_dir: Path | None = None) -> SearchParam:
    return _parse({"k": text}, config_dir).params[0]


def _refused(raw: Any, config_dir: Path | None = None) -> str:
    with pytest.raises(UsageError) as caught:
        search.parse(raw, config_dir or Path("/nonexistent"))
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _param_refused(text: Any, config_dir: Path | None = None, **fields: Any) -> str:
    return _refused({"params": {"k": text}, "n_trials": 10, **fields}, config_dir)


# --- the grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("interval(-5.0, 10.0)", SearchParam("k", "float", -5.0, 10.0)),
        ("interval(1, 8)", SearchParam("k", "float", 1.0, 8.0)),  # Hydra's interval() is of floats
        ("tag(log, interval(1e-4, 1e-1))", SearchParam("k", "float", 1e-4, 0.1, log=True)),
        ("int(interval(1, 8))", SearchParam("k", "int", 1, 8)),
        ("int(interval(1.7, 8.9))", SearchParam("k", "int", 1, 8)),  # int() truncates, as in Hydra
        ("tag(log, int(interval(1, 1024)))", SearchParam("k", "int", 1, 1024, log=True)),
        ("int(tag(log, interval(1, 1024)))", SearchParam("k", "int", 1, 1024, log=True)),
        ("range(16, 129, 16)", SearchParam("k", "int", 16, 128, step=16)),
        ("range(1, 8)", SearchParam("k", "int", 1, 7, step=1)),  # stops before 8, as Hydra's range()
        ("range(10, 0, -2)", SearchParam("k", "int", 2, 10, step=2)),
        ("range(0, 1, step=0.25)", SearchParam("k", "float", 0.0, 0.75, step=0.25)),
        ("range(0, 0.9, 0.3)", SearchParam("k", "float", 0.0, 0.6, step=0.3)),
        ("float(range(1, 4))", SearchParam("k", "float", 1.0, 3.0, step=1.0)),
        ("choice(adam, sgd)", SearchParam("k", "categorical", choices=("adam", "sgd"))),
        ("relu,gelu", SearchParam("k", "categorical", choices=("relu", "gelu"))),
        ("sort(3,1,2)", SearchParam("k", "categorical", choices=(1, 2, 3))),
        ("choice('1', 2, 2.5, true, 'a b')", SearchParam("k", "categorical", choices=("1", 2, 2.5, True, "a b"))),
        ("1,null", SearchParam("k", "categorical", choices=(1, None))),
        ("shuffle(range(1, 4))", SearchParam("k", "categorical", choices=(1, 2, 3))),
    ],
)
def test_each_form_of_hydras_optuna_grammar(text: str, expected: SearchParam) -> None:
    assert _one(text) == expected


def test_a_yaml_list_is_a_categorical_of_its_items() -> None:
    assert _one(["adam", "a,b", 3]).choices == ("adam", "a,b", 3)


def test_params_keep_their_order_and_keys() -> None:
    found = _parse({"model.lr": "interval(0, 1)", "a/b": "x,y", "seed": "range(0, 3)"})
    assert [p.name for p in found.params] == ["model.lr", "a/b", "seed"]


def test_a_config_group_is_a_categorical_of_names(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "enc").mkdir()
    found = _parse({"model": "choice(small, 'big one')", "model.enc": "a,b", "lr": "a,b"}, tmp_path)
    assert [(p.name, p.group) for p in found.params] == [("model", True), ("model.enc", True), ("lr", False)]
    assert found.params[0].choices == ("small", "big one")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("interval(0, 1)", "model is a config group: search its options with choice(a, b)"),
        ("range(1, 4)", "model is a config group: search its options with choice(a, b)"),
        ("choice(small, 1)", "whose options are names, and 1 is not one"),
        ("small,true", "and true is not one"),
    ],
)
def test_a_config_group_takes_names_only(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "model").mkdir()
    message = _refused({"params": {"model": text}, "n_trials": 3}, tmp_path)
    assert message.startswith("search.params.model: ") and words in message, message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0.5", "'0.5' is one value, not a space to search: a fixed value belongs in the config"),
        (0.5, "0.5 is one value, not a space to search: a fixed value belongs in the config"),
        (["only"], "is one value"),
        ("", "is one value"),
        ("glob(*)", "glob() picks options for a grid"),
        ("interval(1, 1)", "the low end must be below the high end"),
        ("interval(2, 1)", "the low end must be below the high end"),
        ("int(interval(3, 3))", "the low end must be below the high end"),
        ("tag(log, interval(0, 1))", "tag(log, ...) needs a low end above 0"),
        ("tag(log, int(interval(-1, 5)))", "needs a low end above 0"),
        ("interval(0, inf)", "both ends must be finite"),
        ("tag(lgo, interval(1, 2))", "tag 'lgo' means nothing here"),
        ("tag(log, choice(1, 2))", "log applies to an interval"),
        ("tag(log, range(1, 5))", "log applies to an interval"),
        ("range(5, 5)", "holds 0 value(s)"),
        ("range(1, 2)", "holds 1 value(s)"),
        ("range(1, 5, -1)", "holds 0 value(s)"),
        ("range(0, 1, 0)", "the step must not be 0"),
        ("choice(a)", "a choice of one value is not a search"),
        ("a,a", "'a' is given twice"),
        ("1,1.0", "1 and 1.0 are one choice to Optuna"),
        ("1,true", "1 and True are one choice to Optuna"),
        ("1,nan", "nan cannot be a choice"),
        ("choice([1, 2], [3])", "is a list or mapping"),
        ("interval(0,", "is not valid in Hydra's grammar"),
        ("choice(x, range(1, 3))", "is not valid in Hydra's grammar"),
        ("choice(a, null)", "null cannot be in choice(): write a comma list, a,b,null"),
        ({"a": 1}, "not a mapping"),
    ],
)
def test_each_refusal_is_one_line_naming_the_param(text: Any, words: str) -> None:
    message = _param_refused(text)
    assert message.startswith("search.params.k: ") and words in message, message


@pytest.mark.parametrize("key", ["+k", "~k", "k@pkg", "a b", "a=b", "1a", "a..b"])
def test_a_key_is_a_plain_config_key(key: str) -> None:
    message = _refused({"params": {key: "a,b"}, "n_trials": 3})
    assert message.startswith(f"search.params.{key}: ") and "config key" in message, message


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"params": {}}, "search.params: empty"),
        ({"n_trials": 0}, "search.n_trials: expected a whole number >= 1 (got 0)"),
        ({"batch": 0}, "search.batch: expected a whole number >= 1"),
        ({"seed": -1}, "search.seed: expected a whole number from 0 to 4294967295"),
        ({"seed": "1"}, "search.seed: expected a whole number"),
        ({"bogus": 1}, "search: unknown field 'bogus'"),
        ({"sampler": "bayes"}, "search.sampler: unknown sampler 'bayes': use one of tpe, cmaes, random, grid, qmc"),
        ({"sampler": {"n_startup_trials": 3}}, "search.sampler: a mapping needs name: one of tpe"),
        ({"sampler": "grid"}, "search.params.x: the grid sampler lists values, and a float interval has none"),
        ({"pruner": "none"}, "search.pruner: unknown pruner 'none': use one of median, percentile"),
        ({"max_gpu_hours": 0}, "search.max_gpu_hours: expected a number above 0"),
        ({"deadline": "soon"}, "search.deadline: 'soon' is not a duration"),
        ({"deadline": 0}, "search.deadline: 0.0 must be a positive duration"),
        ({"grace": "a while", "pruner": "median"}, "search.grace: 'a while' is not a duration"),
        ({"grace": 30}, "search.grace: set, but search.pruner is not"),
        ({"prune_stage": "train"}, "search.prune_stage: set, but search.pruner is not"),
        ({"prune_stage": "no such", "pruner": "nop"}, "search.prune_stage: 'no such' is not a stage name"),
        ({"storage": "study.db"}, "search.storage: 'study.db' is not a database URL"),
        ({"storage": "sqlite:///:memory:"}, "search.storage: an in-memory database is lost"),
        ({"study_name": " "}, "search.study_name: ' ' must be one line"),
    ],
)
def test_each_refusal_of_the_block_is_one_line_naming_the_field(fields: dict[str, Any], words: str) -> None:
    raw = {"params": {"x": "interval(0, 1)"}, "n_trials": 10, **fields}
    message = _refused(raw)
    assert message.startswith(words.split(":")[0] + ":") and words in message, message


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"sampler": {"name": "tpe", "n_startup": 3}}, "search.sampler.n_startup: Optuna's TPESampler takes no option"),
        ({"sampler": {"name": "tpe", "seed": 3}}, "search.sampler.seed: set search.seed instead"),
        ({"sampler": {"name": "tpe", "gamma": "x"}}, "search.sampler.gamma: TPESampler takes a Python object"),
        (
            {"sampler": {"name": "tpe", "n_startup_trials": "ten"}},
            "search.sampler.n_startup_trials: TPESampler takes int",
        ),
        ({"sampler": {"name": "tpe", "multivariate": 1}}, "search.sampler.multivariate: TPESampler takes bool | None"),
        ({"pruner": "percentile"}, "search.pruner: percentile needs percentile: write {name: percentile, percentile:"),
        ({"pruner": {"name": "median", "warmup": 2}}, "search.pruner.warmup: Optuna's MedianPruner takes no option"),
        ({"pruner": {"name": "percentile", "percentile": 150.0}}, "search.pruner: "),
        ({"sampler": "cmaes"}, "search.sampler: cmaes needs the cmaes package: pip install cmaes"),
    ],
)
def test_options_are_judged_against_optunas_classes_at_launch(
    fields: dict[str, Any], words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parse() reads names and shapes; space.check() (called at launch, the run layer) makes the
    sampler and the pruner once, so that Optuna's refusal comes before anything is submitted."""
    found = _parse({"x": "interval(0, 1)"}, **fields)
    if found.sampler == "cmaes":  # as on a machine without the package (the search extra has it)
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "cmaes" else real(n, *a))
    with pytest.raises(UsageError) as caught:
        space.check(found, 1)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(words.split(":")[0] + ":") and words in message, message


def test_the_names_and_grid_bound_of_both_layers_agree() -> None:
    assert (search.SAMPLERS, search.PRUNERS, search.GRID_MAX) == (space.SAMPLERS, space.PRUNERS, space.GRID_MAX)
    for params in (
        {"w": "range(16, 129, 16)", "f": "range(0, 1, 0.1)", "i": "int(interval(1, 3))", "c": "a,b"},
        {"f": "range(0.5, 2.0, 0.3)", "g": "range(10, 0, -3)", "l": "tag(log, int(interval(1, 64)))"},
    ):
        found = _parse(params, sampler="random")
        assert search._grid_points(found.params) == space.grid_size(found)


def test_missing_and_mistyped_block() -> None:
    assert "search: missing required field 'n_trials'" in _refused({"params": {"x": "a,b"}})
    assert _refused([1]).startswith("search: expected a mapping")
    assert search.parse(None, Path("/nonexistent")) is None


def test_the_whole_block() -> None:
    found = _parse(
        {"x": "interval(-5.0, 10.0)", "opt": "choice(adam, sgd)"},
        batch=4,
        sampler={"name": "tpe", "n_startup_trials": 5},
        pruner={"name": "median", "n_warmup_steps": 2},
        seed=0,
        storage="journal",
        study_name="s1",
        max_gpu_hours=12,
        deadline="12h",
        prune_stage="train",
        grace="90s",
    )
    assert found.sampler == "tpe" and found.sampler_options == {"n_startup_trials": 5}
    assert found.pruner == "median" and found.pruner_options == {"n_warmup_steps": 2}
    assert (found.n_trials, found.batch, found.seed, found.storage, found.study_name) == (10, 4, 0, "journal", "s1")
    assert (found.max_gpu_hours, found.deadline_s, found.prune_stage, found.grace_s) == (12.0, 43200.0, "train", 90.0)
    defaults = _parse({"x": "a,b"}, storage="sqlite")
    assert (defaults.sampler, defaults.pruner, defaults.batch, defaults.storage, defaults.grace_s) == (
        "tpe",
        None,
        1,
        None,
        0.0,
    )
    assert _parse({"x": "a,b"}, batch=50).batch == 50  # more than n_trials: n_trials bounds what runs


def test_a_grid_study_ends_with_its_grid() -> None:
    found = _parse({"a": "range(0, 3)", "b": "x,y"}, sampler="grid")
    assert found.n_trials == 6  # 10 asked for; the grid has 6 points, as Hydra's Optuna sweeper counts
    assert _parse({"a": "range(0, 30)"}, sampler="grid").n_trials == 10


def test_a_grid_too_big_for_optuna_is_refused() -> None:
    message = _refused(
        {"params": {"a": "int(interval(0, 1000))", "b": "range(0, 1000)"}, "n_trials": 5, "sampler": "grid"}
    )
    assert message.startswith("search.sampler: grid: the params make 1,001,000 points"), message


# --- launch.json ---------------------------------------------------------------------------------


def _everything() -> Search:
    return _parse(
        {
            "x": "interval(-5.0, 10.0)",
            "lr": "tag(log, interval(1e-4, 1e-1))",
            "layers": "int(interval(1, 8))",
            "width": "range(16, 129, 16)",
            "frac": "range(0, 1, 0.1)",
            "opt": "adam,'a b','1',2,1.5,true,null,-0.0",
        },
        batch=4,
        sampler={"name": "tpe", "n_startup_trials": 3, "multivariate": True},
        pruner={"name": "hyperband", "min_resource": 2},
        seed=7,
        deadline="90min",
        grace=5,
        prune_stage="train",
    )


def test_to_json_and_back_is_exact() -> None:
    found = _everything()
    doc = json.loads(json.dumps(space.to_json(found), allow_nan=False))
    back = space.from_json(doc)
    assert back == found
    assert [tuple(map(type, p.choices)) for p in back.params] == [tuple(map(type, p.choices)) for p in found.params]
    assert [(type(p.low), type(p.high)) for p in back.params] == [(type(p.low), type(p.high)) for p in found.params]
    assert space.from_json({**doc, "from_a_later_version": 1}) == found


# --- Optuna's view -------------------------------------------------------------------------------


def test_distributions() -> None:
    dists = space.distributions(_everything())
    assert dists["x"] == FloatDistribution(-5.0, 10.0)
    assert dists["lr"] == FloatDistribution(1e-4, 0.1, log=True)
    assert dists["layers"] == IntDistribution(1, 8)
    assert dists["width"] == IntDistribution(16, 128, step=16)
    assert dists["frac"] == FloatDistribution(0.0, 0.9, step=0.1)
    assert dists["opt"] == CategoricalDistribution(["adam", "a b", "1", 2, 1.5, True, None, -0.0])
    assert list(dists) == ["x", "lr", "layers", "width", "frac", "opt"]


def test_grid_lists_every_value() -> None:
    found = _parse({"w": "range(16, 129, 16)", "f": "range(0, 1, 0.1)", "i": "int(interval(1, 3))", "c": "a,b"})
    assert space.grid(found) == {
        "w": [16, 32, 48, 64, 80, 96, 112, 128],
        "f": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],  # as written, not 0.30000000000000004
        "i": [1, 2, 3],
        "c": ["a", "b"],
    }
    assert space.grid_size(found) == 8 * 10 * 3 * 2


# --- a proposed value as an override -------------------------------------------------------------

HOSTILE = [
    "adam",
    "a b",
    " lead",
    "trail ",
    "a,b",
    "it's",
    'say "hi"',
    "x;y",
    "$(rm -rf /)",
    "`id`",
    "${x}",
    "${oc.env:HOME,'d'}",
    "\\${x}",
    "a\\",
    "a\\'b",
    "\\\\'",
    "'",
    "\\",
    "日本語 ✓",
    "é",
    "",
    "1",
    "-1",
    "1.5",
    "1e3",
    "0x10",
    "true",
    "False",
    "null",
    "NULL",
    "nan",
    "inf",
    "-inf",
    "[1,2]",
    "{a:1}",
    "a=b",
    "choice(a,b)",
    "int(3)",
    "x\ny",
    "\t",
    "cnn/small",
    "a.b-c_d",
    "info",
    "true_ish",
    "true.x",
    "null/x",
    "inf-x",
    "nan.5",
    "e5",
    "_",
]


def _read_back(text: str) -> Any:
    value = OverridesParser.create().parse_override(text).value()
    return value.text if isinstance(value, QuotedString) else value


@pytest.mark.parametrize("value", HOSTILE)
def test_a_string_reads_back_through_hydras_parser_as_itself(value: str) -> None:
    p = SearchParam("model.opt", "categorical", choices=(value, "other"))
    text = space.override(p, value)
    assert text.startswith("model.opt=")
    got = _read_back(text)
    assert type(got) is str and got == value, text


@pytest.mark.parametrize("value", [0, -3, 10**20, 0.1, -0.0, 1e-05, 1e16, 1 / 3, 2.5e-300, True, False, None])
def test_a_scalar_choice_reads_back_with_its_type(value: Any) -> None:
    p = SearchParam("k", "categorical", choices=(value, "other"))
    got = _read_back(space.override(p, value))
    assert type(got) is type(value) and got == value
    if isinstance(value, float):
        assert math.copysign(1, got) == math.copysign(1, value)


def test_numbers_are_written_as_their_param_types() -> None:
    f = SearchParam("lr", "float", 1e-4, 0.1, log=True)
    i = SearchParam("layers", "int", 1, 8)
    assert space.override(f, 3) == "lr=3.0" and type(_read_back(space.override(f, 3))) is float
    assert space.override(f, 0.00012345678901234) == "lr=0.00012345678901234"
    assert space.override(i, 4) == "layers=4" and space.override(i, 4.0) == "layers=4"
    assert space.override(SearchParam("model", "categorical", choices=("small", "big one"), group=True), "big one") == (
        "model='big one'"
    )
    with pytest.raises(ValueError, match="not a whole number"):
        space.override(i, 4.5)
    with pytest.raises(ValueError, match="not a number"):
        space.override(f, "0.1")


def test_every_value_optuna_proposes_reads_back() -> None:
    found = _everything()
    study = optuna.create_study(sampler=space.sampler(found))
    for _ in range(8):  # past TPE's 3 startup trials
        trial = study.ask(fixed_distributions=space.distributions(found))
        for p in found.params:
            got = _read_back(space.override(p, trial.params[p.name]))
            assert got == trial.params[p.name] and type(got) is type(trial.params[p.name])
        study.tell(trial, 0.0)


# --- samplers and pruners ------------------------------------------------------------------------


def _first_params(found: Search) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=space.sampler(found))
    out = []
    for i in range(3):
        trial = study.ask(fixed_distributions=space.distributions(found))
        out.append(dict(trial.params))
        study.tell(trial, float(i))
    return out


@pytest.mark.parametrize("name", ["tpe", "random", "qmc", "grid", "cmaes"])
def test_one_seed_one_sequence_of_points(name: str) -> None:
    params = (
        {"a": "range(0, 10)", "b": "range(0, 1, 0.125)"}
        if name == "grid"
        else {"a": "interval(0, 1)", "b": "int(interval(0, 9))"}
    )
    seeded = _parse(params, sampler=name, seed=3)
    assert _first_params(seeded) == _first_params(seeded)
    if name != "grid":
        assert _first_params(seeded) != _first_params(_parse(params, sampler=name, seed=4))


def test_sampler_classes_and_options() -> None:
    one = _parse({"a": "interval(0, 1)"}, sampler={"name": "tpe", "n_startup_trials": 3}, seed=1, batch=4)
    tpe = space.sampler(one, 2)  # several objectives: fine for TPE
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 3
    assert isinstance(space.sampler(_parse({"a": "a,b"}, sampler="random")), optuna.samplers.RandomSampler)
    assert isinstance(space.sampler(_parse({"a": "a,b"}, sampler="qmc")), optuna.samplers.QMCSampler)
    assert isinstance(space.sampler(_parse({"a": "a,b"}, sampler="grid")), optuna.samplers.GridSampler)


def test_cmaes_takes_one_objective() -> None:
    found = Search((SearchParam("a", "float", 0.0, 1.0),), n_trials=3, batch=1, sampler="cmaes")
    with pytest.raises(UsageError, match=r"^search.sampler: cmaes optimises one objective and the experiment has 2"):
        space.sampler(found, 2)


def test_pruners() -> None:
    assert isinstance(space.pruner(_parse({"a": "a,b"})), optuna.pruners.NopPruner)
    cases = {
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "nop": optuna.pruners.NopPruner,
    }
    for name, cls in cases.items():
        assert isinstance(space.pruner(_parse({"a": "a,b"}, pruner=name)), cls)
    pct = space.pruner(_parse({"a": "a,b"}, pruner={"name": "percentile", "percentile": 25.0, "n_startup_trials": 2}))
    assert isinstance(pct, optuna.pruners.PercentilePruner)
    halving = _parse({"a": "a,b"}, pruner={"name": "successive_halving", "min_resource": "auto", "reduction_factor": 3})
    assert isinstance(space.pruner(halving), optuna.pruners.SuccessiveHalvingPruner)


def test_a_huge_int_range_is_not_listed() -> None:
    assert _one("range(0, 1000000000000, 3)") == SearchParam("k", "int", 0, 999999999999, step=3)


def test_check_knows_the_objectives_once_they_are_known() -> None:
    pruned = _parse({"a": "interval(0, 1)"}, pruner="median")
    space.check(pruned, 1)
    with pytest.raises(UsageError, match=r"^search.pruner: Optuna prunes single-objective studies only"):
        space.check(pruned, 2)
    space.check(_parse({"a": "interval(0, 1)"}, pruner="nop"), 2)
