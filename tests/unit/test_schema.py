"""The declared experiment and quota schema: values mean what they say, or a one-line refusal
naming the field path. Each case here was once silently reinterpreted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from slurmflow.errors import UsageError
from slurmflow.experiment import config, sweep, trialcfg
from slurmflow.experiment.stages import parse_stage
from slurmflow.planning import planner
from slurmflow.quota import file as quota
from slurmflow.quota.fit import stage_gpu_hours
from slurmflow.slurm import units
from slurmflow.slurm.types import ClusterInfo


def write_experiment(tmp_path: Path, doc: dict[str, Any]) -> Path:
    cfgdir = tmp_path / "configs"
    cfgdir.mkdir()
    (cfgdir / "config.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    return cfgdir


def refusal(body: dict[str, Any]) -> str:
    with pytest.raises(UsageError) as info:
        parse_stage("train", body)
    text = str(info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("field", ["per_trial", "requeue", "singleton"])
@pytest.mark.parametrize("text", ["false", "true", "no", "0"])
def test_a_quoted_boolean_is_refused_not_read_as_true(field: str, text: str) -> None:
    message = refusal({"command": "x", field: text})
    assert message.startswith(f"stages.train.{field}: expected true or false")
    assert "without quotes" in message


def test_booleans_and_whole_numbers_are_strict() -> None:
    assert parse_stage("train", {"command": "x", "per_trial": False}).per_trial is False
    assert parse_stage("train", {"command": "x", "requeue": False}).requeue is False
    assert "gpus: expected a whole number >= 0 (got 1.5)" in refusal({"command": "x", "resources": {"gpus": 1.5}})
    assert "gpus: expected a whole number >= 0 (got True)" in refusal({"command": "x", "resources": {"gpus": True}})
    assert "max_parallel: expected a whole number >= 1" in refusal({"command": "x", "max_parallel": 0})
    assert "cpus: expected a whole number >= 1" in refusal({"command": "x", "resources": {"cpus": 0}})
    assert "retry.infra: expected a whole number from 0 to 100" in refusal({"command": "x", "retry": {"infra": "2"}})


def test_unknown_fields_name_the_path_and_the_known_ones() -> None:
    message = refusal({"command": "x", "resources": {"gpu": 1}})
    assert message.startswith("stages.train.resources: unknown field 'gpu' (known: account, constraint, cpus")


def test_sweep_block_list_values_are_each_one_value(tmp_path: Path) -> None:
    cfgdir = write_experiment(
        tmp_path,
        {
            "prompt": "x",
            "sweep": {"prompt": ["a,b", "c d", "it's", "back\\slash", 3]},
            "stages": {"run": {"command": "echo ${prompt}", "per_trial": True}},
        },
    )
    exp = config.load(cfgdir, "config", [])
    (axis,) = exp.axes
    assert axis.typed == ("a,b", "c d", "it's", "back\\slash", 3)
    assert sweep.count(exp.axes) == 5
    # The trials' override strings parse back to the same values (a sweep over a group composes with them).
    back = [config.parse_overrides([f"prompt={v}"])[0] for v in axis.values]
    assert not any(o.is_sweep_override() for o in back)
    assert tuple(config._plain(o.value()) for o in back) == axis.typed


@pytest.mark.parametrize("limit", [0, "0", "UNLIMITED", "infinite"])
def test_no_time_limit_is_unbounded_in_the_budget(tmp_path: Path, limit: object) -> None:
    cfgdir = write_experiment(
        tmp_path, {"stages": {"train": {"command": "python train.py", "resources": {"gpus": 2, "time": limit}}}}
    )
    exp = config.load(cfgdir, "config", [])
    assert exp.stages["train"].resources.time == units.UNLIMITED
    plan = planner.plan(exp.name, exp.stages, sweep.count(exp.axes), ClusterInfo())
    assert plan.gpu_hours == 0 and plan.gpu_hours_unbounded == ("train",)
    assert stage_gpu_hours(plan) == {}


def test_stages_written_as_a_list_get_the_reason(tmp_path: Path) -> None:
    cfgdir = write_experiment(tmp_path, {"stages": [{"train": {"command": "x"}}]})
    with pytest.raises(UsageError, match="stages: written as a list; write a mapping of stage name"):
        config.load(cfgdir, "config", [])


def test_stage_settings_may_interpolate_but_not_swept_keys(tmp_path: Path) -> None:
    cfgdir = write_experiment(
        tmp_path,
        {
            "hw": {"gpus": 2, "time": "1h"},
            "lr": 0.1,
            "stages": {
                "train": {"command": "train --lr ${lr}", "resources": {"gpus": "${hw.gpus}", "time": "${hw.time}"}}
            },
        },
    )
    res = config.load(cfgdir, "config", []).stages["train"].resources
    assert (res.gpus, res.time) == (2, "01:00:00")
    with pytest.raises(UsageError, match=r"stages.train.resources: depends on the swept key hw.gpus"):
        config.load(cfgdir, "config", ["hw.gpus=1,2"])


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("name=héllo", "override 'name=héllo': Hydra reads non-ASCII text only in quotes: write name='héllo'"),
        ("nosuch.key=1", "override nosuch.key: no such key in the config; fix the name, or add it with +nosuch.key="),
        ("hw={cores: 1}", "override hw.cores: no such key"),
        ("justaword", "override 'justaword': expected key=value"),
    ],
)
def test_override_errors_are_one_line(tmp_path: Path, override: str, needle: str) -> None:
    cfgdir = write_experiment(tmp_path, {"name": "x", "hw": {"gpus": 1}, "stages": {"a": {"command": "true"}}})
    with pytest.raises(UsageError) as info:
        config.load(cfgdir, "config", [override])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_quoted_unicode_overrides_and_values_with_shell_characters_are_data(tmp_path: Path) -> None:
    cfgdir = write_experiment(
        tmp_path, {"name": "x", "note": "", "stages": {"a": {"command": "echo ${note}", "per_trial": True}}}
    )
    exp = config.load(cfgdir, "config", ["note='héllo; $(reboot)'", "+tag='`id`'"])
    assert exp.config.note == "héllo; $(reboot)" and exp.config.tag == "`id`"
    exp = config.load(cfgdir, "config", ["note='a; b','$(x)'"])
    assert exp.axes[0].typed == ("a; b", "$(x)")


def test_a_missing_group_option_lists_the_choices(tmp_path: Path) -> None:
    cfgdir = write_experiment(tmp_path, {"defaults": ["_self_", {"model": "small"}], "stages": {"a": {"command": "t"}}})
    (cfgdir / "model").mkdir()
    for option in ("small", "large"):
        (cfgdir / "model" / f"{option}.yaml").write_text("width: 1\n")
    with pytest.raises(UsageError, match="config group model: no option 'huge'; choose one of large, small"):
        config.load(cfgdir, "config", ["model=huge"])


@pytest.mark.parametrize(
    ("value", "want"),
    [("4G", "4G"), ("512m", "512M"), (2048, "2048"), ("1T", "1T")],
)
def test_memory_sizes(value: object, want: str) -> None:
    assert units.memory(value, "m") == want
    assert units.megabytes(want) == {"4G": 4096, "512M": 512, "2048": 2048, "1T": 1024 * 1024}[want]


@pytest.mark.parametrize("value", ["lots", "4.5G", "-1G", True, 1.5, "4 G"])
def test_bad_memory_sizes(value: object) -> None:
    with pytest.raises(UsageError, match=r"m: .* is not a memory size"):
        units.memory(value, "m")


@pytest.mark.parametrize("value", ["soon", -1, 0, "0s", True, float("inf"), float("nan")])
def test_bad_durations(value: object) -> None:
    with pytest.raises(UsageError, match=r"^d: "):
        units.seconds(value, "d")


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (
            {"accounts": {"a": {"gpus": "4"}}},
            "accounts.a.gpus: expected a whole number from 0 to 4294967294 or unlimited (got '4')",
        ),
        (
            {"accounts": {"a": {"gpus": True}}},
            "accounts.a.gpus: expected a whole number from 0 to 4294967294 or unlimited",
        ),
        (
            {"accounts": {"a": {"gpu_hours": -2}}},
            "accounts.a.gpu_hours: expected a number from 0 to 1000000000 or unlimited",
        ),
        ({"accounts": {"a": {"users": {"bob": {"gpus": 1.5}}}}}, "accounts.a.users.bob.gpus: expected a whole number"),
        ({"accounts": {"a": {}}, "clusters": "x"}, "quota file: unknown field 'clusters' (known: accounts, cluster)"),
    ],
)
def test_quota_files_are_strict(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError) as info:
        quota.parse_file(doc)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_quota_file_values() -> None:
    parsed = quota.parse_file({"accounts": {"a": {"gpus": "unlimited", "gpu_hours": 1.5, "users": {"bob": None}}}})
    assert parsed.wanted == {("a", ""): {"gpus": None, "gpu_hours": 90}, ("a", "bob"): {}}


def test_argv_form_is_a_list_of_words() -> None:
    stage = parse_stage("train", {"argv": ["python", "train.py", "--lr=${lr}"]})
    assert stage.argv == ("python", "train.py", "--lr=${lr}") and stage.command is None
    assert "give exactly one of command, argv, callable or app" in refusal({"command": "x", "argv": ["x"]})
    assert "argv: expected a list of words" in refusal({"argv": []})
    assert hasattr(trialcfg, "stage_argv")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("seed=1,2,1", "sweep seed: the value 1 is given twice"),
        ("seed=range(1,2),1", "sweep seed: a range() or choice() cannot be one value among others"),
        ("seed=range(0,3,0)", "sweep seed: range() arg 3 must not be zero"),
        ("tag=a;b", "override 'tag=a;b': not valid in Hydra's override grammar"),
        ("a;b=1,2", "override 'a;b=1,2': 'a;b' is not a config key"),
    ],
)
def test_bad_sweeps_are_refused_in_words(tmp_path: Path, override: str, needle: str) -> None:
    cfgdir = write_experiment(tmp_path, {"seed": 0, "tag": "", "stages": {"a": {"command": "t", "per_trial": True}}})
    with pytest.raises(UsageError) as info:
        config.load(cfgdir, "config", [override])
    assert needle in str(info.value) and "Exception" not in str(info.value)


def test_a_sweep_may_add_a_key(tmp_path: Path) -> None:
    cfgdir = write_experiment(tmp_path, {"stages": {"a": {"command": "echo ${newkey}", "per_trial": True}}})
    exp = config.load(cfgdir, "config", ["+newkey=v0,v1"])
    trials = list(sweep.expand(exp.axes))
    assert [t.overrides for t in trials] == [("+newkey=v0",), ("+newkey=v1",)]
    config.validate_trials(exp, sweep.representatives(exp.axes))


@pytest.mark.parametrize(
    "body",
    [
        {"command": "x", "resources": {"time": "30m\n"}},
        {"command": "x", "resources": {"mem": "4G\n"}},
        {"command": "x", "resources": {"mem": "٤G"}},
        {"command": "x", "resources": {"partition": "gpu\n"}},
        {"callable": "json:dumps\n"},
    ],
)
def test_a_trailing_line_break_or_a_non_ascii_digit_is_refused(body: dict[str, Any]) -> None:
    refusal(body)


def test_names_are_short_enough_for_paths_and_job_names() -> None:
    with pytest.raises(UsageError, match="is not a stage name: use up to 64"):
        parse_stage("a" * 65, {"command": "x"})
    assert parse_stage("a" * 64, {"command": "x"}).name == "a" * 64
