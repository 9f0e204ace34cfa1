"""Hydra --multirun on the mini cluster: how long until every task of a sweep is in Slurm's queue,
and whether the launching process has returned, with hydra-submitit-launcher
(`hydra/launcher=submitit_slurm`, the peer) and with slurmflow's own launcher
(`hydra/launcher=slurmflow`), in the same run, on the same cluster, rounds interleaved.

The peer is installed in the benchmark's own environment, not in slurmflow's: the cluster is
offline, so download its wheel on the host first (PyPI is reachable from there):
  pip download hydra-submitit-launcher --no-deps -d .mini/bench-hydra/wheels
then run this inside the cluster, as on a login node, from a directory bob can write:
  docker exec -u bob -w <repo>/.mini/bench-hydra slurmflow-mini /opt/slurmflow/venv/bin/python \\
    /src/bench/hydra_launcher_bench.py --peer-wheels <repo>/.mini/bench-hydra/wheels
When --peer-dir (default ./peer) is missing, the wheel is installed there with
`pip install --no-deps --target`, and only the peer's runs get it on PYTHONPATH (hydra_plugins is
a namespace package: both plugins would coexist).

Each round, for each launcher: the app (jobs/hydra_app) sweeps lr x seed, submitted held (slurmflow:
hydra.launcher.hold=true; the peer: additional_parameters.hold=true, i.e. `#SBATCH --hold`), with the
same resources; squeue is polled every --poll seconds until all the sweep's tasks are pending; the
process is then given --grace seconds to return by itself, and its process group is killed if it
has not (the peer waits for results, and held jobs never end). scancel --me empties the queue
before the next launch: nothing runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "jobs" / "hydra_app"
PEER = "submitit"
OURS = "slurmflow"
# slurmflow with hydra.launcher.validate=full: Hydra's sweeper composes every job's config in the
# launching process before launch() is called, as it does for the peer (~35 ms a job).
OURS_FULL = "sf-full"
LAUNCHERS = (PEER, OURS, OURS_FULL)
# The same resources for both: one GPU (the cluster's default partition has gres gpu:4), one CPU,
# ten minutes, the cluster's default memory; the array throttle both launchers default to.
RESOURCES = (
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.gpus_per_node=1",
    "hydra.launcher.array_parallelism=256",
)


@dataclass(frozen=True)
class Round:
    first: float | None  # seconds from the launch until the first task was pending
    queued: float | None  # ... until all of them were (None: not within the timeout)
    returned: float | None  # ... until the process exited by itself (None: it had not, and was killed)
    exit: int | None  # its exit status, where it exited by itself
    arrays: int  # distinct array job ids in the queue: the sbatch calls
    held: int  # tasks pending with reason JobHeldUser


def squeue_pending() -> list[tuple[str, str]]:
    """(array job id, reason) of each of my pending tasks, arrays expanded."""
    out = subprocess.run(
        ["squeue", "--me", "--noheader", "--array", "--states=PD", "-o", "%F %r"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    rows = []
    for line in out.splitlines():
        array_id, _, reason = line.strip().partition(" ")
        if array_id:
            rows.append((array_id, reason.strip()))
    return rows


def clear_queue(timeout: float = 120.0) -> None:
    subprocess.run(["scancel", "--me"], check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "--me", "--noheader"], capture_output=True, text=True, check=False).stdout
        if not out.strip():
            return
        time.sleep(0.5)
    raise SystemExit(f"my jobs are still in the queue {timeout:.0f} s after scancel --me")


def max_array_size() -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
    return int(m.group(1)) if m else 1001


def install_peer(peer_dir: Path, wheels: Path | None) -> str:
    """The peer's version, installed from its wheel into peer_dir when that is missing."""
    if not peer_dir.exists():
        found = sorted(wheels.glob("hydra_submitit_launcher-*.whl")) if wheels else []
        if not found:
            raise SystemExit(
                f"{peer_dir} is missing and no hydra_submitit_launcher wheel was given (--peer-wheels DIR); on the "
                "host: pip download hydra-submitit-launcher --no-deps -d DIR"
            )
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(peer_dir), str(found[-1])],
            check=True,
        )
    infos = sorted(peer_dir.glob("hydra_submitit_launcher-*.dist-info"))
    if not infos:
        raise SystemExit(f"{peer_dir} holds no hydra_submitit_launcher")
    return infos[-1].name.removeprefix("hydra_submitit_launcher-").removesuffix(".dist-info")


def sweep_overrides(n: int) -> list[str]:
    lrs = ["0.1", "0.01", "0.001", "0.0001"]
    if n % len(lrs):
        raise SystemExit(f"--jobs {n}: a multiple of {len(lrs)} (lr x seed)")
    return [f"lr={','.join(lrs)}", f"seed=range({n // len(lrs)})"]


def command(launcher: str, n: int, work: Path) -> list[str]:
    common = [sys.executable, "train.py", "-m", f"hydra.sweep.dir={work}/multirun", *RESOURCES, *sweep_overrides(n)]
    if launcher in (OURS, OURS_FULL):
        validate = "full" if launcher == OURS_FULL else "groups"
        return [
            *common,
            "hydra/launcher=slurmflow",
            "hydra.launcher.hold=true",
            f"hydra.launcher.validate={validate}",
            f"hydra.launcher.runs_dir={work}/runs",
        ]
    # A key added to the (empty) dict: `additional_parameters={hold:true}` is refused by Hydra in struct mode.
    return [*common, "hydra/launcher=submitit_slurm", "+hydra.launcher.additional_parameters.hold=true"]


def environment(launcher: str, peer_dir: Path) -> dict[str, str]:
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != peer_dir.resolve()]
    if launcher == PEER:
        path.insert(0, str(peer_dir))
    env["PYTHONPATH"] = os.pathsep.join(path)
    if not path:
        del env["PYTHONPATH"]
    return env


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(text[-lines:])


def one_round(launcher: str, n: int, app: Path, peer_dir: Path, args: argparse.Namespace) -> Round:
    with tempfile.TemporaryDirectory(prefix=f"{launcher}-{n}-", dir=".") as tmp:
        work = Path(tmp).resolve()
        shutil.copytree(app, work / "app")
        out, err = work / "launcher.out", work / "launcher.err"
        ended: list[float] = []
        with out.open("wb") as fout, err.open("wb") as ferr:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                command(launcher, n, work),
                cwd=work / "app",
                env=environment(launcher, peer_dir),
                stdin=subprocess.DEVNULL,
                stdout=fout,
                stderr=ferr,
                start_new_session=True,  # its own process group, to kill it whole
            )

            def waiter() -> None:
                proc.wait()
                ended.append(time.perf_counter() - t0)

            thread = threading.Thread(target=waiter, daemon=True)
            thread.start()
            first = queued = None
            rows: list[tuple[str, str]] = []
            while time.perf_counter() - t0 < args.timeout:
                rows = squeue_pending()
                now = time.perf_counter() - t0
                if rows and first is None:
                    first = now
                if len(rows) >= n:
                    queued = now
                    break
                if ended and now - ended[0] > 10:
                    break  # it exited, and its sweep is not (all) in the queue
                time.sleep(args.poll)
            if queued is not None:
                thread.join(timeout=args.grace)
            returned = ended[0] if ended else None
            code = proc.returncode if ended else None
            stop(proc)
            thread.join(timeout=10)
        if queued is None or (code not in (0, None)):
            print(
                f"[{launcher}, {n} jobs] {len(rows)} of {n} tasks queued, exit {code}:\n{tail(err) or tail(out)}",
                file=sys.stderr,
            )
        result = Round(
            first=first,
            queued=queued,
            returned=returned,
            exit=code,
            arrays=len({a for a, _ in rows}),
            held=sum(1 for _, r in rows if r == "JobHeldUser"),
        )
        clear_queue()
    return result


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if len(got) == len(values) and got else None


def returned_cell(rounds: list[Round]) -> str:
    got = [r.returned for r in rounds if r.returned is not None]
    if not got:
        return "never"
    codes = sorted({r.exit for r in rounds if r.exit is not None})
    cell = f"{statistics.median(got):.2f} rc{','.join(str(c) for c in codes)}"
    return cell if len(got) == len(rounds) else f"{len(got)}/{len(rounds)}: {cell}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1000, 100], help="sweep sizes (multiples of 4)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peer-wheels", type=Path, help="where the host's `pip download` put the peer's wheel")
    ap.add_argument("--peer-dir", type=Path, default=Path("peer"), help="the peer's install target (default ./peer)")
    ap.add_argument("--app", type=Path, default=APP, help="the Hydra app's directory (train.py, conf/)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a launch may take to queue its sweep")
    ap.add_argument("--poll", type=float, default=0.2, help="seconds between squeue calls")
    ap.add_argument("--grace", type=float, default=2.0, help="seconds a launcher may take to return once queued")
    args = ap.parse_args()
    peer_dir = args.peer_dir.resolve()
    version = install_peer(peer_dir, args.peer_wheels)
    limit = max_array_size()
    for n in args.jobs:
        sweep_overrides(n)
        if n > limit:
            # The peer submits a sweep as one array (map_array): past MaxArraySize sbatch refuses it, and
            # hydra.sweeper.max_batch_size would not help: the peer waits for each batch's results.
            raise SystemExit(f"--jobs {n}: more than MaxArraySize={limit}, which the peer cannot submit")
    clear_queue()
    print(f"hydra-submitit-launcher {version} vs slurmflow; MaxArraySize={limit}; {' '.join(RESOURCES)}; held")
    print(
        f"{'jobs':>6} {'launcher':>10} {'sbatch':>6} {'held':>5} {'first s':>8} {'queued s':>9} "
        f"{'returned s':>12} {'ratio':>7}   (median of {args.rounds})"
    )
    for n in args.jobs:
        runs: dict[str, list[Round]] = {k: [] for k in LAUNCHERS}
        for r in range(args.rounds):
            order = LAUNCHERS[r % 3 :] + LAUNCHERS[: r % 3]
            for launcher in order:
                runs[launcher].append(one_round(launcher, n, args.app.resolve(), peer_dir, args))
        q = {k: median([r.queued for r in v]) for k, v in runs.items()}
        for launcher in LAUNCHERS:
            rounds = runs[launcher]
            ratio, peer, ours = "", q[PEER], q[launcher]
            if launcher != PEER and peer is not None and ours:
                ratio = f"{peer / ours:.2f}x"
            print(
                f"{n:>6,} {launcher:>10} {max(r.arrays for r in rounds):>6} {min(r.held for r in rounds):>5} "
                f"{seconds(median([r.first for r in rounds])):>8} {seconds(q[launcher]):>9} "
                f"{returned_cell(rounds):>12} {ratio:>7}"
            )
    print("queued s: from the launch (Python start, Hydra compose, the launcher) until squeue shows every task")
    print("pending, to within one poll; ratio: submitit's over that row's. returned s: when the launching")
    print("process exited by itself (never: still running once queued + grace, then killed).")
    print("sbatch: distinct array job ids queued; held: the fewest tasks pending as JobHeldUser in a round.")
    print("sf-full: slurmflow with hydra.launcher.validate=full, Hydra's sweeper composing every job first.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
