"""Writing files that other processes read while they change (run state, task status, caches)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str | bytes, *, mode: int = 0o600) -> Path:
    """Write `text` so that a reader sees the old file or the new one, never a part of either: a
    temporary file beside it (one per process and thread, so concurrent writers never share one),
    then a rename. `mode` is set on creation: a run's files are private to their owner."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        if isinstance(text, bytes):
            with os.fdopen(fd, "wb") as fb:
                fb.write(text)
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        os.chmod(tmp, mode)  # O_CREAT's mode passes through the umask; the caller's is meant
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, doc: Any, *, compact: bool = False) -> Path:
    text = json.dumps(doc, separators=(",", ":")) if compact else json.dumps(doc, indent=2) + "\n"
    return write_atomic(path, text)
