"""The plan as a tree stays a screenful whatever the sweep's size."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from rich.console import Console

from slurmflow.backends import FakeSlurm
from slurmflow.cli import views
from slurmflow.run.launch import prepare

REPO = Path(__file__).resolve().parents[2]


def test_a_plan_of_thousands_of_chunks_prints_in_a_few_lines(tmp_path: Path) -> None:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    prep = prepare(tmp_path / "configs", "config", ["seed=range(5000)"], FakeSlurm().cluster_info(), max_array_size=10)
    assert len(prep.plan.nodes) == 2004
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(views.plan_tree(prep))
    text = console.export_text()
    assert len(text.splitlines()) < 40, text
    assert "afterany:eval.0 ... eval.999 (1,000 arrays)" in text  # the fan-in: one line, not 1,000
    assert "afternotok:train.0 ... train.999 (1,000 arrays)" in text
