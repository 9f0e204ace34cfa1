"""Hydra's conventions in experiments (hydra.sweeper.params, hydra.job.chdir, hydra.sweep.*,
job-time interpolations), Hydra apps as stages, and the launcher plugin's parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from slurmflow.errors import UsageError
from slurmflow.experiment import appargs, config, sweep, trialcfg
from slurmflow.experiment.stages import parse_stage
from slurmflow.model import Trial
from slurmflow.rundir.store import RunStore
from tests.unit.test_config import cfgdir

__all__ = ["cfgdir"]  # the fixture, shared with test_config


def write(cfgdir: Path, text: str) -> None:
    (cfgdir / "experiment" / "h.yaml").write_text("# @package _global_\n" + text)


STAGES = "stages:\n  train:\n    per_trial: true\n    command: echo ${lr} ${seed}\n"


def test_hydra_sweeper_params_are_a_sweep_source_merged_with_the_sweep_block(cfgdir: Path) -> None:
    write(
        cfgdir,
        "lr: 0.1\nseed: 0\nsweep:\n  lr: [0.1, 0.2]\nhydra:\n  sweeper:\n    params:\n      seed: range(3)\n" + STAGES,
    )
    exp = config.load(cfgdir, "config", ["experiment=h"])
    assert [(a.key, a.values) for a in exp.axes] == [("lr", ("0.1", "0.2")), ("seed", ("0", "1", "2"))]
    assert "hydra" not in exp.config  # the task's config, as Hydra gives an app
    # The command line replaces a config's sweep of a key, as in Hydra's --multirun.
    exp = config.load(cfgdir, "config", ["experiment=h", "seed=7"])
    assert [(a.key, a.values) for a in exp.axes] == [("lr", ("0.1", "0.2"))]


def test_a_key_swept_in_both_places_is_refused_in_one_line(cfgdir: Path) -> None:
    write(
        cfgdir, "lr: 0.1\nseed: 0\nsweep:\n  lr: [0.1]\nhydra:\n  sweeper:\n    params:\n      lr: 0.3,0.4\n" + STAGES
    )
    with pytest.raises(UsageError) as err:
        config.load(cfgdir, "config", ["experiment=h"])
    assert str(err.value) == "sweep.lr and hydra.sweeper.params.lr: the key is swept in both places; keep one"


def test_job_time_interpolations_plan_and_the_resolvers_come_back(
    cfgdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLURMFLOW_TRIAL_DIR", raising=False)
    write(
        cfgdir,
        "lr: 0.1\nseed: 0\nout: ${oc.env:SLURMFLOW_TRIAL_DIR}\nsweep:\n  lr: [0.1, 0.2]\nstages:\n  train:\n"
        "    per_trial: true\n    command: python app.py lr=${lr} hydra.run.dir=${oc.env:SLURMFLOW_TRIAL_DIR} o=${out}\n",
    )
    exp = config.load(cfgdir, "config", ["experiment=h"])
    config.validate_trials(exp, sweep.representatives(exp.axes))  # the launcher does not resolve them
    # ... and afterwards oc.env is OmegaConf's own again: an unset variable is an error, a set one its value.
    monkeypatch.setenv("SLURMFLOW_TRIAL_DIR", "/runs/x/trials/1")
    assert OmegaConf.create({"v": "${oc.env:SLURMFLOW_TRIAL_DIR}"}).v == "/runs/x/trials/1"
    cfg = trialcfg.build_from(exp.config, [("lr", 0.2)])
    words = trialcfg.stage_argv(exp.stages["train"].command, None, cfg)
    assert words[2].endswith("python app.py lr='0.2' hydra.run.dir='/runs/x/trials/1' o='/runs/x/trials/1'")


def test_hydra_run_layout_settings(cfgdir: Path, tmp_path: Path) -> None:
    write(
        cfgdir,
        "lr: 0.1\nseed: 0\nhydra:\n  job:\n    chdir: true\n  sweep:\n    dir: " + str(tmp_path / "r") + "\n" + STAGES,
    )
    exp = config.load(cfgdir, "config", ["experiment=h"])
    assert exp.hydra.chdir and exp.hydra.sweep_dir == str(tmp_path / "r")
    assert "mode: MULTIRUN" in exp.hydra.multirun_yaml or "sweeper:" in exp.hydra.multirun_yaml
    write(cfgdir, "lr: 0.1\nseed: 0\nhydra:\n  sweep:\n    subdir: ${hydra.job.override_dirname}\n" + STAGES)
    with pytest.raises(UsageError, match=r"^hydra.sweep.subdir: .*trials/<trial number>"):
        config.load(cfgdir, "config", ["experiment=h"])


def test_an_app_stage_and_its_refusals() -> None:
    stage = parse_stage("train", {"app": "jobs/train.py", "overrides": ["lr=${lr}"], "per_trial": True})
    assert stage.app == "jobs/train.py" and stage.app_overrides == ("lr=${lr}",) and stage.command is None
    assert parse_stage("t", {"app": "pkg.train"}).app == "pkg.train"

    def refusal(body: dict[str, object]) -> str:
        with pytest.raises(UsageError) as err:
            parse_stage("train", body)
        return str(err.value)

    assert "give exactly one of command, argv, callable or app" in refusal({"app": "a.py", "command": "x"})
    assert refusal({"command": "x", "overrides": ["a=1"]}).startswith("stages.train.overrides: only a Hydra app")
    assert refusal({"app": "not a module"}).startswith("stages.train.app: 'not a module' is not")


def test_an_app_runs_with_its_overrides_typed_and_its_output_directory() -> None:
    cfg = OmegaConf.create({"lr": 0.1, "seed": 3, "model": {"w": [1, "x,y"]}})
    words = appargs.app_argv(
        "jobs/train.py",
        ["lr=${lr}", "+tag=s${seed}", "m=${model}", "x=${oc.env:HOME}", "plain=1"],
        cfg,
        "/r/t/1/train",
        "py",
    )
    assert words == [
        "py",
        "jobs/train.py",
        "lr=0.1",
        "+tag='s3'",
        "m={w:[1,'x,y']}",
        "x=${oc.env:HOME}",  # for the app's Hydra, in the job
        "plain=1",
        "hydra.run.dir='/r/t/1/train'",
    ]
    assert appargs.app_argv("pkg.train", [], cfg, "/o", "py")[:3] == ["py", "-m", "pkg.train"]


HOSTILE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\0\n\r"), max_size=30)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(HOSTILE)
def test_any_value_reaches_the_app_exactly(value: str) -> None:
    """A value slurmflow inserts into an app's override is data: the app's Hydra parses it back to
    exactly that string (quotes, commas, backslashes, ${...}, spaces)."""
    cfg = OmegaConf.create({"v": "x"})
    cfg.v = value.replace("${", "\\${")  # the config holds the literal text
    try:
        expected = cfg.v
    except OmegaConfBaseException:  # backslashes before the ${ made it an interpolation again
        assume(False)
    (word,) = [w for w in appargs.app_argv("a.py", ["k=${v}"], cfg, "/o", "py") if w.startswith("k=")]
    override = OverridesParser.create().parse_override(word)
    target = OmegaConf.create({"k": 0})
    OmegaConf.update(target, "k", override.value(), merge=True)
    assert target.k == expected


def test_trial_directories_are_named_by_trial_number_and_old_runs_keep_theirs(tmp_path: Path) -> None:
    trial = Trial(7, "abcdef012345", ("lr=1",))
    new = RunStore.create(tmp_path, "new")
    new.write_json("launch.json", {"trial_dirs": "number"})
    assert new.trial_dir(trial) == new.root / "trials" / "7"
    old = RunStore.create(tmp_path, "old")
    old.write_json("launch.json", {"config_name": "config"})
    assert old.trial_dir(trial) == old.root / "trials" / "abcdef012345"


def test_a_trials_config_is_resolved_without_the_sweep_block(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"a": 1, "b": "${a}", "sweep": {"a": [1, 2]}, "h": "${hydra:runtime.output_dir}"})
    text = trialcfg.resolved_yaml(OmegaConf.create({"a": 1, "b": "${a}", "sweep": {"a": [1, 2]}}))
    assert text == "a: 1\nb: 1\n"
    assert trialcfg.resolved_yaml(cfg).startswith("# not resolved: ")
    trialcfg.write_hydra_dir(tmp_path / ".hydra", cfg, ["a=1"])
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == "- a=1\n"
    assert "sweep" not in (tmp_path / ".hydra" / "config.yaml").read_text()


def test_the_launchers_parameters_keep_the_submitit_launchers_meanings() -> None:
    from hydra_plugins.slurmflow_launcher import _launch

    stage = _launch.stage(
        "train",
        {
            "timeout_min": 90,
            "cpus_per_task": 4,
            "gpus_per_node": 2,
            "mem_gb": 16,
            "partition": "gpu",
            "qos": "high",
            "account": "ml",
            "constraint": "a100",
            "exclude": "node[1-2]",
            "array_parallelism": 8,
            "signal_delay_s": 90,
            "max_num_timeout": 2,
            "additional_parameters": {"mail_type": "END", "requeue": True},
            "setup": ["export FOO=${HOME}", "module load cuda"],
        },
    )
    r = stage.resources
    assert (r.time, r.cpus, r.gpus, r.mem, r.partition, r.qos, r.account, r.constraint) == (
        "90",
        4,
        2,
        "16G",
        "gpu",
        "high",
        "ml",
        "a100",
    )
    assert r.extra == ("--exclude=node[1-2]", "--mail-type=END", "--requeue")
    assert stage.max_parallel == 8 and stage.per_trial
    assert stage.checkpoint is not None and (stage.checkpoint.signal, stage.checkpoint.seconds) == ("USR2", 90)
    assert stage.checkpoint.max_restarts == 2
    assert stage.command == "export FOO=\\${HOME}\nmodule load cuda\nexec python -m slurmflow.experiment.hydra_job"
    plain = _launch.stage("app", {"timeout_min": 60})
    assert plain.argv == ("python", "-m", "slurmflow.experiment.hydra_job") and plain.checkpoint is None
    with pytest.raises(UsageError, match=r"^hydra.launcher.nodes=2: slurmflow runs a Hydra job as one task"):
        _launch.stage("app", {"nodes": 2})
    with pytest.raises(UsageError, match=r"^hydra.launcher.additional_parameters: --job-name is set by slurmflow"):
        _launch.stage("app", {"additional_parameters": {"job_name": "x"}})


def test_hydra_sweeper_params_read_as_hydra_reads_them(cfgdir: Path) -> None:
    write(
        cfgdir,
        "lr: 0.1\nseed: 0\nlayers: [1]\nhydra:\n  sweeper:\n    params:\n      lr: 0.1,0.2\n      seed: range(2)\n"
        "      layers: '[4, 8]'\n" + STAGES,
    )
    exp = config.load(cfgdir, "config", ["experiment=h"])
    # layers: one list value, as Hydra's BasicSweeper writes key=value; 4 trials, not 8.
    assert [(a.key, a.values) for a in exp.axes] == [
        ("lr", ("0.1", "0.2")),
        ("seed", ("0", "1")),
        ("layers", ("[4,8]",)),
    ]
    # A key given on the command line keeps its place (trial N is Hydra's job N); a fixed value ends its sweep.
    exp = config.load(cfgdir, "config", ["experiment=h", "lr=1,2,3", "seed=5", "+extra=a,b"])
    assert [(a.key, a.values) for a in exp.axes] == [
        ("lr", ("1", "2", "3")),
        ("layers", ("[4,8]",)),
        ("extra", ("a", "b")),
    ]


def test_hydra_interpolations_in_a_stage_command_are_refused_at_plan_time(cfgdir: Path) -> None:
    write(cfgdir, "lr: 0.1\nseed: 0\nstages:\n  train:\n    per_trial: true\n    argv: [echo, '${hydra:job.name}']\n")
    exp = config.load(cfgdir, "config", ["experiment=h"])
    with pytest.raises(
        UsageError, match=r"^stages.train.argv: cannot resolve \$\{hydra:job.name\}: .*known only to a Hydra app"
    ):
        config.validate_trials(exp, sweep.representatives(exp.axes))
    # In an app stage's overrides it reaches the app's Hydra as written.
    write(cfgdir, "lr: 0.1\nseed: 0\nstages:\n  t:\n    app: a.py\n    overrides: ['+tag=${hydra:job.name}']\n")
    exp = config.load(cfgdir, "config", ["experiment=h"])
    config.validate_trials(exp, sweep.representatives(exp.axes))


def test_a_job_composes_from_the_runs_snapshot_not_the_live_config(tmp_path: Path) -> None:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    from slurmflow.experiment import hydra_job

    live, snap = tmp_path / "conf", tmp_path / "snapshot"
    for d, epochs in ((live, 99), (snap, 3)):
        d.mkdir()
        (d / "config.yaml").write_text(f"epochs: {epochs}\n")
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(live)))
    assert loader.load_configuration("config", [], RunMode.RUN).epochs == 99
    hydra_job.use_snapshot(loader, snap)
    assert loader.load_configuration("config", [], RunMode.RUN).epochs == 3


def test_launcher_parameters_slurmflow_cannot_honour_are_refused_naming_them() -> None:
    from hydra_plugins.slurmflow_launcher import _launch

    assert _launch.stage("app", {"gres": "gpu:2"}).resources.gpus == 2
    for params, needle in (
        ({"gres": "gpu:a100:1"}, "hydra.launcher.gres=gpu:a100:1: only gpu:N is understood"),
        ({"gres": "gpu:2", "gpus_per_node": 1}, "hydra.launcher.gres=gpu:2 and gpus_per_node=1 disagree"),
        ({"comment": "hi"}, "hydra.launcher.comment: slurmflow keeps a job's comment"),
        ({"srun_args": ["-v"]}, "hydra.launcher.srun_args: a Hydra job runs as one task"),
        ({"timeout_min": "soon"}, "hydra.launcher.timeout_min: 'soon' is not a whole number"),
        ({"mem_gb": -1}, "hydra.launcher.mem_gb: -1 is not a whole number"),
    ):
        with pytest.raises(UsageError) as err:
            _launch.stage("app", params)
        assert needle in str(err.value), str(err.value)
    for params, needle in (
        ({"backend": "lcoal"}, "hydra.launcher.backend=lcoal: choose one of auto, slurm, local"),
        ({"validate": "some"}, "hydra.launcher.validate=some: choose one of groups, full"),
    ):
        with pytest.raises(_launch.LaunchError, match=needle):
            _launch.check_choices(params)
    assert _launch.in_launcher_terms("stages.app.resources.gpus: 9 GPUs; try --local-gpus", "app") == (
        "hydra.launcher.gpus_per_node: 9 GPUs; try hydra.launcher.local_gpus"
    )
