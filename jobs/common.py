"""Helpers the example jobs share: where slurmflow says to read and write, and JSON files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def run_dir() -> Path:
    return Path(os.environ.get("SLURMFLOW_RUN_DIR", "."))


def trial_dir() -> Path:
    path = Path(os.environ.get("SLURMFLOW_TRIAL_DIR", "."))
    path.mkdir(parents=True, exist_ok=True)
    return path


def dataset_path() -> Path:
    return run_dir() / "data" / "dataset.json"


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a file, a crash never leaves one


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
