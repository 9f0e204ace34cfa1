"""The commands that answer "which trial won, at what cost": `results`, `runs`, `report` and
`track`, and the terminal Gantt of `status --gantt`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table as RichTable
from rich.text import Text

from slurmflow.cli import args as cliargs
from slurmflow.errors import UsageError
from slurmflow.run import schedulers
from slurmflow.rundir.store import RunStore

if TYPE_CHECKING:
    from slurmflow.results import table as results_table
    from slurmflow.results.collect import RunResults
    from slurmflow.results.study_view import StudySummary

STATE_STYLE = {
    "COMPLETED": "green",
    "RUNNING": "blue",
    "PENDING": "dim",
    "NOT_SUBMITTED": "dim",
    "CANCELLED": "bright_black",
}


def add_parsers(sub: Any) -> None:
    res = sub.add_parser(
        "results",
        help="one row per trial, best first: parameters, state, objective, metrics, time, retries, GPU-hours",
        description="Read every trial's metrics (slurmflow.log/summary, metrics.json) and its tasks' "
        "attempts (Slurm accounting or the local engine) and rank the trials by the experiment's objective. "
        "Several runs side by side show the parameters that differ.",
    )
    res.add_argument("runs", nargs="+", metavar="RUN", help="run ids (in --runs-dir) or run directories")
    cliargs.runs_dir(res)
    res.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="EXPR",
        help="keep rows where EXPR holds: test_accuracy>0.8, state=FAILED, lr=0.1 (repeat: all must hold)",
    )
    res.add_argument("--top", type=int, default=None, metavar="N", help="only the N best ranked trials")
    res.add_argument(
        "--objective",
        action="append",
        default=None,
        metavar="METRIC[:max|min]",
        help="rank by this metric instead of the experiment's objective (repeat for tie-breakers)",
    )
    out = res.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON for scripts")
    out.add_argument("--csv", action="store_true", help="print CSV")
    res.set_defaults(func=cmd_results)

    runs = sub.add_parser(
        "runs",
        help="list the runs in a runs directory: name, time, size, state, best objective",
        description="List the run directories under --runs-dir, newest first, with their state and best trial.",
    )
    cliargs.runs_dir(runs)
    runs.add_argument("--json", action="store_true", help="print JSON for scripts")
    runs.set_defaults(func=cmd_runs)

    rep = sub.add_parser(
        "report",
        help="write one self-contained HTML report: DAG, Gantt timeline, GPU use, curves, results table",
        description="Write RUN/report.html (or --out): the plan's DAG, a Gantt timeline of every task attempt "
        "from Slurm's accounting or the local engine, GPU utilisation, learning curves, the sortable results "
        "table and provenance. No network is needed to open it.",
    )
    rep.add_argument("run", metavar="RUN", help="run id (in --runs-dir) or run directory")
    cliargs.runs_dir(rep)
    rep.add_argument("--out", default=None, metavar="FILE", help="where to write it (default: RUN/report.html)")
    rep.add_argument("--serve", action="store_true", help="then serve it on localhost for a browser (Ctrl-C stops)")
    rep.add_argument("--port", type=int, default=0, help="port for --serve (default: a free one)")
    rep.add_argument("--json", action="store_true", help="print the report's path as JSON")
    rep.set_defaults(func=cmd_report)

    trk = sub.add_parser(
        "track",
        help="log a run to MLflow: the campaign as a parent run, each trial as a child (idempotent)",
        description="Log the campaign to MLflow: params = each trial's overrides, metrics with their steps, "
        "tags = run id, Slurm job ids, nodes, state, git commit; the resolved config and logs as artifacts. "
        "Running it again logs only what is new. Needs `pip install 'slurmflow[mlflow]'`.",
    )
    trk.add_argument("run", metavar="RUN", help="run id (in --runs-dir) or run directory")
    cliargs.runs_dir(trk)
    trk.add_argument(
        "--uri",
        default=None,
        help="MLflow tracking URI (default: the experiment's tracking.mlflow.uri, $MLFLOW_TRACKING_URI, "
        "or sqlite:///RUNS_DIR/mlflow.db)",
    )
    trk.add_argument("--experiment", default=None, help="MLflow experiment name (default: the experiment's)")
    trk.add_argument("--json", action="store_true", help="print JSON for scripts")
    trk.set_defaults(func=cmd_track)


def _open(run: str, args: argparse.Namespace) -> RunStore:
    return RunStore.open(run, Path(args.runs_dir))


def _collect(store: RunStore, args: argparse.Namespace, **kw: Any) -> RunResults:
    from slurmflow.experiment.objective import parse_objective_flag
    from slurmflow.results.collect import collect

    objectives = None
    if getattr(args, "objective", None):
        objectives = [parse_objective_flag(o) for o in args.objective]
    return collect(store, schedulers.of_run(store, args.via), objectives=objectives, **kw)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


LABELS = {
    "elapsed_s": "time",
    "gpu_hours_allocated": "GPU-h alloc",
    "gpu_hours_used": "GPU-h used",
    "gpu_efficiency": "GPU eff",
}


def _cell(col: str, v: Any) -> Text:
    if col == "state":
        return Text(str(v), style=STATE_STYLE.get(str(v), "red"))
    if col == "retries":
        return Text(str(v), style="yellow" if v else "")
    if col == "elapsed_s":
        return Text(_duration(v))
    if col == "gpu_efficiency":
        return Text("-" if v is None else f"{100 * v:.0f}%")
    if col.startswith("param.") and isinstance(v, str):
        return Text(_short_float(v))
    return Text(_fmt(v))


def _short_float(text: str) -> str:
    """A parameter a search sampled (9.56647474956527) in 6 significant digits; anything that is
    not a long float stays as the override wrote it. --json and --csv keep every digit."""
    if len(text) <= 8 or not any(c in text for c in ".eE"):
        return text
    try:
        return f"{float(text):.6g}"
    except ValueError:
        return text


def fit(t: results_table.Table, rows: list[dict[str, Any]], width: int) -> tuple[list[str], list[str]]:
    """The columns that fit `width` without cutting a cell: the run, rank, trial, state, the
    parameters that differ and the objectives always; then retries, time, the other metrics and
    GPU figures while they fit. Columns with nothing to show (GPU figures of a run without GPUs)
    go first. Returns (shown, left out)."""
    from slurmflow.results.table import COST

    cols = [c for c in t.columns if any(r.get(c) not in (None, 0, 0.0) for r in rows) or c not in COST]
    cols = [c for c in cols if c != "retries"] + (["retries"] if "retries" in t.columns else [])
    must = [c for c in cols if c in ("run", "rank", "trial", "state") or c.startswith("param.") or c in t.objectives]
    rest = [c for c in ("retries", "elapsed_s", *t.metrics, *COST) if c in cols and c not in must]

    def need(c: str) -> int:
        head = len(LABELS.get(c, c.removeprefix("param.")))
        return max([head, *(len(_cell(c, r.get(c)).plain) for r in rows)]) + 3

    used = 1 + sum(need(c) for c in must)
    shown = list(must)
    for c in rest:
        if used + need(c) <= width:
            shown.append(c)
            used += need(c)
    left = [c for c in t.columns if c not in shown and c in cols]
    return [c for c in t.columns if c in shown], left


def results_view(t: results_table.Table, *, width: int = 200, limit: int = 200) -> RichTable:
    title = ", ".join(
        f"{r.run_id} ({r.experiment}): " + (", ".join(f"{o.metric} ({o.mode})" for o in r.objectives) or "no objective")
        for r in t.runs
    )
    rows = t.rows[:limit]
    shown, left = fit(t, rows, width)
    caption = []
    if t.constant:
        caption.append("same in every row: " + " ".join(f"{k}={v}" for k, v in t.constant.items()))
    if left:
        names = ", ".join(LABELS.get(c, c.removeprefix("param.")) for c in left)
        caption.append(f"left out to fit the terminal: {names} (--csv, --json, or a wider terminal)")
    if len(t.rows) > limit:
        caption.append(f"{len(t.rows) - limit} more row(s): --top, --where, --csv or --json")
    caption.append("times from " + ", ".join(sorted({r.source for r in t.runs})))
    out = RichTable(title=title, caption="; ".join(caption), title_justify="left", caption_justify="left")
    for col in shown:
        left_aligned = col in ("run", "state") or col.startswith("param.")
        out.add_column(
            LABELS.get(col, col.removeprefix("param.")),
            justify="left" if left_aligned else "right",
            style="bold" if col in t.objectives else None,
            no_wrap=True,
        )
    for r in rows:
        out.add_row(*(_cell(col, r.get(col)) for col in shown))
    return out


def study_of(store: RunStore, *, importances: bool = True) -> StudySummary | str | None:
    """A search run's study summary, or why it cannot be read (shown where the study would be:
    the trials' own results never depend on it); None for a run without a search."""
    from slurmflow.results import study_view

    try:
        return study_view.load(store, importances=importances)
    except study_view.StudyUnavailable as exc:
        return str(exc)


def study_panel(study: StudySummary | str, *, title: str = "Study") -> Panel:
    """The study above the results table: progress and best trial, then what mattered."""
    from slurmflow.results.study_view import importance_lines, study_line

    if isinstance(study, str):
        return Panel(Text(study, style="yellow"), title=title, title_align="left", expand=False)
    body = Text(study_line(study, label="Study"), style="bold")
    for line in importance_lines(study):
        body.append("\n" + line)
    return Panel(body, title=f"{title}: {study.study_name}", title_align="left", expand=False)


def cmd_results(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.results import table as results_table

    stores = [_open(r, args) for r in args.runs]
    runs = [_collect(store, args) for store in stores]
    # CSV is the trials' rows alone: a study is read only where it is shown.
    studies = [None if args.csv else study_of(store) for store in stores]
    t = results_table.build(runs, filters=args.where, top=args.top)
    if args.json:
        doc = results_table.to_json(t)
        for entry, study in zip(doc["runs"], studies, strict=True):  # to_json keeps the runs' order
            if study is not None:
                entry["study"] = study.to_dict() if not isinstance(study, str) else {"error": study}
        print(json.dumps(doc, indent=2, default=str))
    elif args.csv:
        print(results_table.to_csv(t), end="")
    else:
        for run, study in zip(runs, studies, strict=True):
            if study is not None:
                console.print(study_panel(study, title=f"Study of {run.run_id}" if len(runs) > 1 else "Study"))
        console.print(results_view(t, width=console.width))
        for run in runs:
            best = run.best
            if best is not None:
                values = ", ".join(f"{o.metric}={_fmt(v)}" for o, v in zip(run.objectives, best.objective, strict=True))
                console.print(f"best of {run.run_id}: trial {best.index} ({' '.join(best.overrides)}): {values}")
    return 0


def _states(run: RunResults) -> str:
    counts: dict[str, int] = {}
    for t in run.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    for s in run.singles:
        if s.state not in ("COMPLETED", "NOT_SUBMITTED"):
            counts[f"{s.stage} {s.state}"] = 1
    return ", ".join(f"{k} {v}" if v > 1 or k.isupper() else k for k, v in sorted(counts.items()))


def cmd_runs(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.results.collect import collect, run_size

    root = Path(args.runs_dir)
    if not root.is_dir():
        raise UsageError(f"--runs-dir {root}: no such directory: pass the directory your runs are in")
    rows: list[dict[str, Any]] = []
    for d in sorted(
        (p for p in root.iterdir() if (p / "plan.json").is_file()), key=lambda p: p.stat().st_mtime, reverse=True
    ):
        store = RunStore(d)
        try:
            run = collect(store, schedulers.of_run(store, args.via), gpu=False)
        except Exception as exc:  # a run this version cannot read is listed, not fatal
            rows.append({"run_id": d.name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        top = run.best
        launched = run.provenance.get("time") or run.provenance.get("launched")
        rows.append(
            {
                "run_id": run.run_id,
                "experiment": run.experiment,
                "launched": launched if launched is not None else d.stat().st_mtime,
                "size_bytes": run_size(d),
                "trials": len(run.trials),
                "state": _states(run),
                "objective": run.objectives[0].metric if run.objectives else None,
                "best": None if top is None else top.objective[0],
                "best_trial": None if top is None else top.index,
                "path": str(d),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    out = RichTable(title=f"runs in {root}", title_justify="left")
    for col in ("run", "launched", "size", "trials", "state", "best"):
        out.add_column(col, no_wrap=col in ("run", "launched"))
    for r in rows:
        if "error" in r:
            out.add_row(r["run_id"], "-", "-", "-", Text(r["error"], style="red"), "-")
            continue
        when = r["launched"]
        shown = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(when))
            if isinstance(when, (int, float))
            else str(when)[:16].replace("T", " ")
        )
        size = r["size_bytes"]
        best = "-" if r["best"] is None else f"{r['objective']}={_fmt(r['best'])} (trial {r['best_trial']})"
        out.add_row(
            r["run_id"],
            shown,
            f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB",
            str(r["trials"]),
            r["state"],
            best,
        )
    console.print(out)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.results import report

    store = _open(args.run, args)
    run = _collect(store, args)
    path = report.write(run, Path(args.out) if args.out else store.path("report.html"), study=study_of(store))
    if args.json:
        print(json.dumps({"run_id": run.run_id, "report": str(path)}))
    else:
        console.print(f"report: {path}")
    if args.serve:
        report.serve(path, port=args.port)
    return 0


def cmd_track(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.results import tracking

    store = _open(args.run, args)
    run = _collect(store, args)
    done = tracking.track(run, uri=args.uri, experiment=args.experiment)
    if args.json:
        print(json.dumps(done.to_dict(), indent=2, default=str))
    else:
        console.print(str(done))
    return 0


def gantt(store: RunStore, via: str | None, console: Console, limit: int) -> None:
    from slurmflow.results import gantt as gantt_view
    from slurmflow.results.collect import collect

    run = collect(store, schedulers.of_run(store, via), gpu=False)
    console.print(gantt_view.terminal(run, width=console.width, limit=limit))
