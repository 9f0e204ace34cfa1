"""Experiment composition and validation: every bad input is a one-line UsageError naming the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slurmflow.errors import UsageError
from slurmflow.experiment import config, sweep, trialcfg
from slurmflow.slurm import units
from slurmflow.slurm.types import DepKind

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    dest = tmp_path / "configs"
    shutil.copytree(REPO / "configs", dest)
    return dest


def edit(cfgdir: Path, old: str, new: str) -> None:
    path = cfgdir / "experiment" / "demo.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_demo_loads(cfgdir: Path) -> None:
    exp = config.load(cfgdir, "config", [])
    assert exp.name == "demo" and list(exp.stages) == ["prep", "train", "eval", "report", "summary", "on_failure"]
    assert [(a.key, a.values) for a in exp.axes] == [("model.lr", ("0.3", "0.1")), ("seed", ("0", "1", "2"))]
    train = exp.stages["train"]
    assert train.per_trial and train.deps[0].kind is DepKind.AFTER_OK and train.resources.time == "00:30:00"
    assert exp.stages["prep"].resources.time == "00:05:00"


def test_command_line_sweeps_replace_the_config_sweep(cfgdir: Path) -> None:
    exp = config.load(cfgdir, "config", ["model.lr=0.5,0.05,0.005", "seed=7"])
    assert [(a.key, a.values) for a in exp.axes] == [("model.lr", ("0.5", "0.05", "0.005"))]
    assert exp.base_overrides == ("seed=7",) and sweep.count(exp.axes) == 3
    exp = config.load(cfgdir, "config", ["data.n=range(100,400,100)"])
    assert sweep.count(exp.axes) == 2 * 3 * 3


def test_command_values_are_resolved_as_one_word_each(cfgdir: Path) -> None:
    exp = config.load(cfgdir, "config", ["+note=\"a b 'c' *\""])
    cfg = config.trial_config(cfgdir, "config", [*exp.base_overrides, "model.lr=0.1", "seed=2"])
    bash, flag, line = trialcfg.stage_argv("python x.py --lr ${model.lr} --n ${note}", None, cfg)
    assert (Path(bash).name, flag) == ("bash", "-c") and line.endswith("python x.py --lr '0.1' --n 'a b '\\''c'\\'' *'")
    assert trialcfg.stage_argv(None, ["python", "x.py", "--n=${note}"], cfg) == ["python", "x.py", "--n=a b 'c' *"]


@pytest.mark.parametrize(
    ("edit_from", "edit_to", "overrides", "needle"),
    [
        ("name: demo", "name: demo\nbad: [unclosed", [], "malformed YAML"),
        (None, None, ["modle.lr=0.1"], "override modle.lr: no such key"),
        (None, None, ["modle.lr=0.1,0.2"], "no such key"),
        ("after_ok: [prep]", "after_ok: [prepare]", [], "stages.train.after_ok: unknown stage 'prepare'"),
        ("after_ok: [prep]", "after_ok: [eval]", [], "dependency cycle"),
        ("after_corr: [train]", "after_corr: [prep]", [], "must both be per_trial"),
        (None, None, ["seed=range(0)"], "yields no values"),
        ("time: 30m", "time: half an hour", [], "stages.train.resources.time: time limit 'half an hour' is not valid"),
        (
            "partition: cpu, cpus: 1, time: 5m",
            "partition: 'cpu; rm -rf ~', cpus: 1, time: 5m",
            [],
            "stages.prep.resources.partition: 'cpu; rm -rf ~' is not a Slurm name",
        ),
        (None, None, ["data.n=1; rm"], "override 'data.n=1; rm'"),
        ("mem: 1G", "mem: lots", [], "stages.train.resources.mem"),
        (
            "per_trial: true\n    after_ok",
            "per_trial: true\n    afterok: [prep]\n    after_ok",
            [],
            "unknown field 'afterok'",
        ),
        ("command: python jobs/evaluate.py", "command: python 'jobs/evaluate.py", [], "balance the quotes"),
        ("command: python jobs/evaluate.py", "command: python jobs/evaluate.py ${nope.key}", [], "stages.eval.command"),
        (None, None, ["model.lr=interval(0,1)"], "interval"),
        (
            "mem: 1G, time: 30m",
            "mem: 1G, time: 30m, extra: ['-J', 'mine']",
            [],
            "stages.train.resources.extra: -J (--job-name) is set by slurmflow",
        ),
        (None, None, ["+stages.train.resources.extra=['--signal=USR2@60']"], "--signal is set by slurmflow"),
    ],
)
def test_bad_input(cfgdir: Path, edit_from: str | None, edit_to: str | None, overrides: list[str], needle: str) -> None:
    if edit_from is not None and edit_to is not None:
        edit(cfgdir, edit_from, edit_to)
    with pytest.raises(UsageError) as info:
        exp = config.load(cfgdir, "config", overrides)
        from slurmflow.planning import planner
        from slurmflow.slurm.types import ClusterInfo

        planner.plan(exp.name, exp.stages, sweep.count(exp.axes), ClusterInfo())
        config.validate_trials(exp, sweep.representatives(exp.axes))
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_missing_config_dir_and_name(tmp_path: Path, cfgdir: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        config.load(tmp_path / "nope", "config", [])
    with pytest.raises(UsageError, match="not found"):
        config.load(cfgdir, "nosuch", [])


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("30m", "00:30:00"),
        ("2h", "02:00:00"),
        ("90s", "00:01:30"),
        ("1d", "1-00:00:00"),
        ("1.5h", "01:30:00"),
        ("45", "45"),
        ("1-12:00:00", "1-12:00:00"),
        ("0", "UNLIMITED"),
        ("unlimited", "UNLIMITED"),
        ("INFINITE", "UNLIMITED"),
        ("0:00:00", "UNLIMITED"),
    ],
)
def test_slurm_time(text: str, want: str) -> None:
    assert units.time_limit(text, "t") == want


def test_checkpoint_and_retry_blocks(cfgdir: Path) -> None:
    exp = config.load(cfgdir, "config", [])
    cp = exp.stages["train"].checkpoint
    assert cp is not None and (cp.signal, cp.seconds, cp.grace, cp.max_restarts) == ("USR1", 120, 60, 3)
    assert exp.stages["train"].retry.infra == 2 and exp.stages["eval"].checkpoint is None
    exp = config.load(cfgdir, "config", ["~stages.train.checkpoint", "+stages.eval.retry={exit_codes: [75]}"])
    assert exp.stages["train"].checkpoint is None and exp.stages["eval"].retry.exit_codes == (75,)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("stages.train.checkpoint.signal=KILL", "is not one of USR1"),
        ("stages.train.checkpoint.seconds=-1", r"expected a whole number from 0 to 65535 \(got -1\)"),
        ("+stages.train.retry.exit_codes=[0]", r"exit_codes\[0\]: expected a whole number from 1 to 255"),
        ("+stages.train.retry.forever=1", "unknown field 'forever'"),
    ],
)
def test_bad_checkpoint_and_retry(cfgdir: Path, override: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        config.load(cfgdir, "config", [override])


def test_oom_retry_fields(cfgdir: Path) -> None:
    exp = config.load(
        cfgdir, "config", ["+stages.train.retry.oom_mem_factor=1.5", "+stages.train.retry.oom_mem_cap=8G"]
    )
    retry = exp.stages["train"].retry
    assert (retry.oom_mem_factor, retry.oom_mem_cap, retry.oom_retries) == (1.5, "8G", 2)
    with pytest.raises(UsageError, match="oom_mem_factor: expected a number above 1, at most 16"):
        config.load(cfgdir, "config", ["+stages.train.retry.oom_mem_factor=0.5"])
    with pytest.raises(UsageError, match=r"oom_mem_cap: .huge. is not a memory size"):
        config.load(cfgdir, "config", ["+stages.train.retry.oom_mem_cap=huge"])


def test_gpu_sampling_and_idle_rule(cfgdir: Path) -> None:
    train = config.load(cfgdir, "config", []).stages["train"]
    assert train.gpu.enabled and train.gpu.interval == 1.0 and train.gpu.source == "nvml"
    assert train.gpu_idle is not None and (train.gpu_idle.below, train.gpu_idle.for_s, train.gpu_idle.action) == (
        5.0,
        600.0,
        "warn",
    )
    exp = config.load(
        cfgdir,
        "config",
        [
            "stages.train.gpu_idle={below: 10, for: '1:30:00', action: cancel}",
            "+stages.train.gpu_idle.gpus=any",
            "stages.train.gpu_sampling=false",
        ],
    )
    rule = exp.stages["train"].gpu_idle
    assert rule is not None and (rule.below, rule.for_s, rule.action, rule.gpus) == (10.0, 5400.0, "cancel", "any")
    assert not exp.stages["train"].gpu.enabled


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("stages.train.gpu_idle.below=0", "below: expected a number above 0, at most 100"),
        ("stages.train.gpu_idle.for=soon", "is not a duration"),
        ("stages.train.gpu_idle.action=kill", "action: expected cancel or warn"),
        ("+stages.train.gpu_idle.every=1", "unknown field 'every'"),
        ("stages.train.gpu_sampling.interval=0.001", "from 0.1 s to 1 h"),
        ("+stages.train.gpu_sampling.source=fake:bogus", "is not nvml or fake:<phases>"),
        ("+stages.prep.gpu_idle={below: 5}", "the stage asks for no GPUs"),
        ("stages.train.gpu_idle={gpus: any}", "override stages.train.gpu_idle.gpus: no such key"),
    ],
)
def test_bad_gpu_settings(cfgdir: Path, override: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        config.load(cfgdir, "config", [override])
