"""`slurmflow report`: a run as ONE self-contained HTML file (no network needed to open it).

Sections: what the run was and how it ended, a `search:` run's study (study_report.py), the
plan's DAG, a Gantt timeline of every attempt, GPU utilisation, learning curves, the sortable
results table, once-only tasks, provenance.

Built for campaigns of 10,000 trials: every figure is a handful of traces made of plain lists
(one per state, never one per task), and the tables are joined strings. The Gantt draws SVG bars
(countable, hoverable) up to GANTT_BARS_MAX segments; past that, SVG makes the browser crawl
(seconds per redraw), so each state becomes one WebGL line trace instead: every attempt stays
visible, hover works at each bar's ends.
"""

from __future__ import annotations

import contextlib
import gc
import http.server
import importlib
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmflow.fsio import write_atomic
from slurmflow.results import gantt
from slurmflow.results import report_page as html
from slurmflow.results.collect import RunResults
from slurmflow.results.report_page import esc, figure, note

if TYPE_CHECKING:
    from slurmflow.results.study_view import StudySummary

GANTT_BARS_MAX = 2000
CURVE_TRIALS_MAX = 50
GPU_LINES_MAX = 20  # per-task GPU lines up to this many tasks; per-stage means past it
GPU_BINS = 300
GPU_SAMPLES_MAX = 300_000
PENDING_COLOUR = "#c3cad5"  # time queued: one light grey whatever ended the attempt
DAG_LAYER_PX = 150  # vertical distance between layers
DAG_HALF_BOX = 0.25  # half a stage box's height, in layers: arrows run from box edge to box edge


def write(results: RunResults, out: Path, *, study: StudySummary | str | None = None) -> Path:
    """Write the report to `out` (atomically: a browser open on it never sees half a page).

    `study`: a search run's study (study_view.load), or why it cannot be read; with either, the
    page gains a "Search" section. None (a run without a search) leaves the page as it was.

    The garbage collector is paused meanwhile: a large campaign's page is a million small lists
    and strings, all kept until the page is joined, and each collection pass would walk them
    (and the run's results) again for nothing: a third of the time for 10,000 trials."""
    paused = gc.isenabled()
    gc.disable()
    try:
        page = _page(results, study)
    finally:
        if paused:
            gc.enable()
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, page)  # private, as the rest of the run directory


def _page(results: RunResults, study: StudySummary | str | None = None) -> str:
    tz = time.localtime(results.now).tm_gmtoff
    search = ""
    if study is not None:  # a search's study comes first: for such a run, it is the answer
        from slurmflow.results import study_report

        search = html.section("search", "Search", study_report.content(study))
    body = "".join(
        (
            html.summary(results, search=bool(search)),
            search,
            html.section("plan", "The plan", _dag(results)),
            html.section("timeline", "Timeline", _timeline(results, tz)),
            html.section("gpu", "GPU utilisation", _gpu(results, tz)),
            html.section("curves", "Learning curves", _curves(results)),
            html.section("results", "Results", html.results_table(results)),
            html.section("singles", "Once-only tasks", html.singles_table(results)),
            html.section("provenance", "Provenance", html.provenance(results)),
        )
    )
    plotly_js = _plotly_js().replace("</script", "<\\/script")
    return html.page(f"{results.run_id}: slurmflow report", body, plotly_js)


def _plotly_js() -> str:
    """plotly.js as the plotly package ships it (read directly: importing plotly costs a second)."""
    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text("utf-8")
    except OSError:
        return str(importlib.import_module("plotly.offline").get_plotlyjs())


def serve(path: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve the one file over HTTP on this machine until Ctrl-C: a browser elsewhere reaches it
    through an ssh tunnel (`ssh -L PORT:127.0.0.1:PORT login-node`), nothing else is exposed."""
    content = path.read_bytes()
    names = {"/", f"/{path.name}"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in names:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a local viewer needs no access log on the terminal

    with http.server.ThreadingHTTPServer((host, port), Handler) as httpd:
        bound = httpd.server_address[1]
        print(f"serving {path} at http://{host}:{bound}/{path.name} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()


# --- sections -------------------------------------------------------------------------------------


def _depths(r: RunResults) -> dict[str, int]:
    """Each stage's layer: 0 without dependencies, else one below its deepest parent."""
    depth: dict[str, int] = {}

    def of(name: str, seen: frozenset[str]) -> int:
        if name not in depth:
            stage = r.plan.stages.get(name)
            parents = [d.stage for d in stage.deps if d.stage in r.plan.stages and d.stage not in seen] if stage else []
            depth[name] = 1 + max((of(p, seen | {name}) for p in parents), default=-1)
        return depth[name]

    for name in r.plan.stages:
        of(name, frozenset())
    return depth


def _dag(r: RunResults) -> str:
    """Stages as boxes layered by dependency depth, top to bottom; edges labelled by their kind."""
    if not r.plan.stages:
        return note("the plan has no stages")
    depth = _depths(r)
    layers: dict[int, list[str]] = {}
    for name in r.plan.stages:
        layers.setdefault(depth[name], []).append(name)
    pos = {n: (i - (len(names) - 1) / 2, -d) for d, names in layers.items() for i, n in enumerate(names)}
    states_of: dict[str, Counter[str]] = {}
    for t in r.tasks:
        states_of.setdefault(t.stage, Counter())[t.state] += 1
    boxes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for name, stage in r.plan.stages.items():
        x, y = pos[name]
        boxes.append(_stage_box(r, name, x, y, states_of.get(name, Counter())))
        for dep in stage.deps:
            if dep.stage not in pos:
                continue
            px, py = pos[dep.stage]
            tail, head = py - DAG_HALF_BOX, y + DAG_HALF_BOX
            edges.append(
                {"x": x, "y": head, "ax": px, "ay": tail, "xref": "x", "yref": "y", "axref": "x", "ayref": "y",
                 "showarrow": True, "arrowhead": 2, "arrowsize": 1.2, "arrowwidth": 1.5, "arrowcolor": "#888",
                 "text": ""}
            )  # fmt: skip
            edges.append(
                {"x": (x + px) / 2, "y": (head + tail) / 2, "xref": "x", "yref": "y", "showarrow": False,
                 "text": esc(dep.kind.value), "font": {"size": 11, "color": "#555"},
                 "bgcolor": "rgba(255,255,255,0.9)"}
            )  # fmt: skip
    width = max(len(v) for v in layers.values())
    layout = {
        "height": DAG_LAYER_PX * len(layers) + 40,
        "margin": {"l": 20, "r": 20, "t": 20, "b": 20},
        "xaxis": {"visible": False, "range": [-(width + 1) / 2, (width + 1) / 2], "fixedrange": True},
        "yaxis": {"visible": False, "range": [-len(layers) + 0.5, 0.5], "fixedrange": True},
        "annotations": edges + boxes,  # boxes last: drawn over the arrows' ends
        "plot_bgcolor": "#fff",
        "showlegend": False,
    }
    remark = note("stages by dependency depth; an array runs once per trial (one Slurm array task each)")
    return remark + figure("dag", [], layout)


def _stage_box(r: RunResults, name: str, x: float, y: float, states: Counter[str]) -> dict[str, Any]:
    """A stage as the plan runs it (once, or an array of one task per trial) and how its tasks ended."""
    stage = r.plan.stages[name]
    if stage.per_trial:
        nodes = [n for n in r.plan.nodes if n.stage == name]
        kind = f"array of {sum(n.size for n in nodes)}" + (f" in {len(nodes)} chunks" if len(nodes) > 1 else "")
    else:
        kind = "once"
    if stage.singleton:
        kind += ", singleton"
    line = ", ".join(f"{n} {s}" for s, n in states.most_common(3))
    return {
        "x": x, "y": y, "xref": "x", "yref": "y", "showarrow": False, "borderpad": 6, "borderwidth": 2,
        "bordercolor": gantt.HTML_COLOURS[_worst(states)], "bgcolor": "#fff", "font": {"size": 13},
        "text": f"<b>{esc(name)}</b><br>{esc(kind)}<br><span style='color:#666'>{esc(line or 'no tasks')}</span>",
    }  # fmt: skip


def _worst(states: Counter[str]) -> str:
    """The colour of a stage's box: its most urgent tasks' (a failure before all else)."""
    groups = {gantt.colour_group(s) for s in states}
    return next((g for g in ("failed", "running", "requeued", "completed", "cancelled") if g in groups), "other")


def _timeline(r: RunResults, tz: int) -> str:
    """One bar per attempt (and a lighter one for its time queued), one trace per state."""
    rows = gantt.ordered_tasks(r)
    segs = [s for i, t in enumerate(rows) for s in gantt.task_segments(t, i, r.now)]
    if not segs:
        return note("no task has started yet")
    labels = [esc(gantt.label(t)) for t in rows]  # plotly reads HTML in labels: stage names are escaped
    gl = len(segs) > GANTT_BARS_MAX
    plot_px = min(1600, max(260, 22 * len(rows) + 120)) - 80
    traces: dict[str, dict[str, Any]] = {}
    for s in segs:
        key = gantt.PENDING if s.kind == gantt.PENDING else "REQUEUED" if s.requeued else s.state
        tr = traces.get(key)
        if tr is None:
            tr = traces[key] = _gantt_trace(key, gl, plot_px / len(rows))
        lo, hi = round((s.start + tz) * 1000), round((s.end + tz) * 1000)  # whole ms: a shorter page
        cd = [s.job_id, esc(s.node or "?"), s.attempt, s.state, lo, hi, ""]
        if gl:
            tr["x"] += [lo, hi, None]
            tr["y"] += [s.row, s.row, None]
            tr["customdata"] += [cd, cd, None]
        else:
            tr["base"].append(lo)
            tr["x"].append(hi - lo)
            tr["y"].append(labels[s.row])
            tr["customdata"].append(cd)
    # Queued time first (under the bars), then by colour: failures last, on top where rows overlap.
    order = [gantt.PENDING, "COMPLETED", "CANCELLED", "REQUEUED", "RUNNING"]
    data = sorted(traces.values(), key=lambda t: (order.index(t["name"]) if t["name"] in order else 9, t["name"]))
    yaxis: dict[str, Any] = {"autorange": "reversed", "automargin": True}
    if not gl:
        yaxis.update({"type": "category", "categoryorder": "array", "categoryarray": labels})
    elif len(rows) <= 100:
        yaxis.update({"tickvals": list(range(len(rows))), "ticktext": labels})
    else:
        yaxis.update({"showticklabels": False, "title": {"text": f"{len(rows)} tasks, in plan order"}})
    offset = time.strftime("%z", time.localtime(r.now))
    layout = {
        "height": plot_px + 80,
        "barmode": "overlay",
        "margin": {"l": 10, "r": 10, "t": 30, "b": 50},
        "xaxis": {"type": "date", "title": {"text": f"wall time (UTC{offset[:3]}:{offset[3:]})"}},
        "yaxis": yaxis,
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        "hovermode": "closest",
    }
    started = sum(1 for s in segs if s.kind == gantt.RUNNING)
    notes = [f"{started} attempts of {len(rows)} tasks; time queued in light grey; times from {esc(r.source)}"]
    if r.source == "task status files":
        notes.append("queue times unknown: the scheduler's records were not available, so no pending bars")
    if gl:
        notes.append(
            f"{len(segs)} segments: drawn as WebGL lines (SVG bars past {GANTT_BARS_MAX} slow the browser); "
            "where rows overlap, failures are drawn on top"
        )
    after = "" if gl else "sfTagBars"
    return "".join(note(n) for n in notes) + figure("gantt", data, layout, prepare="sfGanttPrepare", after=after)


def _gantt_trace(key: str, gl: bool, row_px: float) -> dict[str, Any]:
    """An empty trace for one state's attempts (or every attempt's time queued)."""
    pending = key == gantt.PENDING
    colour = PENDING_COLOUR if pending else gantt.HTML_COLOURS[gantt.colour_group(key)]
    hover = (
        "<b>%{customdata[3]}</b> job %{customdata[0]}, attempt %{customdata[2]}<br>node %{customdata[1]}<br>"
        "%{customdata[4]} to %{customdata[5]} (%{customdata[6]})"
        f"<extra>{'queued' if pending else 'ran'}</extra>"
    )
    common = {
        "name": key,
        "customdata": [],
        "hovertemplate": hover,
        "meta": {"kind": gantt.PENDING if pending else gantt.RUNNING, "state": key},
        "x": [],
        "y": [],
    }
    if gl:
        width = max(1.0, min(9.0, row_px * (0.45 if pending else 0.8)))
        return {**common, "type": "scattergl", "mode": "lines", "line": {"color": colour, "width": width}}
    return {
        **common,
        "type": "bar",
        "orientation": "h",
        "base": [],
        "width": 0.45 if pending else 0.8,
        "marker": {"color": colour, "line": {"width": 0}},
    }


def _gpu(r: RunResults, tz: int) -> str:
    """Utilisation over time: a line per task for a few tasks, a mean per stage for many."""
    sampled = [t for t in (r.gpu.tasks if r.gpu else ()) if t.timeline[0]]
    if not sampled:
        why = (
            "no stage asks for GPUs"
            if not any(s.resources.gpus for s in r.plan.stages.values())
            else "no task has written any yet (or sampling is off)"
        )
        return note(f"no GPU samples: {why}")
    data: list[dict[str, Any]] = []
    if len(sampled) <= GPU_LINES_MAX:
        what = "mean utilisation over each task's GPUs"
        for t in sampled:
            name = esc(t.stage if t.trial is None else f"{t.stage}[{t.trial}]")
            x = [round((v + tz) * 1000) for v in t.timeline[0]]
            data.append({"type": "scatter", "mode": "lines", "name": name, "x": x, "y": list(t.timeline[1])})
    else:
        what = f"{len(sampled)} tasks: mean utilisation per stage over the tasks sampling at each time"
        lo = min(t.timeline[0][0] for t in sampled)
        step = max((max(t.timeline[0][-1] for t in sampled) - lo) / GPU_BINS, 1e-9)
        # Every `stride`-th sample: the mean of 300 bins needs no more than ~300,000 of them.
        stride = max(1, sum(len(t.timeline[0]) for t in sampled) // GPU_SAMPLES_MAX)
        for stage in dict.fromkeys(t.stage for t in sampled):
            sums, counts = [0.0] * (GPU_BINS + 1), [0] * (GPU_BINS + 1)
            for t in sampled:
                if t.stage != stage:
                    continue
                for v, u in zip(t.timeline[0][::stride], t.timeline[1][::stride], strict=False):
                    b = int((v - lo) / step)
                    sums[b] += u
                    counts[b] += 1
            x = [round((lo + (b + 0.5) * step + tz) * 1000) for b in range(GPU_BINS + 1) if counts[b]]
            y = [round(sums[b] / counts[b], 1) for b in range(GPU_BINS + 1) if counts[b]]
            data.append({"type": "scatter", "mode": "lines", "name": esc(stage), "x": x, "y": y})
    layout = {
        "height": 360,
        "margin": {"l": 50, "r": 10, "t": 20, "b": 40},
        "xaxis": {"type": "date"},
        "yaxis": {"title": {"text": "GPU utilisation %"}, "range": [0, 105]},
    }
    return note(esc(what)) + figure("gpu-util", data, layout)


def _curves(r: RunResults) -> str:
    """A chart per logged metric, a line per trial: the best ranked first, at most
    CURVE_TRIALS_MAX of them (more lines than that is a blur, and a page too heavy to open)."""
    names = list(dict.fromkeys(m for t in r.trials for m in t.curves))
    if not names:
        return note("no trial logged a metric at more than one step")
    parts = []
    for i, metric in enumerate(names):
        having = [t for t in r.trials if metric in t.curves]
        shown = having[:CURVE_TRIALS_MAX]
        data = []
        for t in shown:
            pts = sorted(t.curves[metric].items())
            name = f"trial {t.index}" + (f" (#{t.rank})" if t.rank else "")
            data.append(
                {"type": "scatter", "mode": "lines", "name": name, "x": [p[0] for p in pts], "y": [p[1] for p in pts]}
            )
        layout = {
            "title": {"text": esc(metric)},
            "height": 360,
            "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
            "xaxis": {"title": {"text": "step"}},
        }
        parts.append(figure(f"curve-{i}", data, layout))
        if len(having) > len(shown):
            parts.append(note(f"{esc(metric)}: {len(shown)} of {len(having)} trials, best ranked first"))
    cap = f"one line per trial, at most {CURVE_TRIALS_MAX} per chart (best ranked first)"
    return note(cap) + '<div class="curves">\n' + "".join(parts) + "</div>\n"
