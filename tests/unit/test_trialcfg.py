"""The job's Hydra-free trial config equals what Hydra composes, for every trial of a sweep."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from slurmflow.experiment import config, sweep, trialcfg
from slurmflow.run.launch import _axis_values

REPO = Path(__file__).resolve().parents[2]

TRICKY = """\
# @package _global_
name: tricky
sweep:
  model.lr: 1e-3,0.3,3
  note: "'a,b','c d',null,true"
  opts: "[1,2],[3]"
seed: 0
note: x
opts: []
model: {lr: 0.1, epochs: 3}
data:
  n: 10
  path: /d/${seed}
stages:
  one: {per_trial: true, command: "echo ${model.lr} ${note} ${data.path}"}
"""


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / "configs" / "experiment" / "tricky.yaml").write_text(TRICKY)
    return tmp_path / "configs"


@pytest.mark.parametrize("overrides", [[], ["experiment=tricky", "seed=range(2)", "model.epochs=9"]])
def test_every_trial_equals_hydras_composition(cfgdir: Path, tmp_path: Path, overrides: list[str]) -> None:
    exp = config.load(cfgdir, "config", overrides)
    axes = _axis_values(exp)
    assert axes is not None
    yaml = tmp_path / "experiment.yaml"
    yaml.write_text(config.to_yaml(exp.config))
    trials = list(sweep.expand(exp.axes))
    assert len(trials) == sweep.count(exp.axes) > 1
    for trial in trials:
        fast = trialcfg.build(yaml, trialcfg.trial_values([(k, v) for k, v in axes], trial.index))
        composed = config.trial_config(cfgdir, "config", [*exp.base_overrides, *trial.overrides])
        assert OmegaConf.to_container(fast) == OmegaConf.to_container(composed), trial
        assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(composed)
        assert OmegaConf.is_struct(fast) == OmegaConf.is_struct(composed)
        for stage in exp.stages.values():  # and so does every command line the job runs
            if stage.command is not None:
                line = trialcfg.stage_argv(stage.command, None, fast)
                assert line == trialcfg.stage_argv(stage.command, None, composed), stage.name


def test_a_sweep_over_a_config_group_keeps_composing(cfgdir: Path) -> None:
    (cfgdir / "optim").mkdir()
    for name in ("sgd", "adam"):
        (cfgdir / "optim" / f"{name}.yaml").write_text(f"name: {name}\n")
    exp = config.load(cfgdir, "config", ["+optim=sgd,adam"])
    assert _axis_values(exp) is None


def test_trial_index_to_values_in_multirun_order() -> None:
    axes: list[tuple[str, list[object]]] = [("a", [1, 2]), ("b", ["x", "y", "z"])]
    got = [trialcfg.trial_values(axes, i) for i in range(6)]
    assert got[0] == [("a", 1), ("b", "x")] and got[2] == [("a", 1), ("b", "z")] and got[3] == [("a", 2), ("b", "x")]
    with pytest.raises(ValueError, match="outside"):
        trialcfg.trial_values(axes, 6)


def test_a_trials_command_line_quotes_its_values() -> None:
    cfg = OmegaConf.create({"model": {"lr": 0.3}, "note": "c d", "data": {"path": "/d/${seed}"}, "seed": 1})
    argv = trialcfg.stage_argv("echo ${model.lr} ${note} ${data.path}", None, cfg)
    assert argv[1:] == ["-c", trialcfg.SHELL_PREAMBLE + "echo '0.3' 'c d' '/d/1'"]
    assert trialcfg.stage_argv(None, ["echo", "${note}", "x${seed}"], cfg) == ["echo", "c d", "x1"]


def test_values_that_json_would_change_are_not_taken_on_trust() -> None:
    assert trialcfg.json_exact(0.3) and trialcfg.json_exact([1, "a", None]) and trialcfg.json_exact({"k": True})
    assert not trialcfg.json_exact((1, 2)) and not trialcfg.json_exact(float("nan")) and not trialcfg.json_exact({1: 2})
