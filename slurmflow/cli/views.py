"""Rich renderings of plans and runs for the terminal."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from slurmflow.gpu import stats as gpustats
from slurmflow.gpu.usage import RunGpu
from slurmflow.model import JobNode, Plan, Trial
from slurmflow.monitoring.status import CampaignStatus, exit_text
from slurmflow.planning.jobs import node_spec
from slurmflow.rundir.events import ActionFailed, GpuIdle
from slurmflow.slurm import sbatch
from slurmflow.slurm import text as slurm_text
from slurmflow.slurm.types import JobInfo

if TYPE_CHECKING:  # plan views only: status and gpu never compose (no Hydra import)
    from slurmflow.results.study_view import StudySummary
    from slurmflow.run.launch import Prepared


def _resources(prep: Prepared, stage_name: str) -> str:
    res = prep.plan.stages[stage_name].resources
    parts = [res.partition or f"{prep.cluster.default_partition or 'default'} partition"]
    if res.gpus:
        parts.append(f"{res.gpus} GPU")
    if res.cpus:
        parts.append(f"{res.cpus} CPU")
    if res.mem:
        parts.append(res.mem)
    parts.append(res.time or "default time")
    if res.account:
        parts.append(f"account {res.account}")
    return ", ".join(parts)


def _deps(node: JobNode) -> str:
    if not node.edges and not node.singleton:
        return ""
    joiner = " or " if node.any_of else ", "
    # Edges of one kind to many chunks of a stage print as a range: a plan's output stays a few
    # lines long whatever the sweep's size (a fan-in over 1,000 chunks is one line, not 1,000).
    groups: dict[tuple[str, str], list[str]] = {}
    for e in node.edges:
        stage = e.parent.rsplit(".", 1)[0] if e.parent.rsplit(".", 1)[-1].isdigit() else e.parent
        groups.setdefault((e.kind.value, stage), []).append(e.parent)
    parts = []
    for (kind, _stage), parents in groups.items():
        if len(parents) > 3:
            parts.append(f"{kind}:{parents[0]} ... {parents[-1]} ({len(parents):,} arrays)")
        else:
            parts.extend(f"{kind}:{p}" for p in parents)
    text = joiner.join(parts)
    if node.singleton:
        text = ", ".join(filter(None, [text, "singleton"]))
    return f"  [cyan]<- {text}[/]"


def plan_tree(prep: Prepared) -> Tree:
    plan = prep.plan
    est = f"{plan.gpu_hours:,.1f} GPU-hours at most"
    if plan.gpu_hours_unbounded:
        est += f" (+ {', '.join(plan.gpu_hours_unbounded)} without a time limit)"
    axes = ", ".join(f"{a.key} x{len(a.values)}" for a in prep.experiment.axes) or "no sweep"
    found = prep.experiment.search
    if found is not None:  # planned at its worst case: every trial asked for, each to its time limit
        axes = f"search: {found.sampler} over {', '.join(p.name for p in found.params)}, {found.batch} in flight"
        caps = [f"past {found.max_gpu_hours:g} GPU-hours"] if found.max_gpu_hours is not None else []
        if found.deadline_s is not None:
            caps.append(f"after {_duration(found.deadline_s)}")
        est += f" (every trial to its time limit{'; none asked for ' + ' or '.join(caps) if caps else ''})"
    root = Tree(
        f"[bold]{plan.experiment}[/]: {plan.n_trials:,} trial(s) ({axes}); {len(plan.nodes)} submission(s), "
        f"{plan.tasks():,} task(s); {est}; MaxArraySize {prep.cluster.max_array_size}"
    )
    for stage_name, stage in plan.stages.items():
        nodes = [n for n in plan.nodes if n.stage == stage_name]
        kind = "per trial" if stage.per_trial else "single job"
        branch = root.add(f"[bold]{stage_name}[/] ({kind}; {_resources(prep, stage_name)})")
        elided = len(nodes) > 8
        shown = [*nodes[:3], *nodes[-2:]] if elided else nodes
        for i, node in enumerate(shown):
            if elided and i == 3:
                branch.add(f"... {len(nodes) - 5} more chunk(s)")
            if node.array:
                label = f"{node.key}: array {node.array_expr()} -> trials {node.offset}-{node.offset + node.size - 1}"
            else:
                label = f"{node.key}: job"
            branch.add(label + _deps(node))
    return root


def trials_table(trials: Sequence[Trial], total: int) -> RenderableType:
    """Each trial by its number (the name status, logs, gpu and the trial directory use) and the
    overrides that make it."""
    table = Table(title=f"trials ({len(trials):,} of {total:,})" if len(trials) < total else "trials")
    table.add_column("trial", justify="right")
    table.add_column("overrides")
    for t in trials:
        table.add_row(str(t.index), " ".join(t.overrides) or "(the config as it is)")
    return table


def script_preview(prep: Prepared, node: JobNode) -> str:
    """The sbatch line and script of a node; parent job ids are shown by node key."""
    spec = node_spec(
        node,
        prep.plan.stages[node.stage],
        {e.parent: "1" for e in node.edges},
        run_id="RUN",
        script=f"exec python -m slurmflow.job <run-dir> {shlex.quote(node.key)}",
        logs_dir="<run-dir>/logs",
        chdir=".",
    )
    argv = sbatch.argv(spec, f"<run-dir>/scripts/{node.key}.sh")
    joiner = "?" if node.any_of else ","
    symbolic = joiner.join(f"{e.kind.value}:<{e.parent}>" for e in node.edges)
    if node.singleton:
        symbolic = ",".join(filter(None, [symbolic, "singleton"]))
    argv = [f"--dependency={symbolic}" if a.startswith("--dependency=") else a for a in argv]
    return " ".join(shlex.quote(a) for a in argv) + "\n" + sbatch.render_script(spec)


def launch_summary(run_id: str, run_dir: str, plan: Plan, by_stage: Mapping[str, Sequence[str]]) -> Table:
    table = Table(title=f"run {run_id}  ({run_dir})")
    table.add_column("stage")
    table.add_column("job ids")
    table.add_column("tasks", justify="right")
    for stage in plan.stages:
        ids = by_stage.get(stage, [])
        tasks = sum(n.size for n in plan.nodes if n.stage == stage)
        table.add_row(
            stage,
            ",".join(ids) if len(ids) <= 6 else f"{ids[0]} ... {ids[-1]} ({len(ids)} arrays)",
            f"{tasks:,}",
        )
    return table


def final_table(jobs: Sequence[JobInfo]) -> Table:
    table = Table(title="outcome")
    for col in ("job", "state", "exit", "tasks"):
        table.add_column(col)
    groups: dict[tuple[str, str, str], list[int]] = {}
    for j in jobs:
        key = (j.name.split(".", 2)[-1], j.state.name, "" if j.exit_code is None else exit_text(j.exit_code, j.signal))
        groups.setdefault(key, []).append(j.array_task_id if j.array_task_id is not None else 0)
    for (name, state, code), idx in sorted(groups.items()):
        table.add_row(name, state, code, slurm_text.compress_indices(idx))
    return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def status_view(st: CampaignStatus, *, tasks: bool = False, study: StudySummary | str | None = None) -> Group:
    """The run's stages, failures, pending reasons and actions. `study`: a search run's study
    summary (or why it cannot be read), shown as one line under the stage table."""
    from slurmflow.monitoring.status import QUOTA_REASONS, explain, launch_failed

    table = Table(title=f"run {st.run_id}" + ("  (done)" if st.done else ""))
    columns: tuple[str, ...] = ("stage", "tasks", "done", "running", "pending", "failed", "cancelled", "other")
    any_pruned = any(s.counts.get("PRUNED") for s in st.stages)
    columns += ("pruned", "retries") if any_pruned else ("retries",)  # a search's pruned trials: not failures
    for col in columns:
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in st.stages:
        c = dict(s.counts)
        done = c.pop("COMPLETED", 0)
        running = c.pop("RUNNING", 0) + c.pop("COMPLETING", 0) + c.pop("CONFIGURING", 0)
        pending = c.pop("PENDING", 0)
        cancelled = c.pop("CANCELLED", 0)
        pruned = c.pop("PRUNED", 0)
        failed = sum(c.pop(k, 0) for k in ("FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "PREEMPTED"))
        other = sum(c.values())
        cells = [
            s.stage,
            str(s.total),
            f"[green]{done}[/]" if done else "0",
            str(running),
            str(pending),
            f"[red]{failed}[/]" if failed else "0",
            str(cancelled),
            str(other),
        ]
        cells += [f"[magenta]{pruned}[/]" if pruned else "0"] if any_pruned else []
        table.add_row(*cells, str(s.restarts))
    parts: list[RenderableType] = [table]
    if study is not None:
        parts.append(status_study(study))
    failures = [f for s in st.stages for f in s.failures]
    if failures:
        ft = Table(title="failures and cancellations")
        for col in ("task", "trial", "state", "exit", "node", "log"):
            ft.add_column(col)
        for f in failures[:50]:
            why = ""
            if launch_failed(f.state, f.reason, f.signal):
                why = f" ({explain('JobLaunchFailure')})"
            elif f.reason == "DependencyNeverSatisfied":
                why = f" ({explain(f.reason)})"
            ft.add_row(
                f.job_id,
                "-" if f.trial is None else str(f.trial),
                f.state.name + why,
                f.exit,
                f.nodes or "-",
                f.log or "-",
            )
        if len(failures) > 50:
            ft.add_row(f"... {len(failures) - 50} more", "", "", "", "", "")
        parts.append(ft)
    for s in st.stages:
        for reason, n in sorted(s.pending.items(), key=lambda kv: -kv[1]):
            colour = "yellow" if reason in QUOTA_REASONS else "dim"
            parts.append(Text.from_markup(f"[{colour}]{s.stage}: {n} pending: {explain(reason)} ({reason})[/]"))
    if tasks:
        tt = Table(title="tasks")
        for col in ("task", "stage", "trial", "state", "exit", "reason", "node", "retries"):
            tt.add_column(col)
        for r in st.tasks:
            tt.add_row(
                r.job_id,
                r.stage,
                "-" if r.trial is None else str(r.trial),
                r.shown_state,
                r.exit,
                r.reason or "",
                r.nodes or "",
                str(r.restarts),
            )
        parts.append(tt)
    if st.actions:
        at = Table(title="actions: monitor and idle-GPU rules (latest last)")
        for col in ("action", "task", "why"):
            at.add_column(col)
        for a in st.actions[-10:]:
            # What an action_failed tried, what a gpu_idle rule did.
            action = a.action if isinstance(a, ActionFailed | GpuIdle) else None
            at.add_row(a.kind + (f" ({action})" if action else ""), a.task, a.why)
        parts.append(at)
    footer = f"elapsed {_duration(st.elapsed_s)}"
    if not st.done:
        footer += f", about {_duration(st.remaining_s)} left at the current pace"
    if st.not_submitted:
        footer += f"; NOT SUBMITTED: {', '.join(st.not_submitted)} (run `slurmflow resume {st.run_id}`)"
    if st.skipped:
        footer += f"; skipped (could never run): {', '.join(st.skipped)}"
    parts.append(Text(footer))
    parts.extend(Text(n, style="bold yellow") for n in st.notes)
    return Group(*parts)


def status_study(study: StudySummary | str) -> Text:
    """A search's study in `status`: done/target, running, pruned, failed, the best so far."""
    if isinstance(study, str):
        return Text(f"study: {study}", style="yellow")
    from slurmflow.results.study_view import study_line

    return Text(study_line(study), style="bold")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} GiB"


def gpu_view(run: RunGpu, *, limit: int = 50) -> RenderableType:
    """Per task: utilisation at a glance (a sparkline), percentiles, idle share, memory, GPU-hours;
    then per stage and for the campaign."""
    parts: list[RenderableType] = []
    tt = Table(title=f"GPU use of {run.run_id}, per task")
    for col in (
        "task",
        "stage",
        "trial",
        "GPUs",
        "utilisation over time",
        "mean",
        "p95",
        "idle",
        "peak mem",
        "GPU-h used/alloc",
    ):
        tt.add_column(col, justify="left" if col in ("task", "stage", "utilisation over time") else "right")
    shown = [t for t in run.tasks if t.summary is not None]
    for t in shown[:limit]:
        s = t.summary
        assert s is not None
        util = t.timeline[1]
        idle = "-" if s.idle_fraction is None else f"{s.idle_fraction:.0%}"
        tt.add_row(
            t.job_id,
            t.stage,
            "-" if t.trial is None else str(t.trial),
            str(t.gpus),
            Text(gpustats.sparkline(util, 30), style="green" if (s.util_mean or 0) >= 25 else "red"),
            _pct(s.util_mean),
            _pct(s.util_p95),
            idle,
            _mib(s.peak_mem_mib),
            f"{s.gpu_hours_used:.3f}/{s.gpu_hours_allocated:.3f}",
        )
    parts.append(tt)
    if len(shown) > limit:
        parts.append(Text(f"... {len(shown) - limit} more tasks (--all shows every task, --json gives them all)"))
    waiting = len(run.tasks) - len(shown)
    if waiting:
        parts.append(Text(f"{waiting} GPU tasks have no samples yet (not started, or sampling is off)"))
    st = Table(title="per stage")
    for col in (
        "stage",
        "tasks",
        "mean",
        "median",
        "p95",
        "idle",
        "peak mem",
        "GPU-h used",
        "GPU-h allocated",
        "efficiency",
    ):
        st.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in [*run.stages.items(), ("campaign", run.campaign)]:
        st.add_row(
            name,
            str(s.tasks),
            _pct(s.util_mean),
            _pct(s.util_median),
            _pct(s.util_p95),
            "-" if s.idle_fraction is None else f"{s.idle_fraction:.0%}",
            _mib(s.peak_mem_mib),
            f"{s.gpu_hours_used:.3f}",
            f"{s.gpu_hours_allocated:.3f}",
            "-" if s.efficiency is None else f"{s.efficiency:.0%}",
        )
    parts.append(st)
    for e in run.events:
        parts.append(Text(f"idle GPU: {e.get('task')} ({e.get('action')}): {e.get('why')}", style="bold yellow"))
    stops = sorted({why for t in shown if t.summary for why in t.summary.stops})
    for why in stops:
        parts.append(Text(f"sampler stopped early on some tasks: {why}", style="yellow"))
    return Group(*parts)
