"""A handle on the mini Slurm cluster (docker/slurm-cluster) for tests: slurmflow's own and any
other project's. It starts the cluster (or reuses a running one of the same version and shape),
runs commands in it as a named user, submits jobs and waits for them, reads Slurm's accounting,
and injects what goes wrong on a real cluster: a node's power loss, a drained node, a restarted
daemon, an association limit.

Every command is an argv list run through `docker exec`; nothing goes through a shell on the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

VERSIONS = ("22.05", "24.11", "26.05")
USERS = ("alice", "bob", "carol")  # alice: lab-a, bob: lab-b, carol: lab-a and Slurm administrator
ACCOUNTS = ("lab-a", "lab-b")
DAEMONS = ("slurmctld", "slurmdbd")
# sacct's states a job does not leave (PREEMPTED and NODE_FAIL may be followed by a requeue: `wait`
# also asks squeue whether the job is back in the queue).
FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)
_LABEL = "org.slurmflow.mini"
_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NODE = re.compile(r"^(gpu|cpu)[0-9]+$")


class ClusterError(RuntimeError):
    """The mini cluster could not be started, or a command in it failed; the message says which."""


def cluster_dir() -> Path:
    """The folder holding cluster.sh and the image's files: SLURMFLOW_MINI_DIR, else the checkout's
    docker/slurm-cluster (source and editable installs), else the copy shipped in the wheel."""
    if os.environ.get("SLURMFLOW_MINI_DIR"):
        return Path(os.environ["SLURMFLOW_MINI_DIR"])
    checkout = Path(__file__).resolve().parents[2] / "docker" / "slurm-cluster"
    if (checkout / "cluster.sh").is_file():
        return checkout
    shipped = Path(str(resources.files("slurmflow.testing") / "cluster"))
    if (shipped / "cluster.sh").is_file():
        return shipped
    raise ClusterError(
        "the mini cluster's files are missing (no docker/slurm-cluster in the checkout and none in the package): "
        "reinstall slurmflow[testing], or set SLURMFLOW_MINI_DIR to a docker/slurm-cluster folder"
    )


@dataclass(frozen=True)
class Spec:
    """What cluster a test session asks for. Nodes are gpu1..N (partition gpu, the default) with
    `gpus_per_node` fake GPUs each, and cpu1..M (partition cpu)."""

    version: str = "24.11"
    gpu_nodes: int = 2
    gpus_per_node: int = 4
    cpu_nodes: int = 1
    name: str | None = None
    memory: str = "cgroup"  # enforce --mem where the host allows (cgroup v1); "none": never

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ClusterError(f"Slurm version {self.version!r}: expected one of {', '.join(VERSIONS)}")
        if not 1 <= self.gpu_nodes + self.cpu_nodes <= 32 or min(self.gpu_nodes, self.cpu_nodes) < 0:
            raise ClusterError(f"{self.gpu_nodes} GPU and {self.cpu_nodes} CPU nodes: expected 1 to 32 nodes in all")
        if not 1 <= self.gpus_per_node <= 16:
            raise ClusterError(f"{self.gpus_per_node} GPUs a node: expected 1 to 16")
        if self.memory not in ("cgroup", "none"):
            raise ClusterError(f"memory enforcement {self.memory!r}: expected cgroup or none")

    @property
    def default_shape(self) -> bool:
        return (self.gpu_nodes, self.gpus_per_node, self.cpu_nodes) == (2, 4, 1)

    @property
    def container(self) -> str:
        """The container's name: cluster.sh's own for the default shape (so `cluster.sh up` and a
        test session share one cluster), one per shape otherwise."""
        if self.name:
            return self.name
        base = "slurmflow-mini" if self.version == "24.11" else f"slurmflow-mini-{self.version}"
        if self.default_shape:
            return base
        return f"{base}-g{self.gpu_nodes}x{self.gpus_per_node}-c{self.cpu_nodes}"

    @property
    def nodes(self) -> list[str]:
        return [f"gpu{i}" for i in range(1, self.gpu_nodes + 1)] + [f"cpu{i}" for i in range(1, self.cpu_nodes + 1)]

    def environment(self) -> dict[str, str]:
        return {
            "SLURMFLOW_MINI_VERSION": self.version,
            "SLURMFLOW_MINI_NAME": self.container,
            "SLURMFLOW_MINI_GPU_NODES": str(self.gpu_nodes),
            "SLURMFLOW_MINI_GPUS_PER_NODE": str(self.gpus_per_node),
            "SLURMFLOW_MINI_CPU_NODES": str(self.cpu_nodes),
            "SLURMFLOW_MINI_MEMORY": self.memory,
        }


@dataclass(frozen=True)
class Accounted:
    """One row of Slurm's accounting (sacct -X): a job, or one task of an array (`12_3`)."""

    job_id: str
    state: str  # the first word: "CANCELLED by 2001" is CANCELLED
    exit_code: str
    node_list: str
    fields: Mapping[str, str] = field(default_factory=dict)


def _docker() -> str:
    found = shutil.which("docker")
    if found is None:
        raise ClusterError(
            "docker is not installed: the mini cluster runs in a Docker container (apt-get install docker.io)"
        )
    return found


def _ids(job_ids: Iterable[int | str]) -> str:
    text = ",".join(str(j) for j in job_ids)
    if not re.fullmatch(r"[0-9_,\[\]-]+", text):
        raise ClusterError(f"job ids {text!r}: expected numbers such as 12 or 12_3")
    return text


class MiniCluster:
    """A running mini cluster. `up()` starts or reuses one; `down()` removes what `up()` started."""

    def __init__(self, spec: Spec, workdir: Path, *, started: bool) -> None:
        self.spec = spec
        self.name = spec.container
        self.workdir = workdir  # on the host, and at the same path inside: jobs read and write here
        self.started = started  # whether this handle started it (and `down()` may remove it)
        self._version: str | None = None

    # --- starting and stopping -------------------------------------------------------------------

    @classmethod
    def up(
        cls,
        spec: Spec | None = None,
        *,
        workdir: Path | None = None,
        mounts: Sequence[Path] = (),
        reuse: bool = True,
        timeout_s: int = 300,
    ) -> MiniCluster:
        """The cluster `spec` asks for. A running, ready container of that name with the same
        version, shape and mounts is reused; else one is started (its image built first if needed,
        which takes minutes once). `workdir` is mounted at its own path (read-write, open to every
        user of the cluster) and each of `mounts` read-only."""
        spec = spec or Spec()
        _docker()
        if reuse and (found := cls.attach(spec, mounts=mounts)) is not None:
            return found
        work = (workdir or Path.home() / ".cache" / "slurmflow-mini" / spec.container).resolve()
        work.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **spec.environment(),
            "SLURMFLOW_MINI_SHARED": str(work),
            "SLURMFLOW_MINI_MOUNTS": ":".join(str(Path(m).resolve()) for m in mounts),
            "SLURMFLOW_MINI_TIMEOUT": str(timeout_s),
        }
        done = subprocess.run(
            ["bash", str(cluster_dir() / "cluster.sh"), "up"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s + 1800,  # a first image build fetches Debian's packages
        )
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-25:])
            raise ClusterError(
                f"the mini cluster {spec.container} did not start (cluster.sh up exited {done.returncode}):\n{tail}"
            )
        return cls(spec, work, started=True)

    @classmethod
    def attach(cls, spec: Spec, *, mounts: Sequence[Path] = ()) -> MiniCluster | None:
        """The running cluster `spec` names, if it is ready and is what `spec` and `mounts` ask for."""
        inspected = subprocess.run(
            [_docker(), "inspect", spec.container], capture_output=True, text=True, check=False, timeout=60
        )
        if inspected.returncode != 0:
            return None
        (info,) = json.loads(inspected.stdout)
        labels = info.get("Config", {}).get("Labels") or {}
        env = dict(e.split("=", 1) for e in info.get("Config", {}).get("Env") or [] if "=" in e)
        want = spec.environment()
        shape = ("SLURMFLOW_MINI_GPU_NODES", "SLURMFLOW_MINI_GPUS_PER_NODE", "SLURMFLOW_MINI_CPU_NODES")
        # A container started before node counts were configurable has none: the default shape.
        if any(env.get(k, Spec().environment()[k]) != want[k] for k in shape):
            return None
        if env.get("SLURMFLOW_MINI_MEMORY", "cgroup") != spec.memory or not info.get("State", {}).get("Running"):
            return None
        mounted = {m.get("Destination") for m in info.get("Mounts") or []}
        if any(str(Path(m).resolve()) not in mounted for m in mounts):
            return None
        shared = labels.get(f"{_LABEL}.shared")
        if not shared:
            return None
        found = cls(spec, Path(shared), started=False)
        if found.run("cluster-ready", "--wait", "60", user="root", check=False).returncode != 0:
            return None
        if not found.version.startswith(spec.version + "."):
            return None
        return found

    def down(self) -> None:
        """Remove the container, if this handle started it."""
        if not self.started:
            return
        self._cluster_sh("down")

    def logs(self) -> str:
        """The daemons' logs, sinfo, squeue and sacct: what to print when a test fails."""
        done = self._cluster_sh("logs")
        return done.stdout + done.stderr

    def _cluster_sh(self, word: str) -> subprocess.CompletedProcess[str]:
        """cluster.sh WORD for this cluster (its name, version and shape in the environment)."""
        return subprocess.run(
            ["bash", str(cluster_dir() / "cluster.sh"), word],
            env={**os.environ, **self.spec.environment()},
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    # --- commands --------------------------------------------------------------------------------

    def run(
        self,
        *argv: str,
        user: str = "alice",
        check: bool = True,
        input: str | None = None,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the cluster as `user` (alice, bob, carol or root). With check, a non-zero
        exit raises ClusterError with the command and its stderr."""
        if not argv:
            raise ClusterError("run() needs a command")
        prefix = [_docker(), "exec", "-i", "-u", user]
        if cwd is not None:
            prefix += ["-w", str(cwd)]
        for key, value in (env or {}).items():
            prefix += ["-e", f"{key}={value}"]
        done = subprocess.run(
            [*prefix, self.name, *argv], input=input, capture_output=True, text=True, check=False, timeout=timeout_s
        )
        if check and done.returncode != 0:
            raise ClusterError(
                f"{' '.join(argv)} (as {user} in {self.name}) exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done

    @property
    def version(self) -> str:
        """The full Slurm version the cluster runs, e.g. 24.11.5."""
        if self._version is None:
            self._version = self.run("sinfo", "-V", user="root").stdout.split()[-1]
        return self._version

    @property
    def nodes(self) -> list[str]:
        return self.spec.nodes

    @property
    def memory_enforcement(self) -> str:
        """cgroup/v1 when --mem and GPU devices are enforced by Slurm's cgroup plugins, else none."""
        return self.run("cat", "/run/cluster-memory", user="root").stdout.strip()

    def scratch(self, name: str) -> Path:
        """A new folder under the work folder, writable by every user of the cluster."""
        path = Path(
            self.run(
                "mktemp", "-d", "-p", str(self.workdir), f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:60]}-XXXX"
            ).stdout.strip()
        )
        self.run("chmod", "1777", str(path))
        return path

    # --- jobs ------------------------------------------------------------------------------------

    def sbatch(
        self,
        script: str | None = None,
        *,
        wrap: str | None = None,
        user: str = "alice",
        args: Sequence[str] = (),
        cwd: str | Path | None = None,
        **options: str | int,
    ) -> int:
        """Submit a batch script (its text) or a `wrap` command line as `user`; return the job id.
        Keyword options become sbatch's long options: partition="gpu", gres="gpu:1", time="1:00",
        array="0-3", dependency="afterok:12", no_requeue=True; `args` are passed as they are."""
        if (script is None) == (wrap is None):
            raise ClusterError("sbatch() needs a script or wrap=, not both")
        argv = ["sbatch", "--parsable"]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is not False and value is not None:
                argv.append(f"{flag}={value}")
        argv += list(args)
        if wrap is not None:
            argv.append(f"--wrap={wrap}")
        if script is not None and not script.startswith("#!"):
            script = "#!/bin/bash\n" + script
        done = self.run(*argv, user=user, input=script, cwd=cwd or self.workdir)
        return int(done.stdout.strip().split(";")[0])

    def sacct(
        self,
        *job_ids: int | str,
        fields: Sequence[str] = ("JobID", "State", "ExitCode", "NodeList"),
        duplicates: bool = False,
    ) -> list[Accounted]:
        """The accounting rows of these jobs (allocations only; with duplicates, every attempt of a
        requeued job as well), read from slurmdbd through sacct."""
        names = list(dict.fromkeys(["JobID", "State", "ExitCode", "NodeList", *fields]))
        for name in names:
            if not _WORD.match(name):
                raise ClusterError(f"sacct field {name!r}: expected a field name such as Elapsed")
        argv = ["sacct", "-a", "-X", "-n", "-P", "-S", "now-7days", "-j", _ids(job_ids), "-o", ",".join(names)]
        if duplicates:
            argv.insert(1, "--duplicates")
        rows = []
        for line in self.run(*argv, user="root").stdout.splitlines():
            values = dict(zip(names, line.split("|"), strict=False))
            state = (values.get("State") or "").split(" ")[0]
            rows.append(
                Accounted(values["JobID"], state, values.get("ExitCode", ""), values.get("NodeList", ""), values)
            )
        return rows

    def queued(self, *job_ids: int | str) -> list[str]:
        """Those of these jobs (or their array tasks) Slurm still has pending, running or completing."""
        out = self.run("squeue", "-h", "-a", "-r", "-j", _ids(job_ids), "-o", "%i", user="root", check=False).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def wait(self, *job_ids: int | str, timeout_s: float = 300, poll_s: float = 1.0) -> list[Accounted]:
        """Wait until every job (every task of an array) has left the queue and its accounting row
        says how it ended; return those rows. Raises ClusterError on timeout with what is still open.

        slurmdbd records an array's tasks a moment after they end, and the task that ran under the
        array's own id may show first as the bare id: so every task seen in the queue must be in
        accounting, and the rows must read the same on two polls in a row."""
        deadline = time.monotonic() + timeout_s
        seen: set[str] = set()
        previous: list[tuple[str, str]] | None = None
        while True:
            queued = self.queued(*job_ids)
            seen.update(q for q in queued if "[" not in q)
            rows = [] if queued else self.sacct(*job_ids)
            ids = {r.job_id for r in rows}
            arrays = {i.split("_")[0] for i in ids if "_" in i}
            settled = (
                bool(rows)
                and all(r.state in FINAL_STATES for r in rows)
                and seen <= ids
                and not any(i in arrays for i in ids)  # a task still shown under the bare array id
            )
            snapshot = sorted((r.job_id, r.state) for r in rows)
            if settled and snapshot == previous:
                return rows
            previous = snapshot if settled else None
            if time.monotonic() > deadline:
                states = {r.job_id: r.state for r in self.sacct(*job_ids)}
                raise ClusterError(
                    f"jobs {_ids(job_ids)} did not end within {timeout_s:.0f} s: {states or 'not accounted'}"
                )
            time.sleep(poll_s)

    # --- what goes wrong on a real cluster -------------------------------------------------------

    def _node(self, node: str) -> str:
        if not _NODE.match(node) or node not in self.nodes:
            raise ClusterError(f"node {node!r}: this cluster has {', '.join(self.nodes)}")
        return node

    def node_state(self, node: str) -> str:
        """The node's state as sinfo says it: idle, mixed, allocated, drained, draining, down*..."""
        return self.run("sinfo", "-h", "-N", "-n", self._node(node), "-o", "%T", user="root").stdout.strip()

    def stop_node(self, node: str) -> None:
        """A power loss: the node's slurmd and every job process on it die at once; slurmctld marks
        it down after SlurmdTimeout (20 s), and its jobs end NODE_FAIL or are requeued."""
        self.run("cluster-node", "stop", self._node(node), user="root")

    def start_node(self, node: str, *, timeout_s: float = 120) -> None:
        """Power the node back on; returns when Slurm has it in service again."""
        self.run("cluster-node", "start", self._node(node), user="root")
        self._until(
            lambda: self.node_state(node).rstrip("*") in ("idle", "mixed", "allocated"),
            timeout_s,
            f"{node} back in service",
        )

    def drain(self, node: str, reason: str = "maintenance") -> None:
        """Drain the node: its running jobs go on, no new job starts there."""
        self.run("scontrol", "update", f"NodeName={self._node(node)}", "State=DRAIN", f"Reason={reason}", user="root")

    def resume(self, node: str) -> None:
        """Return a drained node to service."""
        self.run("scontrol", "update", f"NodeName={self._node(node)}", "State=RESUME", user="root")

    def restart(self, daemon: str) -> None:
        """Restart slurmctld (jobs kept, as `slurmctld -R`) or slurmdbd; returns when it answers."""
        if daemon not in DAEMONS:
            raise ClusterError(f"daemon {daemon!r}: expected one of {', '.join(DAEMONS)}")
        self.run("cluster-daemon", "restart", daemon, user="root", timeout_s=180)

    def set_limit(self, *, user: str | None = None, account: str | None = None, **limits: str | int) -> None:
        """Set association limits as the cluster's administrator would with sacctmgr, e.g.
        set_limit(user="alice", GrpTRES="gres/gpu=2", MaxSubmitJobs=10); -1 clears one. A user's
        limit is set on the user's associations (in `account` alone when given)."""
        if not limits:
            raise ClusterError("set_limit() needs at least one limit, e.g. GrpTRES='gres/gpu=2'")
        if user is None and account is None:
            raise ClusterError("set_limit() needs user= or account=")
        if user is not None and user not in USERS:
            raise ClusterError(f"user {user!r}: the cluster's users are {', '.join(USERS)}")
        if account is not None and account not in ACCOUNTS:
            raise ClusterError(f"account {account!r}: the cluster's accounts are {', '.join(ACCOUNTS)}")
        where = ["user", "where", f"name={user}"] if user else ["account", "where", f"name={account}"]
        if user and account:
            where.append(f"account={account}")
        settings = []
        for key, value in limits.items():
            if not _WORD.match(key) or not re.fullmatch(r"[A-Za-z0-9/=:,.-]+", str(value)):
                raise ClusterError(f"limit {key}={value!r}: expected a sacctmgr limit such as GrpTRES=gres/gpu=2")
            settings.append(f"{key}={value}")
        self.run("sacctmgr", "-i", "modify", *where, "set", *settings, user="root")

    def associations(self, *fields: str) -> list[dict[str, str]]:
        """slurmdbd's associations with these fields (Account and User always), as sacctmgr shows them."""
        names = list(dict.fromkeys(["Account", "User", *fields]))
        for name in names:
            if not _WORD.match(name):
                raise ClusterError(f"association field {name!r}: expected a name such as GrpTRES")
        out = self.run("sacctmgr", "-n", "-P", "show", "assoc", f"format={','.join(names)}", user="root").stdout
        return [dict(zip(names, line.split("|"), strict=False)) for line in out.splitlines()]

    def _until(self, ok: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ok():
            if time.monotonic() > deadline:
                raise ClusterError(f"{what}: not within {timeout_s:.0f} s")
            time.sleep(0.5)
