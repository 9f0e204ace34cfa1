"""GPU samples, pure: the sample file's format, summaries per task, stage and campaign, idle rules.

A task's sample file (`trials/<trial>/gpu.<stage>.csv`, or `stages/<stage>/gpu.csv`) is text,
appended to and flushed by the in-job sampler, so a killed job keeps what it wrote:

    H {"t0": 1700000000.0, "interval": 1.0, "gpus": [{"slot": 0, "uuid": "GPU-..", ...}], ...}
    0.0,0,97,40123,312,65        seconds since t0, slot, util %, memory MiB, power W, temperature C
    P,0.0,0,4242:40000           processes on a slot (pid:MiB;...), written when they change
    X,12.0,why the sampler stopped

A requeued task appends a new `H` segment. Utilisation is a whole percentage (NVML's own unit),
so percentiles over any number of samples come exactly from a 101-bin histogram.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slurmflow.model import IdleRule

IDLE_BELOW = 5.0  # a GPU sample under this utilisation counts as idle in summaries
SPARK = "▁▂▃▄▅▆▇█"
Timeline = tuple[list[float], list[float], list[float]]  # times, mean utilisation, memory MiB


@dataclass(frozen=True)
class Reading:
    """One GPU at one instant."""

    util: int  # percent
    mem_mib: int
    power_w: int | None = None
    temp_c: int | None = None


def header_line(meta: Mapping[str, Any]) -> str:
    return "H " + json.dumps(dict(meta), separators=(",", ":"), sort_keys=True) + "\n"


def sample_lines(dt: float, readings: Sequence[Reading]) -> str:
    def num(v: int | None) -> str:
        return "" if v is None else str(v)

    return "".join(
        f"{dt:.1f},{slot},{r.util},{r.mem_mib},{num(r.power_w)},{num(r.temp_c)}\n" for slot, r in enumerate(readings)
    )


def procs_line(dt: float, slot: int, procs: Mapping[int, int]) -> str:
    return f"P,{dt:.1f},{slot}," + ";".join(f"{pid}:{mib}" for pid, mib in sorted(procs.items())) + "\n"


def stop_line(dt: float, why: str) -> str:
    return f"X,{dt:.1f}," + " ".join(why.split()) + "\n"


@dataclass
class Series:
    """One allocated GPU in one segment of a task's samples."""

    slot: int
    meta: Mapping[str, Any]
    segment: int = 0
    t: list[float] = field(default_factory=list)  # epoch seconds
    util: list[int] = field(default_factory=list)
    mem_mib: list[int] = field(default_factory=list)
    power_w: list[int | None] = field(default_factory=list)
    temp_c: list[int | None] = field(default_factory=list)


@dataclass
class SampleLog:
    """A parsed sample file."""

    segments: list[dict[str, Any]] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    procs: dict[int, dict[int, int]] = field(default_factory=dict)  # series position -> latest pid:MiB

    @property
    def interval(self) -> float:
        return float(self.segments[-1].get("interval", 1.0)) if self.segments else 1.0


def parse(text: str) -> SampleLog:
    """Parse a sample file; a torn last line (the job was killed mid-write) is ignored."""
    log = SampleLog()
    base: dict[int, Series] = {}
    t0 = 0.0
    for line in text.splitlines():
        try:
            if line.startswith("H "):
                meta = json.loads(line[2:])
                log.segments.append(meta)
                t0 = float(meta.get("t0", 0.0))
                base = {}
                for gpu in meta.get("gpus", []):
                    s = Series(int(gpu["slot"]), gpu, len(log.segments) - 1)
                    base[s.slot] = s
                    log.series.append(s)
            elif line.startswith("X,"):
                _, _, why = line.split(",", 2)
                log.stops.append(why)
            elif line.startswith("P,"):
                _, _, slot, procs = line.split(",", 3)
                pos = log.series.index(base[int(slot)])
                log.procs[pos] = {int(p): int(m) for p, m in (x.split(":") for x in procs.split(";") if x)}
            elif line:
                dt, slot, util, mem, power, temp = line.split(",")
                s = base[int(slot)]
                s.t.append(t0 + float(dt))
                s.util.append(int(util))
                s.mem_mib.append(int(mem))
                s.power_w.append(int(power) if power else None)
                s.temp_c.append(int(temp) if temp else None)
        except (ValueError, KeyError, json.JSONDecodeError):
            continue
    return log


def percentile(hist: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (nearest rank) of whole-number values held as a histogram."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


@dataclass(frozen=True)
class Summary:
    """GPU use of a task, a stage or a campaign."""

    tasks: int
    gpus: int
    samples: int
    util_mean: float | None
    util_median: float | None
    util_p95: float | None
    idle_fraction: float | None
    peak_mem_mib: int | None
    mem_total_mib: int | None
    gpu_hours_allocated: float
    gpu_hours_used: float
    hist: Mapping[int, int] = field(default_factory=dict, repr=False)
    stops: tuple[str, ...] = ()

    @property
    def efficiency(self) -> float | None:
        """GPU-hours used per GPU-hour allocated."""
        return self.gpu_hours_used / self.gpu_hours_allocated if self.gpu_hours_allocated else None

    def to_dict(self) -> dict[str, object]:
        def r(v: float | None, n: int = 1) -> float | None:
            return None if v is None else round(v, n)

        return {
            "tasks": self.tasks,
            "gpus": self.gpus,
            "samples": self.samples,
            "util_mean": r(self.util_mean),
            "util_median": r(self.util_median),
            "util_p95": r(self.util_p95),
            "idle_fraction": r(self.idle_fraction, 3),
            "peak_mem_mib": self.peak_mem_mib,
            "mem_total_mib": self.mem_total_mib,
            "gpu_hours_allocated": round(self.gpu_hours_allocated, 4),
            "gpu_hours_used": round(self.gpu_hours_used, 4),
            "efficiency": r(self.efficiency, 3),
            "sampler_stopped": list(self.stops),
        }


def _summary(
    hist: Counter[int],
    tasks: int,
    gpus: int,
    peak: int | None,
    total: int | None,
    alloc: float,
    used: float,
    stops: Sequence[str],
) -> Summary:
    n = sum(hist.values())
    return Summary(
        tasks=tasks,
        gpus=gpus,
        samples=n,
        util_mean=sum(v * c for v, c in hist.items()) / n if n else None,
        util_median=percentile(hist, 50),
        util_p95=percentile(hist, 95),
        idle_fraction=sum(c for v, c in hist.items() if v < IDLE_BELOW) / n if n else None,
        peak_mem_mib=peak,
        mem_total_mib=total,
        gpu_hours_allocated=alloc,
        gpu_hours_used=used,
        hist=dict(hist),
        stops=tuple(stops),
    )


def summarise_task(log: SampleLog, *, gpus: int, wall_s: float | None = None) -> Summary:
    """One task. GPU-hours allocated are `gpus` x its wall time (from its status when known, else
    the span its samples cover); GPU-hours used weigh each sample by its utilisation."""
    hist: Counter[int] = Counter()
    for s in log.series:
        hist.update(s.util)
    interval = log.interval
    span = 0.0
    for seg in range(len(log.segments)):
        times = [t for s in log.series if s.segment == seg for t in s.t]
        if times:
            span += max(times) - min(times) + interval
    wall = wall_s if wall_s is not None else span
    peaks = [max(s.mem_mib) for s in log.series if s.mem_mib]
    totals = [int(s.meta.get("mem_total_mib", 0)) for s in log.series]
    used = sum(sum(s.util) for s in log.series) / 100 * interval / 3600
    return _summary(
        hist,
        1,
        gpus,
        max(peaks) if peaks else None,
        max(totals) if totals else None,
        gpus * wall / 3600,
        used,
        log.stops,
    )


def window(log: SampleLog, start: float, end: float) -> Summary:
    """Utilisation figures of the samples taken between two instants (epoch seconds)."""
    hist: Counter[int] = Counter()
    for s in log.series:
        hist.update(u for t, u in zip(s.t, s.util, strict=True) if start <= t <= end)
    return _summary(hist, 1, len(log.series), None, None, 0.0, 0.0, ())


def combine(parts: Iterable[Summary]) -> Summary:
    """A stage or a campaign: histograms add, so percentiles stay exact."""
    parts = list(parts)
    hist: Counter[int] = Counter()
    for p in parts:
        hist.update(p.hist)
    peaks = [p.peak_mem_mib for p in parts if p.peak_mem_mib is not None]
    totals = [p.mem_total_mib for p in parts if p.mem_total_mib is not None]
    return _summary(
        hist,
        sum(p.tasks for p in parts),
        sum(p.gpus for p in parts),
        max(peaks) if peaks else None,
        max(totals) if totals else None,
        sum(p.gpu_hours_allocated for p in parts),
        sum(p.gpu_hours_used for p in parts),
        [s for p in parts for s in p.stops],
    )


def _instants(log: SampleLog) -> dict[float, list[tuple[int, int]]]:
    """(utilisation, memory MiB) of each of the task's GPUs, per sampling instant."""
    out: dict[float, list[tuple[int, int]]] = {}
    for s in log.series:
        for t, u, m in zip(s.t, s.util, s.mem_mib, strict=True):
            out.setdefault(round(t, 1), []).append((u, m))
    return out


def timeline(log: SampleLog) -> Timeline:
    """(times, mean utilisation over the task's GPUs, total memory MiB) per sampling instant."""
    by_t = _instants(log)
    times = sorted(by_t)
    util = [sum(u for u, _ in by_t[t]) / len(by_t[t]) for t in times]
    return times, util, [float(sum(m for _, m in by_t[t])) for t in times]


def downsample(line: Timeline, points: int = 240) -> Timeline:
    """At most `points` instants, each the mean of a run of consecutive ones: enough for a plot or
    a sparkline of any run length, small enough to keep beside the samples."""
    times, util, mem = line
    if len(times) <= points:
        return list(times), list(util), list(mem)
    out: Timeline = ([], [], [])
    for i in range(points):
        lo, hi = i * len(times) // points, (i + 1) * len(times) // points
        for series, source in zip(out, (times, util, mem), strict=True):
            series.append(round(sum(source[lo:hi]) / (hi - lo), 2))
    return out


def summary_to_cache(summary: Summary, line: Timeline, source_size: int) -> dict[str, Any]:
    """What a finished task leaves beside its samples, so reports need not parse them again."""
    return {
        "source_size": source_size,
        "summary": summary.to_dict(),
        "hist": {str(k): v for k, v in summary.hist.items()},
        "timeline": dict(zip(("t", "util", "mem_mib"), downsample(line), strict=True)),
    }


def summary_from_cache(doc: Mapping[str, Any]) -> tuple[Summary, Timeline]:
    d = doc["summary"]
    summary = Summary(
        tasks=d["tasks"],
        gpus=d["gpus"],
        samples=d["samples"],
        util_mean=d["util_mean"],
        util_median=d["util_median"],
        util_p95=d["util_p95"],
        idle_fraction=d["idle_fraction"],
        peak_mem_mib=d["peak_mem_mib"],
        mem_total_mib=d["mem_total_mib"],
        gpu_hours_allocated=d["gpu_hours_allocated"],
        gpu_hours_used=d["gpu_hours_used"],
        hist={int(k): v for k, v in doc["hist"].items()},
        stops=tuple(d["sampler_stopped"]),
    )
    t = doc["timeline"]
    return summary, (list(t["t"]), list(t["util"]), list(t["mem_mib"]))


def sparkline(values: Sequence[float], width: int = 30, top: float = 100.0) -> str:
    """Values (0..top) squeezed into `width` block characters, each the mean of its bucket."""
    if not values:
        return ""
    width = min(width, len(values))
    out = []
    for i in range(width):
        lo, hi = i * len(values) // width, max((i + 1) * len(values) // width, i * len(values) // width + 1)
        mean = sum(values[lo:hi]) / (hi - lo)
        out.append(SPARK[min(len(SPARK) - 1, max(0, int(mean / top * len(SPARK))))] if top else SPARK[0])
    return "".join(out)


def idle_level(rule: IdleRule, utils: Sequence[int]) -> int:
    """What a rule compares with `below`: the busiest GPU (`all` must be idle) or the idlest (`any`)."""
    return max(utils) if rule.gpus == "all" else min(utils)


class IdleDetector:
    """Streaming idle rule: fed one reading per GPU per instant, it fires once, when the task's
    GPUs (`all`: the busiest; `any`: the idlest) have stayed under `below` for `for_s` seconds."""

    def __init__(self, rule: IdleRule) -> None:
        self.rule = rule
        self.since: float | None = None
        self.fired = False

    def feed(self, t: float, utils: Sequence[int]) -> bool:
        if not utils or self.fired:
            return False
        if idle_level(self.rule, utils) >= self.rule.below:
            self.since = None
            return False
        if self.since is None:
            self.since = t
        if t - self.since >= self.rule.for_s:
            self.fired = True
            return True
        return False


def idle_periods(log: SampleLog, rule: IdleRule) -> list[tuple[float, float]]:
    """Every stretch (start, end) that satisfied the rule for at least `for_s`, after the fact."""
    by_t = _instants(log)
    out: list[tuple[float, float]] = []
    start: float | None = None
    last = 0.0
    for t in sorted(by_t):
        if idle_level(rule, [u for u, _ in by_t[t]]) < rule.below:
            start = t if start is None else start
            last = t
        else:
            if start is not None and last - start >= rule.for_s:
                out.append((start, last))
            start = None
    if start is not None and last - start >= rule.for_s:
        out.append((start, last))
    return out
