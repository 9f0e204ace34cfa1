"""The GPU sampler's pure core: GPU mapping, the sample format, summaries, idle rules, sparklines;
the scripted `fake:` source; and the sampler itself on a node whose every reading the test writes
out, checked against expected values worked out by hand (and on a stand-in for the pynvml module)."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import types
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from slurmflow.gpu import stats as gpustats
from slurmflow.gpu.sampler import FakeSource, GpuIdentity, NvmlSource, Sampler, SourceUnavailable, select_gpus
from slurmflow.gpu.stats import IdleDetector, Reading
from slurmflow.model import GpuSampling, IdleRule

# A node whose NVML order differs from its /dev/nvidiaN numbering (it happens: NVML orders by PCI bus).
NODE = [
    GpuIdentity(0, "GPU-aaaa-0000", minor=2),
    GpuIdentity(1, "GPU-bbbb-1111", minor=0),
    GpuIdentity(2, "GPU-cccc-2222", minor=3),
    GpuIdentity(3, "GPU-dddd-3333", minor=1),
]


@pytest.mark.parametrize(
    ("env", "uuids", "how"),
    [
        ({"CUDA_VISIBLE_DEVICES": "GPU-cccc-2222,GPU-aaaa"}, ["GPU-cccc-2222", "GPU-aaaa-0000"], "UUIDs"),
        # cgroups renumber CUDA_VISIBLE_DEVICES from 0; SLURM_JOB_GPUS keeps the node's numbering.
        ({"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "3"}, ["GPU-cccc-2222"], "minor numbers"),
        ({"SLURM_JOB_GPUS": "0,1"}, ["GPU-bbbb-1111", "GPU-dddd-3333"], "minor numbers"),
        ({"CUDA_VISIBLE_DEVICES": "1"}, ["GPU-bbbb-1111"], "indices"),
        ({"SLURMFLOW_GPU_UUIDS": "GPU-dddd", "SLURM_JOB_GPUS": "0"}, ["GPU-dddd-3333"], "SLURMFLOW_GPU_UUIDS"),
        ({}, [], "no GPUs allocated"),
        ({"CUDA_VISIBLE_DEVICES": ""}, [], "no GPUs allocated"),
    ],
)
def test_select_gpus_maps_the_allocation_not_the_node(env: dict[str, str], uuids: list[str], how: str) -> None:
    chosen, why = select_gpus(env, NODE)
    assert [g.uuid for g in chosen] == uuids and how in why


def test_select_gpus_without_minor_numbers_uses_nvml_indices() -> None:
    node = [GpuIdentity(i, f"GPU-{i}") for i in range(4)]
    chosen, why = select_gpus({"SLURM_JOB_GPUS": "2"}, node)
    assert [g.uuid for g in chosen] == ["GPU-2"] and "NVML indices" in why


def _log(*segments: tuple[float, list[list[int]]], interval: float = 1.0) -> str:
    """Sample text: per segment (t0, per instant a list of utils, one per GPU)."""
    out = []
    for t0, instants in segments:
        gpus = [{"slot": i, "uuid": f"GPU-{i}", "mem_total_mib": 1000} for i in range(len(instants[0]))]
        out.append(gpustats.header_line({"t0": t0, "interval": interval, "gpus": gpus}))
        for k, utils in enumerate(instants):
            out.append(gpustats.sample_lines(k * interval, [Reading(u, 10 * u, 100, 50) for u in utils]))
    return "".join(out)


def test_parse_round_trip_segments_procs_stops_and_a_torn_line() -> None:
    text = _log((1000.0, [[10, 90], [20, 80]]), (2000.0, [[30]]))
    text += gpustats.procs_line(1.0, 0, {42: 512, 7: 1}) + gpustats.stop_line(2.0, "NVML:   GPU is lost\n")
    text += "3.0,0,5"  # the job was killed mid-line
    log = gpustats.parse(text)
    assert len(log.segments) == 2 and [s.segment for s in log.series] == [0, 0, 1]
    assert log.series[0].t == [1000.0, 1001.0] and log.series[0].util == [10, 20] and log.series[1].util == [90, 80]
    assert log.series[2].t == [2000.0] and log.series[2].mem_mib == [300]
    assert log.procs == {2: {7: 1, 42: 512}} and log.stops == ["NVML: GPU is lost"]


def test_percentiles_are_exact_from_the_histogram() -> None:
    hist = Counter(range(1, 101))  # 1..100 once each
    assert gpustats.percentile(hist, 50) == 50 and gpustats.percentile(hist, 95) == 95
    assert gpustats.percentile(hist, 100) == 100 and gpustats.percentile({}, 50) is None
    assert gpustats.percentile({0: 90, 100: 10}, 95) == 100


def test_task_summary_figures() -> None:
    # 2 GPUs x 4 one-second samples: GPU 0 busy (100), GPU 1 idle (0) except one 50: 450 / 8 = 56.25%.
    log = gpustats.parse(_log((0.0, [[100, 0], [100, 0], [100, 50], [100, 0]])))
    s = gpustats.summarise_task(log, gpus=2)
    assert s.samples == 8 and s.util_mean == pytest.approx(56.25) and s.util_median == 50
    assert s.util_p95 == 100 and s.idle_fraction == pytest.approx(3 / 8) and s.peak_mem_mib == 1000
    assert s.gpu_hours_allocated == pytest.approx(2 * 4 / 3600)  # span 3 s + one interval
    assert s.gpu_hours_used == pytest.approx(4.5 / 3600) and s.efficiency == pytest.approx(4.5 / 8)
    # A task's own wall time (its status file) wins over the span its samples cover.
    assert gpustats.summarise_task(log, gpus=2, wall_s=3600).gpu_hours_allocated == pytest.approx(2.0)


def test_combine_adds_histograms_and_hours() -> None:
    a = gpustats.summarise_task(gpustats.parse(_log((0.0, [[100], [100]]))), gpus=1)
    b = gpustats.summarise_task(gpustats.parse(_log((0.0, [[0], [0], [0], [0], [0], [0]]))), gpus=1)
    c = gpustats.combine([a, b])
    assert (c.tasks, c.samples, c.util_mean, c.util_median, c.idle_fraction) == (2, 8, 25.0, 0.0, 0.75)
    assert c.gpu_hours_allocated == pytest.approx(8 / 3600) and c.gpu_hours_used == pytest.approx(2 / 3600)
    assert gpustats.combine([]).util_mean is None


def test_idle_detector_all_any_and_reset() -> None:
    rule = IdleRule(below=5, for_s=10, action="warn", gpus="all")
    d = IdleDetector(rule)
    assert not any(d.feed(t, [0, 90]) for t in range(30))  # one GPU busy: the task is not idle
    assert not d.feed(30, [1, 2]) and not d.feed(35, [1, 2]) and not d.feed(36, [50, 2])  # reset at 36
    assert not d.feed(37, [0, 0]) and d.feed(47, [0, 0]) and not d.feed(48, [0, 0])  # fires once
    anyrule = IdleDetector(IdleRule(below=5, for_s=10, gpus="any"))
    assert not anyrule.feed(0, [0, 90]) and anyrule.feed(10, [0, 90])


def test_idle_periods_after_the_fact() -> None:
    utils = [[90]] * 3 + [[0]] * 12 + [[90]] * 2 + [[1]] * 5
    log = gpustats.parse(_log((100.0, utils)))
    assert gpustats.idle_periods(log, IdleRule(below=5, for_s=10)) == [(103.0, 114.0)]


def test_sparkline() -> None:
    assert gpustats.sparkline([0, 0, 100, 100], width=4) == "▁▁██"
    assert len(gpustats.sparkline(list(range(1000)), width=30)) == 30 and gpustats.sparkline([]) == ""


def test_fake_source_plays_its_phases_in_order() -> None:
    """`gpu_sampling.source: fake:<phases>` (README): each phase lasts its count of readings, within
    its documented range, and the last phase lasts for good."""
    fake = FakeSource("fake:busy*2,half*1,idle*2,error", "gpu1")
    assert [g.uuid for g in fake.inventory()] == [
        "GPU-fake-gpu1-0",
        "GPU-fake-gpu1-1",
        "GPU-fake-gpu1-2",
        "GPU-fake-gpu1-3",
    ]
    utils, phases, procs = [], [], []
    for _ in range(5):
        utils.append([r.util for r in fake.read([0, 2])])
        phases.append(fake.last)
        procs.append(bool(fake.processes(0)))
    assert phases == ["busy", "busy", "half", "idle", "idle"] and procs == [True, True, True, False, False]
    assert all(90 <= u <= 99 for u in utils[0] + utils[1]) and all(45 <= u <= 54 for u in utils[2])
    assert all(0 <= u <= 2 for u in utils[3] + utils[4])
    for _ in range(3):
        with pytest.raises(RuntimeError, match="GPU is lost"):
            fake.read([0])
    with pytest.raises(SourceUnavailable, match="Driver Not Loaded"):
        FakeSource("fake:noinit")
    with pytest.raises(ValueError, match="'busyy' is not one of busy, half, idle, error"):
        FakeSource("fake:busyy*3")


# The node the sampler tests run on: NODE's GPUs (NVML order differs from the minor numbers), 80 GiB each.
SCRIPTED_NODE = [dataclasses.replace(g, name="NVIDIA H100", mem_total_mib=81920) for g in NODE]


@dataclass
class _ScriptedNode:
    """SCRIPTED_NODE with every reading written out by the test: `readings[i][k]` is NVML device i
    at instant k. Instants listed in `failing` fail, as NVML does for a GPU that fell off the bus.
    The sampler's clock is the node's: each reading moves it one second on, so every sample's time
    is known and nothing waits for wall-clock time."""

    readings: dict[int, list[Reading]]
    procs: Callable[[int, int], dict[int, int]] = lambda index, taken: {}  # (device, readings so far)
    failing: frozenset[int] = frozenset()
    t0: float = 1000.0
    asked: list[list[int]] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)  # every instant was read
    closed: threading.Event = field(default_factory=threading.Event)

    def clock(self) -> float:
        return self.t0 + len(self.asked)

    def inventory(self) -> list[GpuIdentity]:
        return list(SCRIPTED_NODE)

    def read(self, indices: Sequence[int]) -> list[Reading]:
        k = len(self.asked)
        if k == len(self.readings[0]):
            self.finished.set()
            return []  # the script is over: nothing more to record, and the clock stands still
        self.asked.append(list(indices))
        if k in self.failing:
            raise RuntimeError("Unable to determine the device handle for GPU 0000:03:00.0: GPU is lost")
        return [self.readings[i][k] for i in indices]

    def processes(self, index: int) -> dict[int, int]:
        return self.procs(index, len(self.asked))

    def close(self) -> None:
        self.closed.set()


def _gpu(util: list[int], mem: int | list[int], power: int | None, temp: int) -> list[Reading]:
    mems = mem if isinstance(mem, list) else [mem] * len(util)
    return [Reading(u, m, power, temp) for u, m in zip(util, mems, strict=True)]


def _sampler(path: Path, node: _ScriptedNode, env: dict[str, str], **kw: Any) -> Sampler:
    settings = GpuSampling(interval=1.0, flush=5.0)
    return Sampler(
        path, settings, env=env, meta={"host": "gpu7"}, source_factory=lambda spec, host: node, clock=node.clock, **kw
    )


def test_sampler_records_the_allocated_gpus_and_fires_the_idle_rule_once(tmp_path: Path) -> None:
    # Slurm gave the task /dev/nvidia3 and /dev/nvidia0: NVML devices 2 and 1, in that order
    # (cgroups renumbered CUDA_VISIBLE_DEVICES from 0). Devices 0 and 3 belong to other jobs.
    # At instant 2 the busiest allocated GPU is at 5%, not below 5: the task is idle from 3 to 6
    # (3 s: the rule fires, after the 7th reading) and again from 8 to 11 (it fires only once).
    node = _ScriptedNode(
        {
            0: _gpu([77] * 12, 70000, 400, 80),
            1: _gpu([40, 2, 5, 0, 0, 1, 3, 10, 0, 0, 3, 0], 12000, None, 50),
            2: _gpu([95, 90, 3, 1, 0, 2, 1, 88, 0, 1, 0, 2], [30000] * 7 + [41000] * 5, 310, 65),
            3: _gpu([66] * 12, 60000, 390, 79),
        },
        # Device 2 runs pid 4242 throughout; device 1's pid 5151 exits after the 4th reading, which the
        # sampler sees at its next listing, the 11th sample's.
        procs=lambda index, taken: {2: {4242: 29000}, 1: {} if taken > 4 else {5151: 11000}}.get(index, {99: 1}),
    )
    fired: list[tuple[str, int]] = []
    path = tmp_path / "gpu.train.csv"
    rule = IdleRule(below=5, for_s=3, action="cancel")
    env = {"SLURM_JOB_GPUS": "3,0", "CUDA_VISIBLE_DEVICES": "0,1"}
    sampler = _sampler(path, node, env, idle=rule, on_idle=lambda why: fired.append((why, len(node.asked))))
    sampler.start()
    assert node.finished.wait(30), f"the sampler took {len(node.asked)} of the 12 readings"
    sampler.stop()
    assert node.asked == [[2, 1]] * 12 and node.closed.is_set()
    assert sampler.stopped is None and sampler.samples == 12
    assert fired == [("the task's GPUs all stayed below 5% utilisation for 3 s", 7)]

    head, *rest = path.read_text().splitlines()
    meta = json.loads(head.removeprefix("H "))
    assert (meta["t0"], meta["interval"], meta["host"]) == (1000.0, 1.0, "gpu7")
    assert meta["mapped_by"] == "SLURM_JOB_GPUS (device minor numbers)"
    assert [(g["slot"], g["uuid"], g["index"], g["minor"]) for g in meta["gpus"]] == [
        (0, "GPU-cccc-2222", 2, 3),
        (1, "GPU-bbbb-1111", 1, 0),
    ]
    # seconds since t0, slot, util %, MiB, W (device 1 reports no power), C; processes every 10th sample when changed.
    assert rest == [
        "0.0,0,95,30000,310,65",
        "0.0,1,40,12000,,50",
        "P,0.0,0,4242:29000",
        "P,0.0,1,5151:11000",
        "1.0,0,90,30000,310,65",
        "1.0,1,2,12000,,50",
        "2.0,0,3,30000,310,65",
        "2.0,1,5,12000,,50",
        "3.0,0,1,30000,310,65",
        "3.0,1,0,12000,,50",
        "4.0,0,0,30000,310,65",
        "4.0,1,0,12000,,50",
        "5.0,0,2,30000,310,65",
        "5.0,1,1,12000,,50",
        "6.0,0,1,30000,310,65",
        "6.0,1,3,12000,,50",
        "7.0,0,88,41000,310,65",
        "7.0,1,10,12000,,50",
        "8.0,0,0,41000,310,65",
        "8.0,1,0,12000,,50",
        "9.0,0,1,41000,310,65",
        "9.0,1,0,12000,,50",
        "10.0,0,0,41000,310,65",
        "10.0,1,3,12000,,50",
        "P,10.0,1,",
        "11.0,0,2,41000,310,65",
        "11.0,1,0,12000,,50",
    ]

    # Read back: the after-the-fact rule finds both idle stretches; the summary is of these 24 samples
    # (utilisation 347 percent-samples in all; 18 of them below 5; sorted, the 12th is 1 and the 23rd 90).
    log = gpustats.parse(path.read_text())
    assert gpustats.idle_periods(log, rule) == [(1003.0, 1006.0), (1008.0, 1011.0)]
    s = gpustats.summarise_task(log, gpus=2)
    assert (s.samples, s.util_median, s.util_p95, s.idle_fraction) == (24, 1, 90, 0.75)
    assert (s.peak_mem_mib, s.mem_total_mib) == (41000, 81920) and s.util_mean == pytest.approx(347 / 24)
    assert s.gpu_hours_allocated == pytest.approx(24 / 3600) and s.gpu_hours_used == pytest.approx(3.47 / 3600)
    assert log.procs == {0: {4242: 29000}, 1: {}}


def test_sampler_stops_after_five_failed_readings_in_a_row(tmp_path: Path) -> None:
    # Two failures, then a good reading (the count starts again), then five failures: it stops at instant 8.
    node = _ScriptedNode(
        {i: _gpu([50 + i] * 9, 1000 * i, 200, 60) for i in range(4)}, failing=frozenset({1, 2, 4, 5, 6, 7, 8})
    )
    path = tmp_path / "gpu.train.csv"
    sampler = _sampler(path, node, {"SLURMFLOW_GPU_UUIDS": "GPU-dddd"})
    sampler.start()
    assert node.closed.wait(30), f"the sampler is still reading after {len(node.asked)} readings"
    sampler.stop()
    why = "5 readings in a row failed, last: Unable to determine the device handle for GPU 0000:03:00.0: GPU is lost"
    assert sampler.stopped == why and sampler.samples == 2 and len(node.asked) == 9
    # The first process listing is recorded even when empty; the second reading is no 10th sample.
    assert path.read_text().splitlines()[1:] == [
        "0.0,0,53,3000,200,60",
        "P,0.0,0,",
        "3.0,0,53,3000,200,60",
        f"X,8.0,{why}",
    ]


@pytest.mark.parametrize(
    ("env", "factory_error", "why"),
    [
        ({"SLURM_JOB_GPUS": "1"}, SourceUnavailable("NVML did not start: Driver/library version mismatch"), None),
        ({}, None, "no GPUs allocated (CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS are unset)"),
    ],
)
def test_sampler_that_cannot_sample_says_why_in_its_file(
    tmp_path: Path, env: dict[str, str], factory_error: Exception | None, why: str | None
) -> None:
    node = _ScriptedNode({i: _gpu([50], 1000, 200, 60) for i in range(4)})

    def factory(spec: str, host: str) -> _ScriptedNode:
        if factory_error is not None:
            raise factory_error
        return node

    path = tmp_path / "gpu.train.csv"
    sampler = Sampler(path, GpuSampling(), env=env, meta={"host": "gpu7"}, source_factory=factory, clock=node.clock)
    sampler.start()
    sampler.stop()  # it ends by itself: stop() only waits for it
    expected = why or str(factory_error)
    assert sampler.stopped == expected and sampler.samples == 0 and node.asked == []
    head, *rest = path.read_text().splitlines()
    assert json.loads(head.removeprefix("H "))["gpus"] == [] and rest == [f"X,0.0,{expected}"]


def test_sampler_never_raises_into_the_job(tmp_path: Path) -> None:
    def broken(spec: str, host: str) -> FakeSource:
        raise ZeroDivisionError("a bug in a source")

    path = tmp_path / "gpu.train.csv"
    sampler = Sampler(path, GpuSampling(interval=0.1), env={"SLURM_JOB_GPUS": "1"}, meta={}, source_factory=broken)
    sampler.start()
    sampler.stop()
    assert sampler.stopped == "sampler error: ZeroDivisionError: a bug in a source"
    assert gpustats.parse(path.read_text()).stops == [sampler.stopped]


class _NvmlStandIn(types.ModuleType):
    """The slice of pynvml the source uses, with NVML's units (bytes, milliwatts) and errors."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return f"GPU-real-{h}".encode()

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA H100"

    def nvmlDeviceGetMinorNumber(self, h: int) -> int:
        return 1 - h

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        return types.SimpleNamespace(busId=f"00000000:0{h}:00.0")

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return types.SimpleNamespace(total=80 * 1024**3, used=(h + 1) * 1024**3)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return types.SimpleNamespace(gpu=88)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError("Not Supported")
        return 312_400

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 61

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        return [types.SimpleNamespace(pid=4242, usedGpuMemory=2 * 1024**3)]


def test_nvml_source_units_optional_fields_and_one_init(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = _NvmlStandIn()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    source = NvmlSource()
    inv = source.inventory()
    assert [(g.index, g.uuid, g.minor, g.mem_total_mib) for g in inv] == [
        (0, "GPU-real-0", 1, 81920),
        (1, "GPU-real-1", 0, 81920),
    ]
    chosen, _ = select_gpus({"SLURM_JOB_GPUS": "1"}, inv)
    assert [g.index for g in chosen] == [0]  # /dev/nvidia1 is NVML's device 0 here
    assert source.read([0, 1]) == [Reading(88, 1024, 312, 61), Reading(88, 2048, None, 61)]
    assert source.processes(0) == {4242: 2048}
    source.close()
    assert nv.calls == ["init", "shutdown"]


def test_nvml_source_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = _NvmlStandIn()

    def no_driver() -> None:
        raise nv.NVMLError("NVML Shared Library Not Found")

    monkeypatch.setattr(nv, "nvmlInit", no_driver)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    with pytest.raises(SourceUnavailable, match="NVML did not start: NVML Shared Library Not Found"):
        NvmlSource()


def test_window_keeps_the_samples_between_two_instants() -> None:
    log = gpustats.parse(_log((100.0, [[90], [95], [0], [1], [2]])))
    busy, idle = gpustats.window(log, 100, 101), gpustats.window(log, 102, 104)
    assert (busy.samples, busy.util_median, idle.samples, idle.util_median) == (2, 90, 3, 1)


def test_downsample_keeps_at_most_n_bucket_means() -> None:
    line = ([float(t) for t in range(1000)], [float(t % 2 * 100) for t in range(1000)], [1.0] * 1000)
    times, util, mem = gpustats.downsample(line, points=10)
    assert len(times) == 10 and times[0] == 49.5 and util == [50.0] * 10 and mem == [1.0] * 10
    assert gpustats.downsample(([1.0], [2.0], [3.0])) == ([1.0], [2.0], [3.0])


def test_task_cache_is_used_while_it_describes_the_whole_file(tmp_path: Path) -> None:
    from slurmflow.gpu import usage

    samples = tmp_path / "gpu.train.csv"
    samples.write_text(_log((0.0, [[100], [0]])))
    status = tmp_path / "train.status.json"
    usage.write_cache(samples, 1, status)
    cached, line, _ = usage.summarise_file(samples, 1, status, 0.0)
    parsed = gpustats.summarise_task(gpustats.parse(samples.read_text()), gpus=1)
    assert cached.hist == parsed.hist and cached.util_p95 == parsed.util_p95 and line[1] == [100.0, 0.0]
    assert cached.gpu_hours_used == pytest.approx(parsed.gpu_hours_used, abs=1e-4)
    # A requeued task appends a segment: the cache no longer describes the file, the samples are read.
    with samples.open("a") as out:
        out.write(_log((10.0, [[50]])))
    again, line, _ = usage.summarise_file(samples, 1, status, 0.0)
    assert again.samples == 3 and line[1] == [100.0, 0.0, 50.0]
