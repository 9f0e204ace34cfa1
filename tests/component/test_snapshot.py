"""The run's config snapshot holds the config tree's YAML files, whatever sits beside them.

`slurmflow launch -cd .` at a project root is a common Hydra layout: the snapshot once copied the
whole project into each run, earlier runs included (nesting until it died, or filling the disk).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slurmflow.backends import FakeSlurm
from slurmflow.errors import UsageError
from slurmflow.experiment import config
from slurmflow.run.launch import prepare, write_run
from slurmflow.rundir import store
from slurmflow.rundir.store import RunStore

CONFIG = """\
defaults:
  - model: small
  - _self_
name: proj
seed: 0
sweep:
  model: small,big
  seed: 0,1
stages:
  train:
    per_trial: true
    command: python train.py --width ${model.width} --seed ${seed}
    resources: {cpus: 1, time: 5m}
"""


def tree_size(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project root holding its configs, a large data file, a .git folder, an earlier run and a
    virtual environment, as a researcher's checkout does."""
    root = tmp_path / "proj"
    (root / "model").mkdir(parents=True)
    (root / "config.yaml").write_text(CONFIG)
    (root / "model" / "small.yaml").write_text("width: 8\n")
    (root / "model" / "big.yaml").write_text("width: 512\n")
    (root / "model" / "tiny.yml").write_text("width: 2\n")
    (root / "train.py").write_text("print('train')\n")
    with open(root / "data.bin", "wb") as f:  # 30 MB beside the configs (sparse: cheap to make)
        f.truncate(30 * 1024 * 1024)
    (root / "data").mkdir()
    (root / "data" / "big.yaml").write_text("rows: 3\n")  # YAML anywhere in the tree is kept
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "config.yaml").write_text("hidden: true\n")
    (root / ".pre-commit-config.yaml").write_text("repos: []\n")
    old = root / "old-runs" / "proj-20240101-000000-abcd"  # a run outside the configured runs dir
    (old / "config").mkdir(parents=True)
    (old / "config" / "config.yaml").write_text(CONFIG)
    (old / "plan.json").write_text("{}\n")
    (old / "events.jsonl").write_text("")
    (root / ".venv").mkdir()
    (root / "venv" / "lib").mkdir(parents=True)
    (root / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "venv" / "lib" / "conf.yaml").write_text("a: 1\n")
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("secret: 1\n")
    (root / "leak.yaml").symlink_to(outside)
    (root / "loop").symlink_to(root)
    (root / "alias").symlink_to(root / "model")  # a link inside the tree keeps its name
    (root / "model" / "default.yaml").symlink_to(root / "model" / "small.yaml")
    (root / "a").mkdir()
    (root / "b").mkdir()
    (root / "a" / "to-b").symlink_to(root / "b")  # a cycle of two links
    (root / "b" / "to-a").symlink_to(root / "a")
    return root


def launch(root: Path) -> RunStore:
    fake = FakeSlurm()
    prep = prepare(root, "config", [], fake.cluster_info(), cwd=root)
    return write_run(prep, root / "runs", cwd=root, python="/usr/bin/python3", argv=["slurmflow", "launch", "-cd", "."])


def test_launching_twice_from_a_project_root_snapshots_only_its_configs(project: Path) -> None:
    first = launch(project)
    second = launch(project)
    for run in (first, second):
        assert tree_size(run.root) < 1024 * 1024, run.root
        snap = run.path("config")
        files = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
        model = ["big.yaml", "default.yaml", "small.yaml", "tiny.yml"]
        assert files == sorted(
            ["config.yaml", "data/big.yaml", *(f"{d}/{f}" for d in ("alias", "model") for f in model)]
        )
        assert not any(p.is_symlink() for p in snap.rglob("*"))
    # The job composes its trial from the snapshot, config groups in sub-directories included.
    cfg = config.trial_config(second.path("config"), "config", ["model=big", "seed=1"])
    assert cfg.model.width == 512 and cfg.seed == 1
    assert config.trial_config(second.path("config"), "config", []).model.width == 8


def test_a_snapshot_past_the_cap_is_refused_and_leaves_no_run(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(store, "SNAPSHOT_MAX_BYTES", 16)
    with pytest.raises(UsageError) as info:
        launch(project)
    message = str(info.value)
    assert str(project) in message and "point -cd/--config-dir at the directory" in message
    assert "\n" not in message
    assert not list((project / "runs").iterdir())  # nothing written


def test_too_many_config_files_are_refused(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "SNAPSHOT_MAX_FILES", 3)
    with pytest.raises(UsageError, match=r"more than 3 YAML files"):  # the tree holds 10
        launch(project)


def test_the_configured_runs_dir_is_skipped_wherever_it_is(project: Path) -> None:
    """A runs directory holding no run yet (and named anything) is still never copied."""
    (project / "results").mkdir()
    (project / "results" / "stray.yaml").write_text("a: 1\n")
    fake = FakeSlurm()
    prep = prepare(project, "config", [], fake.cluster_info(), cwd=project)
    run = write_run(prep, project / "results", cwd=project, python="python3", argv=["slurmflow"])
    assert not (run.path("config") / "results").exists()
    assert os.path.isfile(run.path("config", "model", "big.yaml"))
