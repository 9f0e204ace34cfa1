"""The run directory: snapshot, manifest, plan, scripts, provenance, and an append-only event log.

runs/<run_id>/            mode 0700: private to its owner
  config/                 the config tree's YAML files, copied at launch (no runs, data or .git)
  experiment.yaml         the composed experiment (sweep keys at their defaults)
  launch.json             config name, base overrides, working directory, python
  trials.jsonl            one trial a line; trials.idx holds each line's byte offset
  plan.json               the DAG
  scripts/<node>.sh       what was submitted
  provenance.json         git commit and diff, packages, Slurm version, user, host, time
  events.jsonl            intents, submissions, reconciliations (append-only, fsync'd)
  logs/<node>/            Slurm's stdout/stderr per task
  trials/<trial number>/  what each trial's tasks write (config, .hydra/, status, metrics)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from slurmflow.errors import UsageError
from slurmflow.fsio import write_atomic
from slurmflow.model import (
    Checkpoint,
    Edge,
    GpuSampling,
    IdleRule,
    JobNode,
    Plan,
    Resources,
    RetryPolicy,
    Stage,
    StageDep,
    Trial,
)
from slurmflow.rundir import events
from slurmflow.rundir.events import PIPE_BUF as PIPE_BUF
from slurmflow.rundir.events import Event
from slurmflow.rundir.events import fit_line as fit_line
from slurmflow.rundir.state import RunState as RunState
from slurmflow.rundir.state import reduce as reduce
from slurmflow.slurm.types import DepKind

# The config snapshot holds config files only. With `-cd .` at a project root (a common Hydra
# layout) a copy of the whole directory took the project, data and earlier runs with it: each run
# nested the last (until a path grew too long) and a 30 MB data file filled 77 GB in two launches.
SNAPSHOT_SUFFIXES = (".yaml", ".yml")
SNAPSHOT_MAX_BYTES = 20 * 1024 * 1024
SNAPSHOT_MAX_FILES = 5000
_RUN_MARKERS = ("events.jsonl", "launch.json", "trials.jsonl")  # beside plan.json: a run directory


def _is_skipped_dir(path: Path, skip: set[Path]) -> bool:
    """Directories that hold no experiment config: hidden ones (.git, .venv), caches, virtual
    environments (their packages ship YAML), the runs directory, and any run directory."""
    if path.name.startswith(".") or path.name == "__pycache__" or path in skip:  # a link's target too
        return True
    if (path / "pyvenv.cfg").is_file():
        return True
    return (path / "plan.json").is_file() and any((path / m).exists() for m in _RUN_MARKERS)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def config_files(config_dir: Path, *, skip: Iterable[Path] = ()) -> list[tuple[Path, Path]]:
    """The YAML files of a config tree as (path in the snapshot, file to copy), in a stable order.
    A symbolic link counts only where it points inside the tree, under its own name (a config may
    name either); one to a directory it sits in is not followed, which would loop. Past
    SNAPSHOT_MAX_FILES or SNAPSHOT_MAX_BYTES: a UsageError."""
    top = config_dir.resolve()
    skipped = {p.resolve() for p in skip}
    found: list[tuple[Path, Path]] = []
    total = 0
    # (directory, its path in the snapshot, the directories it sits in): a link back to one is a loop.
    stack: list[tuple[Path, Path, frozenset[Path]]] = [(top, Path(), frozenset({top}))]
    while stack:
        real, rel, chain = stack.pop()
        try:
            with os.scandir(real) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # unreadable: nothing in it can be composed either
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden: .git, .venv, .pre-commit-config.yaml
            path = Path(entry.path).resolve() if entry.is_symlink() else Path(entry.path)
            if not path.is_relative_to(top):
                continue
            if path.is_dir():
                if path not in chain and not _is_skipped_dir(path, skipped):
                    stack.append((path, rel / entry.name, chain | {path}))
            elif path.is_file() and entry.name.endswith(SNAPSHOT_SUFFIXES):
                found.append((rel / entry.name, path))
                total += path.stat().st_size
                if len(found) > SNAPSHOT_MAX_FILES:
                    raise UsageError(
                        f"config directory {top}: more than {SNAPSHOT_MAX_FILES} YAML files to snapshot "
                        "into the run: point -cd/--config-dir at the directory that holds the experiment's configs"
                    )
    if total > SNAPSHOT_MAX_BYTES:
        raise UsageError(
            f"config directory {top}: its YAML files come to {_size(total)}, more than the "
            f"{_size(SNAPSHOT_MAX_BYTES)} a run's config snapshot holds: point -cd/--config-dir at the "
            "directory that holds the experiment's configs"
        )
    return sorted(found)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    doc = asdict(plan)
    doc["stages"] = {k: asdict(v) for k, v in plan.stages.items()}
    out: dict[str, Any] = json.loads(json.dumps(doc, default=lambda o: o.value))  # enums -> values
    return out


def plan_from_dict(doc: Mapping[str, Any]) -> Plan:
    stages = {
        name: Stage(
            **{
                **s,
                "deps": tuple(StageDep(DepKind(d["kind"]), d["stage"]) for d in s["deps"]),
                "resources": Resources(**{**s["resources"], "extra": tuple(s["resources"]["extra"])}),
                "retry": RetryPolicy(**{**s["retry"], "exit_codes": tuple(s["retry"]["exit_codes"])}),
                "checkpoint": Checkpoint(**s["checkpoint"]) if s.get("checkpoint") else None,
                "gpu": GpuSampling(**s.get("gpu", {})),
                "gpu_idle": IdleRule(**s["gpu_idle"]) if s.get("gpu_idle") else None,
            }
        )
        for name, s in doc["stages"].items()
    }
    nodes = tuple(
        JobNode(**{**n, "edges": tuple(Edge(DepKind(e["kind"]), e["parent"]) for e in n["edges"])})
        for n in doc["nodes"]
    )
    return Plan(doc["experiment"], stages, nodes, doc["n_trials"], doc["gpu_hours"], tuple(doc["gpu_hours_unbounded"]))


def _trial(doc: Mapping[str, Any]) -> Trial:
    values = doc.get("values")
    return Trial(
        doc["index"], doc["id"], tuple(doc["overrides"]), None if values is None else tuple((k, v) for k, v in values)
    )


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_number: bool | None = None

    @classmethod
    def create(cls, runs_dir: Path, run_id: str) -> RunStore:
        runs_dir.mkdir(parents=True, exist_ok=True)
        root = runs_dir / run_id
        old = os.umask(0o077)
        try:
            root.mkdir(mode=0o700)
            for sub in ("scripts", "logs", "trials"):
                (root / sub).mkdir(mode=0o700)
        finally:
            os.umask(old)
        os.chmod(root, 0o700)  # whatever the umask or the parent's ACLs say
        return cls(root)

    @classmethod
    def open(cls, run: str, runs_dir: Path) -> RunStore:
        for candidate in (Path(run), runs_dir / run):
            if (candidate / "plan.json").is_file():
                return cls(candidate.resolve())
        raise UsageError(f"no run {run!r} in {runs_dir} (nor a run directory at that path): check the run id")

    @property
    def run_id(self) -> str:
        return self.root.name

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # Where things are in a run directory, decided here (a node's log file: JobNode.log_file).

    @property
    def logs_dir(self) -> Path:
        """Each node's logs (`<node>/<task>.out`), and the monitor job's (`monitor.out`)."""
        return self.root / "logs"

    @property
    def local_dir(self) -> Path:
        """The local engine's queue and supervisor (backends.local_run), on local runs only."""
        return self.root / "local"

    @property
    def capabilities_path(self) -> Path:
        """What the cluster's commands accept, probed once at launch."""
        return self.root / "capabilities.json"

    def write_text(self, name: str, text: str, *, executable: bool = False) -> Path:
        path = self.root / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return write_atomic(path, text, mode=0o700 if executable else 0o600)

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return write_atomic(path, data)

    def trial_dir(self, trial: Trial) -> Path:
        """What a trial's tasks write (status, config, metrics, GPU samples): trials/<trial
        number>, the number plan, status, logs and gpu show. Runs launched before trial
        directories were numbered (no "trial_dirs" in launch.json) keep theirs, named by id."""
        if self._by_number is None:
            launch = self.root / "launch.json"
            self._by_number = not launch.exists() or json.loads(launch.read_text()).get("trial_dirs") == "number"
        return self.root / "trials" / (str(trial.index) if self._by_number else trial.id)

    def has_search(self) -> bool:
        """Whether the run is a `search:` (its launch.json says so); False for a run directory
        without one (a launch that stopped before writing it)."""
        try:
            return "search" in self.read_json("launch.json")
        except FileNotFoundError:
            return False

    def write_json(self, name: str, doc: Any) -> Path:
        # Insertion order is meaningful (stages and nodes in plan order): never sort keys.
        return self.write_text(name, json.dumps(doc, indent=2) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads((self.root / name).read_text())

    def snapshot_config(self, config_dir: Path, *, runs_dir: Path | None = None) -> Path:
        """Copy the config tree's YAML files into the run (the job composes its trial from them).
        A past-the-cap tree is refused before anything is copied, and the run directory, still
        empty, is removed: nothing is left of a launch that cannot proceed."""
        dest = self.root / "config"
        try:
            files = config_files(config_dir, skip=(self.root, *(() if runs_dir is None else (runs_dir,))))
        except UsageError:
            self._discard_if_empty()
            raise
        old = os.umask(0o077)
        try:
            dest.mkdir(mode=0o700)
            for rel, src in files:
                target = dest / rel
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                shutil.copyfile(src, target)  # the content: a link inside the tree becomes a file
        finally:
            os.umask(old)
        return dest

    def _discard_if_empty(self) -> None:
        for sub in ("scripts", "logs", "trials"):
            with contextlib.suppress(OSError):  # rmdir removes only an empty directory
                (self.root / sub).rmdir()
        with contextlib.suppress(OSError):
            self.root.rmdir()

    # --- trial manifest: one JSON line per trial, offsets for O(1) lookup in each task ---------

    def write_manifest(self, trials: Iterable[Trial]) -> int:
        with open(self.root / "trials.jsonl", "wb") as out, open(self.root / "trials.idx", "wb") as idx:
            return self._add_trials(trials, out, idx, 0)

    def append_trials(self, trials: Iterable[Trial]) -> int:
        """Add trials at the end of the manifest (a search's new trials), each line before its
        offset, so a task reading the manifest meanwhile never sees an offset without its line.
        A line torn by a crash (no offset yet) is cut off first. Returns the trial count."""
        with open(self.root / "trials.idx", "r+b") as idx, open(self.root / "trials.jsonl", "r+b") as out:
            idx.seek(0, os.SEEK_END)
            count = idx.tell() // array("Q").itemsize
            idx.truncate(count * array("Q").itemsize)  # a torn offset
            end = 0
            if count:
                idx.seek((count - 1) * array("Q").itemsize)
                last = array("Q")
                last.frombytes(idx.read(last.itemsize))
                out.seek(last[0])
                end = last[0] + len(out.readline())
            out.truncate(end)
            out.seek(end)
            idx.seek(count * array("Q").itemsize)
            return count + self._add_trials(trials, out, idx, end)

    @staticmethod
    def _add_trials(trials: Iterable[Trial], out: IO[bytes], idx: IO[bytes], pos: int) -> int:
        n = 0
        for t in trials:
            doc: dict[str, Any] = {"index": t.index, "id": t.id, "overrides": list(t.overrides)}
            if t.values is not None:
                doc["values"] = [[k, v] for k, v in t.values]
            line = json.dumps(doc).encode() + b"\n"
            out.write(line)
            out.flush()
            idx.write(array("Q", [pos]).tobytes())
            pos += len(line)
            n += 1
        out.flush()
        os.fsync(out.fileno())
        idx.flush()
        os.fsync(idx.fileno())
        return n

    def trial_count(self) -> int:
        try:
            return (self.root / "trials.idx").stat().st_size // array("Q").itemsize
        except FileNotFoundError:
            return 0

    def read_trial(self, index: int) -> Trial:
        item = array("Q")
        with open(self.root / "trials.idx", "rb") as idx:
            idx.seek(index * item.itemsize)
            item.frombytes(idx.read(item.itemsize))
        with open(self.root / "trials.jsonl", "rb") as f:
            f.seek(item[0])
            doc = json.loads(f.readline())
        return _trial(doc)

    def trials(self) -> Iterator[Trial]:
        with open(self.root / "trials.jsonl") as f:
            for line in f:
                yield _trial(json.loads(line))

    def plan(self) -> Plan:
        return plan_from_dict(self.read_json("plan.json"))

    # --- event log ------------------------------------------------------------------------------

    def append(self, event: Event | Mapping[str, Any]) -> None:
        """Append one event. A plain mapping (an `event` key and the kind's fields) is validated as
        a line of the log would be, so a misspelt kind or a field of the wrong type raises
        DecodeError here instead of becoming a line no reader can use."""
        if not isinstance(event, events.EventBase):
            event = events.from_mapping(event)
        # One write(2) with O_APPEND, at most PIPE_BUF bytes: tasks on many nodes append to this
        # log at once, and a write that size is never interleaved with another (POSIX).
        line = fit_line(event)
        fd = os.open(self.root / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)  # an intent must be on disk before the sbatch it announces
        finally:
            os.close(fd)

    def events(self) -> list[Event]:
        return self.read_events()[0]

    def read_events(self) -> tuple[list[Event], list[int]]:
        """The events, and the numbers of the lines that could not be read (a torn write after a
        crash, a file edited by hand, a kind or version this slurmflow does not know): status
        reports those, nothing is dropped silently."""
        try:
            data = (self.root / "events.jsonl").read_bytes()
        except FileNotFoundError:
            return [], []
        out: list[Event] = []
        bad: list[int] = []
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                out.append(events.decode(line))
            except events.DecodeError:
                bad.append(number)
        return out, bad

    def state(self) -> RunState:
        return reduce(self.events())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One submitter per run: a second `resume` while one runs would submit twice."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise UsageError(f"run {self.run_id} is being submitted by another process; wait for it") from exc
            yield
        finally:
            os.close(fd)
