"""Atomic writes: a reader sees the old file or the new one, the file is private, nothing is left behind."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from slurmflow.fsio import write_atomic, write_json_atomic


def test_write_replaces_whole_and_is_private(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    write_json_atomic(target, {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    write_atomic(tmp_path / "run.sh", "#!/bin/sh\n", mode=0o700)
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o700


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_json_atomic(target, {"x": object()})  # fails while encoding: nothing written
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "\udcff")  # fails while writing the temporary
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_concurrent_writers_never_leave_a_torn_file(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    docs = [{"writer": i, "pad": "x" * 50_000} for i in range(8)]
    threads = [threading.Thread(target=lambda d=d: [write_json_atomic(target, d) for _ in range(20)]) for d in docs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(target.read_text()) in docs
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
