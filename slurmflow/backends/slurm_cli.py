"""The Backend over Slurm's command-line tools, through one Runner."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from slurmflow.errors import AccountingUnavailable, CommandError, SlurmError
from slurmflow.fsio import write_json_atomic
from slurmflow.slurm import cluster, history, sbatch
from slurmflow.slurm import text as slurm_text
from slurmflow.slurm.accounting import SACCTMGR_FORMAT, Assoc, Usage, parse_assoc_mgr, parse_associations
from slurmflow.slurm.capabilities import PROBE_ARGV, Capabilities
from slurmflow.slurm.runner import Completed, Runner, SubprocessRunner
from slurmflow.slurm.types import Attempt, ClusterConfig, ClusterInfo, Dependency, JobInfo, JobSpec, QueryResult


class SlurmCLI:
    """Backend driving sbatch, squeue, sacct, scancel and scontrol."""

    def __init__(
        self,
        runner: Runner | None = None,
        *,
        timeout: float = 60.0,
        capabilities: Capabilities | None = None,
        capabilities_cache: Path | None = None,
    ) -> None:
        self.runner: Runner = runner or SubprocessRunner()
        self.timeout = timeout
        self._caps = capabilities
        # A run directory's capabilities.json: probed once per run, read by every later command.
        self.capabilities_cache = capabilities_cache

    @property
    def runs_submitit(self) -> bool:
        return not getattr(self.runner, "prefix", ())  # a prefix (`--via`) runs Slurm elsewhere

    def accounting(self) -> SlurmCLI:
        return self

    # --- what this cluster's commands accept (capabilities.py) ----------------------------------

    def probe(self) -> Capabilities:
        """Ask the cluster's commands what they accept: client-side only, no controller RPC."""
        from concurrent.futures import ThreadPoolExecutor

        def ask(key: str) -> str | None:
            try:
                return self._run(list(PROBE_ARGV[key])).stdout
            except SlurmError as exc:
                # squeue before 23.02 has no --helpFormat ("unrecognized option"): fields of 22.05.
                if key == "squeue_help" and "unrecognized option" in (exc.stderr + exc.stdout):
                    return None
                raise

        with ThreadPoolExecutor(max_workers=len(PROBE_ARGV)) as pool:
            futures = {k: pool.submit(ask, k) for k in PROBE_ARGV}
            out = {k: f.result() for k, f in futures.items()}
        return Capabilities.from_outputs(
            version=out["version"] or "",
            sacct_help=out["sacct_help"] or "",
            squeue_help=out["squeue_help"],
            sbatch_help=out["sbatch_help"] or "",
        )

    def capabilities(self, *, refresh: bool = False) -> Capabilities:
        """The cluster's capabilities: given, cached in the run directory, or probed (then cached)."""
        if self._caps is not None and not refresh:
            return self._caps
        cache = self.capabilities_cache
        if cache is not None and not refresh and cache.exists():
            try:
                self._caps = Capabilities.from_dict(json.loads(cache.read_text()))
                return self._caps
            except (ValueError, KeyError, TypeError):
                pass  # unreadable: probe again and rewrite it
        self._caps = self.probe()
        if cache is not None:
            self.save_capabilities(cache)
        return self._caps

    def save_capabilities(self, path: Path) -> None:
        write_json_atomic(path, self.capabilities().to_dict())
        self.capabilities_cache = path

    def _query_run(self, build: Callable[[Capabilities], list[str]]) -> tuple[Completed, Capabilities]:
        """Run a query built from the capabilities. If the cluster rejects a field (its Slurm was
        changed since the probe), probe again once and rebuild the query."""
        caps = self.capabilities()
        try:
            return self._run(build(caps)), caps
        except SlurmError as exc:
            if "invalid field" not in (exc.stderr + exc.stdout).lower():
                raise
        caps = self.capabilities(refresh=True)
        return self._run(build(caps)), caps

    def _run(self, argv: Sequence[str], *, input: str | None = None) -> Completed:
        try:
            return self.runner.run(argv, input=input, timeout=self.timeout)
        except CommandError as exc:
            raise slurm_text.classify(exc) from exc

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        # Before 23.02 slurmstepd does not create a missing --output directory: the batch step dies
        # before the command starts (FAILED 0:53, JobLaunchFailure). Create it for every submission.
        for directory in sbatch.log_dirs(spec):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        script = None if script_path else sbatch.render_script(spec)
        done = self._run(sbatch.argv(spec, script_path), input=script)
        return slurm_text.parse_sbatch(done.stdout)

    def query(self, job_ids: Sequence[str] = (), *, name: str | None = None) -> QueryResult:
        if not job_ids and not name:
            raise ValueError("query needs job ids or a job name")
        # Base ids are enough: squeue and sacct expand an array id into its tasks.
        bases = sorted({j.split("_", 1)[0] for j in job_ids}, key=int)
        controller = self._squeue(bases, name)
        try:
            done, caps = self._query_run(
                lambda c: slurm_text.sacct_argv(bases, name=name, fields=c.sacct_query_fields())
            )
            accounting = slurm_text.parse_sacct(done.stdout, caps.sacct_query_fields())
        except AccountingUnavailable:
            return QueryResult(tuple(controller), accounting_available=False)
        merged = slurm_text.merge_views(controller, accounting)
        if job_ids:
            wanted = set(job_ids)
            merged = [j for j in merged if j.job_id in wanted or j.base_id in wanted]
        return QueryResult(tuple(merged))

    def history(self, job_ids: Sequence[str]) -> tuple[Attempt, ...]:
        """From accounting alone (the controller keeps no past attempts): a job slurmdbd has not
        recorded yet (it is fed asynchronously, seconds behind) has no attempt yet. Its fields exist
        on every supported version, so no probe is needed; slurmdbd down is AccountingUnavailable."""
        if not job_ids:
            return ()
        bases = sorted({j.split("_", 1)[0] for j in job_ids}, key=int)
        done = self._run(history.sacct_history_argv(bases))
        return history.select(history.parse_sacct_history(done.stdout), job_ids)

    def _squeue(self, bases: Sequence[str], name: str | None) -> list[JobInfo]:
        try:
            done, caps = self._query_run(
                lambda c: slurm_text.squeue_argv(bases, name=name, fields=c.squeue_query_fields())
            )
        except SlurmError as exc:
            # squeue exits 1 when EVERY listed id is unknown to the controller (all older than
            # MinJobAge): that is "nothing live", not a failure.
            if "invalid job id" in (exc.stderr + exc.stdout).lower():
                return []
            raise
        return slurm_text.parse_squeue(done.stdout, caps.squeue_query_fields())

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._run(["scancel", *job_ids])

    def requeue(self, job_ids: Sequence[str], *, start_now: bool = False, hold: bool = False) -> None:
        if not job_ids:
            return
        self._run(["scontrol", "requeuehold" if hold else "requeue", ",".join(job_ids)])
        if start_now:
            for job_id in job_ids:
                self.update_begin_now(job_id)

    def update_begin_now(self, job_id: str) -> None:
        # The owner may move a pending job's begin time forward (verified on 24.11).
        self._run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])

    def release(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._run(["scontrol", "release", ",".join(job_ids)])

    def update_dependency(self, job_id: str, dependency: Dependency | None) -> None:
        value = sbatch.render_dependency(dependency) if dependency else ""
        self._run(["scontrol", "update", f"JobId={job_id}", f"Dependency={value}"])

    def exclude_nodes(self, job_id: str, nodes: Sequence[str]) -> None:
        self._run(["scontrol", "update", f"JobId={job_id}", "ExcNodeList=" + ",".join(nodes)])

    def config(self) -> ClusterConfig:
        try:
            out = self._run(["scontrol", "show", "config"]).stdout
        except SlurmError as exc:
            # scontrol prints the configuration, then pings the controller in a second RPC. Under
            # RPC rate limiting (SlurmctldParameters=rl_enable) that ping is refused: it prints
            # "Slurmctld(primary) at HOST is DOWN" and exits 1 after a complete configuration.
            if not cluster.config_complete(exc.stdout):
                raise
            out = exc.stdout
        return cluster.parse_config(out)

    def nodes(self) -> list[dict[str, str | int]]:
        return cluster.parse_sinfo(self._run(cluster.SINFO_ARGV).stdout)

    def _accounts(self) -> tuple[str | None, frozenset[str] | None]:
        """The submitting user, and the accounts they have associations with (None without accounting)."""
        try:
            me = self.whoami()
        except SlurmError:
            return None, None
        try:
            rows = self._run(
                ["sacctmgr", "--noheader", "--parsable2", "show", "assoc", f"users={me}", "format=Account"]
            )
        except SlurmError:
            return me, None  # no accounting: the account is left for sbatch to check
        return me, frozenset(line.strip() for line in rows.stdout.splitlines() if line.strip()) or None

    def cluster_info(self) -> ClusterInfo:
        """What planning checks against: limits, partitions and their largest GPU node, my accounts."""
        from concurrent.futures import ThreadPoolExecutor  # only launches pay for it

        # Independent queries, issued together: planning waits for the slowest, not the sum.
        with ThreadPoolExecutor(max_workers=4) as pool:
            f_cfg, f_nodes, f_accounts = pool.submit(self.config), pool.submit(self.nodes), pool.submit(self._accounts)
            f_caps = pool.submit(self.capabilities)  # kept for the run: later commands never probe
            cfg, nodes, (user, accounts) = f_cfg.result(), f_nodes.result(), f_accounts.result()
            f_caps.result()
        most: dict[str, int] = {}
        default = None
        for n in nodes:
            part = str(n["partition"])
            most[part] = max(most.get(part, 0), int(n["gpus"]))
            if n["default"]:
                default = part
        return ClusterInfo(
            max_array_size=cfg.max_array_size,
            min_job_age_s=cfg.min_job_age_s,
            partition_gpus=most,
            default_partition=default,
            accounts=accounts,
            user=user,
            version=cfg.version,
            max_job_count=cfg.max_job_count,
        )

    # --- accounting: associations, limits and live usage (see slurm/accounting.py) -------------------------

    def whoami(self) -> str:
        """The user Slurm will see: the one at the end of the command prefix, if there is one."""
        return self._run(["id", "-un"]).stdout.strip()

    def associations(self, cluster: str | None = None) -> list[Assoc]:
        argv = ["sacctmgr", "--noheader", "--parsable2", "show", "assoc", SACCTMGR_FORMAT]
        return parse_associations(self._run(argv).stdout, cluster)

    def qos_names(self) -> list[str]:
        done = self._run(["sacctmgr", "--noheader", "--parsable2", "show", "qos", "format=Name"])
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]

    def qos_submit_limits(self) -> dict[str, tuple[int | None, int | None]]:
        """QOS name -> (MaxSubmitJobsPerUser, GrpSubmitJobs); None where the QOS sets none."""
        done = self._run(["sacctmgr", "--noheader", "--parsable2", "show", "qos", "format=Name,MaxSubmitPU,GrpSubmit"])
        out: dict[str, tuple[int | None, int | None]] = {}
        for line in done.stdout.splitlines():
            cols = [c.strip() for c in line.split("|")]
            if len(cols) >= 3 and cols[0]:
                per_user, group = (int(c) if c.isdigit() else None for c in cols[1:3])
                out[cols[0]] = (per_user, group)
        return out

    def admin_level(self, user: str) -> str:
        done = self._run(["sacctmgr", "--noheader", "--parsable2", "show", "user", user, "format=AdminLevel"])
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "None"

    def usage(self) -> list[Usage]:
        """Limits next to live usage, from the controller's association manager."""
        return parse_assoc_mgr(self._run(["scontrol", "show", "assoc_mgr", "flags=assoc"]).stdout)

    def fairshare(self) -> dict[tuple[str, str], str]:
        """(account, user) -> sshare's fair-share factor (decayed usage against shares)."""
        done = self._run(["sshare", "--noheader", "--parsable2", "--all", "--format=Account,User,FairShare"])
        out = {}
        for line in done.stdout.splitlines():
            cols = [c.strip() for c in line.split("|")]
            if len(cols) >= 3:
                out[(cols[0], cols[1])] = cols[2]
        return out

    def modify(self, argv: Sequence[str]) -> None:
        """One `sacctmgr -i modify ...`: Slurm itself decides whether this user may."""
        self._run(argv)
