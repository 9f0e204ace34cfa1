"""The report's HTML: its stylesheet, its small script (table sorting, figure drawing, marks on
the Gantt's bars), how a figure and the whole page are written, and the sections that are text
and tables (summary, results, once-only tasks, provenance).

Figures are plain JSON specs handed to `Plotly.newPlot`: building plotly's Python figure objects
validates every value and costs seconds on a campaign of 10,000 trials; the JavaScript library,
inlined once in the page head, is all the page needs.
"""

from __future__ import annotations

import html
import json
import shlex
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from slurmflow.results import gantt
from slurmflow.results.collect import RunResults, TrialResult

NA = "\N{EN DASH}"  # a value the run does not have

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d1d1f; background: #fff; }
main { max-width: 1500px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
nav a { margin-right: 14px; } .note { color: #666; font-size: 13px; margin: 4px 0; }
.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 8px 0; }
.facts dt { color: #666; } .facts dd { margin: 0; }
.curves { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 12px; }
table { border-collapse: collapse; font-size: 13px; } th, td { padding: 3px 8px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td[data-v] { text-align: right; font-variant-numeric: tabular-nums; } code { font-size: 12px; }
.tablewrap { max-height: 800px; overflow: auto; border: 1px solid #eee; }
.state { font-weight: 600; } .state-completed { color: #2ca02c; } .state-failed { color: #d62728; }
.state-running { color: #1f77b4; } .state-requeued { color: #b07d00; } .state-cancelled, .state-other { color: #777; }
pre.diff { max-height: 600px; overflow: auto; background: #f8f8f8; padding: 8px; font-size: 12px; }
"""

# Sorting: numeric columns sort on each cell's data-v (empty = no value, always last), others on
# their text. Figures: drawn once the page has parsed, each marked data-rendered="1" when plotly
# is done, so a reader (or a test) knows the page is complete. Gantt bars: plotly draws a bar
# trace's points as `.barlayer .trace .point`, in the order of the data; each gets the kind
# (pending/running), state and job id of its segment, redone after every redraw.
JS = """
(function () {
  "use strict";
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  window.sfClock = function (ms) { return new Date(ms).toISOString().replace("T", " ").slice(0, 19); };
  window.sfDuration = function (ms) {
    var s = ms / 1000;
    if (s < 60) return (s < 10 ? s.toFixed(2) : s.toFixed(0)) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(Math.floor(s % 60)) + "s";
    return Math.floor(s / 3600) + "h" + pad(Math.floor((s % 3600) / 60)) + "m";
  };
  window.sfGanttPrepare = function (data) {
    data.forEach(function (tr) {
      (tr.customdata || []).forEach(function (c) {
        if (!c || typeof c[4] !== "number") return;
        c[6] = window.sfDuration(c[5] - c[4]);
        c[4] = window.sfClock(c[4]);
        c[5] = window.sfClock(c[5]);
      });
    });
  };
  window.sfTagBars = function (gd) {
    gd.querySelectorAll(".barlayer .trace").forEach(function (g, i) {
      var tr = gd.data[i];
      if (!tr || !tr.meta) return;
      g.setAttribute("data-kind", tr.meta.kind);
      g.querySelectorAll(".point").forEach(function (p, j) {
        p.setAttribute("data-kind", tr.meta.kind);
        p.setAttribute("data-state", tr.meta.state);
        if (tr.customdata && tr.customdata[j]) p.setAttribute("data-job", tr.customdata[j][0]);
      });
    });
  };
  window.sfFigure = function (id, data, layout, after) {
    var gd = document.getElementById(id);
    var config = { responsive: true, displaylogo: false };
    Plotly.newPlot(gd, data, layout, config).then(function () {
      if (after) { after(gd); gd.on("plotly_afterplot", function () { after(gd); }); }
      gd.setAttribute("data-rendered", "1");
    }).catch(function (e) { console.error("figure " + id + " failed: " + e); });
  };
  function sortable(table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var numeric = th.getAttribute("data-type") === "num", body = table.tBodies[0];
        var rows = Array.prototype.map.call(body.rows, function (r) {
          var c = r.cells[col], v = c.getAttribute("data-v");
          var key = numeric ? (v === null || v === "" ? null : parseFloat(v)) : c.textContent;
          return [key, r];
        });
        rows.sort(function (a, b) {
          if (a[0] === null || b[0] === null) return a[0] === b[0] ? 0 : a[0] === null ? 1 : -1;
          var d = numeric ? a[0] - b[0] : String(a[0]).localeCompare(String(b[0]), undefined, { numeric: true });
          return asc ? d : -d;
        });
        var frag = document.createDocumentFragment();
        rows.forEach(function (p) { frag.appendChild(p[1]); });
        body.appendChild(frag);
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(sortable);
  });
})();
"""


def esc(value: object) -> str:
    """Text for HTML, quotes included (it also goes into attributes)."""
    return html.escape(str(value), quote=True)


def js(value: Any) -> str:
    """A value as a JavaScript literal safe inside <script>: no `</script>`, `<!--` or `&`
    sequence survives (NaN and Infinity stay: JavaScript reads them, plotly draws a gap)."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def figure(
    div_id: str, data: list[dict[str, Any]], layout: dict[str, Any], *, prepare: str = "", after: str = ""
) -> str:
    """A figure's container and the script that draws it; `prepare` (a JS function name) may
    rewrite the data first, `after` runs after each redraw."""
    call = f"sfFigure({js(div_id)}, data, {js(layout)}, {after or 'null'});"
    prep = f"{prepare}(data); " if prepare else ""
    return (
        f'<div id="{esc(div_id)}" class="sf-figure"></div>\n'
        f"<script>(function () {{ var data = {js(data)}; {prep}{call} }})();</script>\n"
    )


# The page may run its own inline scripts and nothing else: no request leaves it, whatever a
# value in it says. plotly's WebGL traces compile shaders with `new Function` (unsafe-eval); its
# image export draws through data: and blob: URLs.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:"
)


def page(title: str, body: str, plotly_js: str) -> str:
    """The whole document: plotly.js inlined once in the head, so the file opens without a network."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n"
        f"<script>{plotly_js}</script>\n<script>{JS}</script>\n</head>\n"
        f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


# --- the HTML sections (the figures are in report.py) ---------------------------------------------


def section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{anchor}">\n<h2>{esc(title)}</h2>\n{content}</section>\n'


def note(text: str) -> str:
    """A remark under a heading; `text` is HTML already (escape what it quotes)."""
    return f'<p class="note">{text}</p>\n'


def num(v: float | None) -> str:
    return NA if v is None else f"{v:.6g}"


def _state(state: str) -> str:
    return f'<td class="state state-{gantt.colour_group(state)}">{esc(state)}</td>'


def _counts(states: Iterable[str]) -> str:
    c = Counter(states)
    spans = [f'<span class="state state-{gantt.colour_group(s)}">{n} {esc(s)}</span>' for s, n in c.most_common()]
    return ", ".join(spans) or "none"


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>\n"


NAV = (
    ("plan", "plan"), ("timeline", "timeline"), ("gpu", "GPU"), ("curves", "curves"), ("results", "results"),
    ("singles", "once-only tasks"), ("provenance", "provenance"),
)  # fmt: skip


def summary(r: RunResults, *, search: bool = False) -> str:
    """What the run was and how it ended, in a few lines at the top of the page; `search`: the
    page has a Search section (a `search:` run's study), linked first."""
    tasks = r.tasks
    allocated = sum(t.gpu_hours_allocated(r.now) for t in tasks)
    used = [t.gpu_hours_used for t in tasks if t.gpu_hours_used is not None]
    best = NA
    if r.best is not None:
        values = ", ".join(f"{esc(o.metric)} = {num(v)}" for o, v in zip(r.objectives, r.best.objective, strict=False))
        best = f"trial {r.best.index} <code>{esc(' '.join(r.best.overrides))}</code>: {values}"
    facts = [
        ("experiment", esc(r.experiment)),
        ("objective", ", ".join(f"{esc(o.metric)} ({esc(o.mode)})" for o in r.objectives) or "none"),
        ("best trial", best),
        (f"trials ({len(r.trials)})", _counts(t.state for t in r.trials)),
        (f"once-only tasks ({len(r.singles)})", _counts(t.state for t in r.singles)),
        ("GPU-hours", f"{allocated:.2f} allocated" + (f", {sum(used):.2f} used" if used else "")),
        ("times from", esc(r.source)),
        ("written", esc(time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(r.now)))),
    ]
    nav = " ".join(f'<a href="#{a}">{t}</a>' for a, t in ((("search", "search"),) if search else ()) + NAV)
    return f"<header>\n<h1>{esc(r.run_id)}</h1>\n<nav>{nav}</nav>\n{_facts(facts)}</header>\n"


def _cell(v: float | None, text: str) -> str:
    """A numeric cell: `text` shown (numbers only: not escaped), `v` to sort on."""
    key = "" if v is None or v != v else f"{v:.12g}"
    return f'<td data-v="{key}">{text}</td>'


def results_table(r: RunResults) -> str:
    """One row per trial, in rank order, sortable by any column; rows carry data-trial."""
    if not r.trials:
        return note("no trials")
    objectives = {o.metric for o in r.objectives}
    metrics = [m for m in r.metric_names if m not in objectives]
    n = ' data-type="num"'
    head = [f"<th{n}>rank</th>", f"<th{n}>trial</th>", "<th>overrides</th>", "<th>state</th>"]
    head += [f"<th{n}>{esc(o.metric)} ({esc(o.mode)})</th>" for o in r.objectives]
    head += [f"<th{n}>{esc(m)}</th>" for m in metrics]
    head += [f"<th{n}>{h}</th>" for h in ("retries", "elapsed", "GPU-h alloc", "GPU-h used", "efficiency")]
    rows = "\n".join(_trial_row(t, len(r.objectives), metrics) for t in r.trials)
    return (
        note("click a header to sort")
        + '<div class="tablewrap">\n<table class="sortable" id="results-table">\n'
        + f"<thead><tr>{''.join(head)}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n</div>\n"
    )


def _trial_row(t: TrialResult, n_objectives: int, metrics: Sequence[str]) -> str:
    objective = (list(t.objective) + [None] * n_objectives)[:n_objectives]
    alloc, used, elapsed, retries = t.gpu_hours_allocated, t.gpu_hours_used, t.elapsed_s, t.retries
    eff = used / alloc if used is not None and alloc else None
    values = [t.metrics.get(m) for m in metrics]
    cells = [
        _cell(t.rank, str(t.rank) if t.rank else NA),
        _cell(t.index, str(t.index)),
        f"<td><code>{esc(' '.join(t.overrides))}</code></td>",
        _state(t.state),
        *(_cell(v, num(v)) for v in objective),
        *(_cell(v, num(v)) for v in values),
        _cell(retries, str(retries)),
        _cell(elapsed, gantt.duration(elapsed)),
        _cell(alloc, f"{alloc:.3f}"),
        _cell(used, NA if used is None else f"{used:.3f}"),
        _cell(eff, NA if eff is None else f"{eff:.0%}"),
    ]
    return f'<tr data-trial="{t.index}" data-state="{esc(t.state)}">{"".join(cells)}</tr>'


def _clock(t: float | None) -> str:
    return NA if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def singles_table(r: RunResults) -> str:
    """The tasks of stages that run once (prep, report, failure handlers)."""
    if not r.singles:
        return note("no stage runs once in this plan")
    rows = []
    for t in r.singles:
        first, last = (t.attempts[0], t.attempts[-1]) if t.attempts else (None, None)
        elapsed = t.elapsed_s(r.now)
        cells = [
            f"<td>{esc(t.stage)}</td>",
            f"<td>{esc(t.job_id)}</td>",
            _state(t.state),
            _cell(t.retries, str(t.retries)),
            f"<td>{esc((last.node if last else None) or NA)}</td>",
            f"<td>{_clock(first.start if first else None)}</td>",
            f"<td>{_clock(last.end if last else None)}</td>",
            _cell(elapsed, gantt.duration(elapsed)),
            _cell(t.exit_code, NA if t.exit_code is None else str(t.exit_code)),
        ]
        rows.append(f'<tr data-task="{esc(t.stage)}">{"".join(cells)}</tr>')
    names = ("stage", "job", "state", "retries", "node", "started", "ended", "elapsed", "exit")
    head = "".join(f"<th>{h}</th>" for h in names)
    body = "\n".join(rows)
    return f'<table id="singles-table">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n'


def provenance(r: RunResults) -> str:
    """Where the run came from: commit (and the uncommitted diff, folded), command, versions."""
    p = r.provenance
    if not p:
        return note("this run has no provenance.json")
    git = p.get("git") or {}
    if git.get("repository"):
        commit = f"<code>{esc(git.get('commit') or '?')}</code> in {esc(git['repository'])}"
        commit += " (uncommitted changes)" if git.get("dirty") else ""
    else:
        commit = "not a git repository"
    argv = p.get("argv")
    out = _facts(
        [
            ("git commit", commit),
            ("command", f"<code>{esc(shlex.join(map(str, argv)))}</code>" if isinstance(argv, list) else NA),
            ("directory", esc(p.get("cwd", NA))),
            ("user@host", esc(f"{p.get('user', '?')}@{p.get('host', '?')}")),
            ("launched", esc(p.get("time", NA))),
            ("Slurm", esc(p.get("slurm_version", NA))),
            ("Python", esc(p.get("python", NA))),
            ("platform", esc(p.get("platform", NA))),
        ]
    )
    diff = str(git.get("diff") or "")
    if diff:
        fold = f"<summary>uncommitted diff ({diff.count(chr(10))} lines)</summary>"
        out += f'<details id="git-diff">{fold}<pre class="diff">{esc(diff)}</pre></details>\n'
    packages = p.get("packages") or {}
    if packages:
        rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v or 'not installed')}</td></tr>" for k, v in packages.items())
        head = "<thead><tr><th>package</th><th>version</th></tr></thead>"
        out += f'<table id="packages">{head}<tbody>{rows}</tbody></table>\n'
    return out
