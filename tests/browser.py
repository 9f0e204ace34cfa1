"""Open a report in headless Chromium and say what a reader would see: every figure drawn, the
Gantt's bars and the table's rows counted in the rendered page, console errors, a screenshot.

Chromium and its WebDriver come from the system (Debian: `apt-get install chromium
chromium-driver`), named by path, so Selenium Manager never looks for a browser on the network.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
MISSING = "headless Chromium not found: install chromium and chromium-driver: apt-get install chromium chromium-driver"
WIDTH = 1600
HEIGHT = 3000
SATURATED = 80  # HSV saturation (0-255) above which a pixel is a colour, not grey
T = TypeVar("T")

# What the page says of itself once drawn. Bars: plotly draws each bar trace's points as
# `.barlayer .trace .point`; the report marks each with the kind of its segment.
PROBE = """
const figs = Array.from(document.querySelectorAll('.sf-figure'));
const gantt = document.getElementById('gantt');
const bars = kind => gantt ? gantt.querySelectorAll('.barlayer .point[data-kind=' + kind + ']').length : 0;
const rect = gantt ? gantt.getBoundingClientRect() : null;
return {
  figures: figs.length,
  rendered: figs.filter(f => f.getAttribute('data-rendered') === '1').length,
  running: bars('running'),
  pending: bars('pending'),
  points: gantt ? gantt.querySelectorAll('.barlayer .point').length : 0,
  rows: document.querySelectorAll('#results-table tbody tr[data-trial]').length,
  states: Object.fromEntries(Array.from(document.querySelectorAll('#results-table tr[data-trial]'))
    .map(r => [r.getAttribute('data-trial'), r.querySelector('td.state').textContent])),
  gantt: rect ? [rect.left + window.scrollX, rect.top + window.scrollY, rect.width, rect.height] : null,
  height: Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)),
  resources: performance.getEntriesByType('resource').map(e => e.name),
  ratio: window.devicePixelRatio,
};
"""

NEXT_FRAME = "const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(done));"
HOVER = "const g = document.getElementById('gantt'); return g && g.data.length ? g.data[0].customdata[0] : null;"
SORT_BY_TRIAL = """
const th = Array.from(document.querySelectorAll('#results-table thead th')).find(h => h.textContent === 'trial');
th.click();
return Array.from(document.querySelectorAll('#results-table tbody tr')).map(r => +r.getAttribute('data-trial'));
"""


@dataclass(frozen=True)
class PageCheck:
    figures: int  # figure containers in the page
    rendered: int  # of them, drawn by plotly
    gantt_running: int  # the Gantt's running bars (one per attempt that started)
    gantt_pending: int  # its pending (queued) bars
    gantt_points: int  # every bar point plotly drew in the Gantt
    table_rows: int  # rows of the results table (one per trial)
    states: dict[int, str]  # trial number -> the state its row shows
    console_errors: list[str]  # SEVERE browser console messages
    fetched: list[str]  # resources the page loaded that are not the file itself
    screenshot: Path
    gantt_ink: int  # coloured (saturated) pixels in the Gantt's region of the screenshot
    gantt_area: int  # pixels in that region
    size: tuple[int, int] = field(default=(0, 0))  # the screenshot's width and height
    hover: list[str] = field(default_factory=list)  # what the first Gantt bar's hover box shows
    sorted_by_trial: tuple[list[int], list[int]] = ([], [])  # rows after one and two clicks on "trial"


def _first(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if Path(p).exists()), None)


def poll(check: Callable[[], T | None], what: str, timeout: float = 30.0, every: float = 0.05) -> T:
    """Poll until `check` returns a value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    binary, driver = _first(CHROMIUM), _first(DRIVER) or shutil.which("chromedriver")
    if binary is None or driver is None:
        raise RuntimeError(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except WebDriverException as e:
        raise RuntimeError(f"{MISSING} ({e.msg or e})") from e
    try:
        yield browser
    finally:
        browser.quit()


def ink(png: bytes, box: Sequence[float]) -> tuple[int, int]:
    """Saturated pixels (a coloured bar, not grey text, grid lines or white) in `box` (left, top,
    width, height) of a screenshot, and the box's area."""
    with Image.open(io.BytesIO(png)) as image:
        left, top, width, height = (round(v) for v in box)
        region = image.convert("RGB").crop((left, top, min(image.width, left + width), min(image.height, top + height)))
        saturation = region.convert("HSV").getchannel("S").histogram()
    return sum(saturation[SATURATED:]), region.width * region.height


def open_report(html: Path, screenshot: Path, timeout: float = 60.0) -> PageCheck:
    """Load the report from file://, wait until plotly has drawn every figure, count what it
    drew, and save a screenshot of the whole page."""
    url = html.resolve().as_uri()
    with chromium() as browser:
        browser.get(url)

        def drawn() -> dict[str, Any] | None:
            probe: dict[str, Any] = browser.execute_script(PROBE)
            return probe if probe["figures"] and probe["rendered"] == probe["figures"] else None

        probe = poll(drawn, f"plotly to draw every figure of {html}", timeout)
        browser.set_script_timeout(timeout)
        browser.set_window_size(WIDTH, max(HEIGHT, probe["height"] + 200))
        poll(lambda: browser.execute_script("return window.innerHeight") >= probe["height"] or None,
             "the window to take the page's height", timeout)  # fmt: skip
        browser.execute_async_script(NEXT_FRAME)  # whatever the resize redraws is painted
        probe = poll(drawn, "plotly to draw every figure at the new size", timeout)
        png = browser.get_screenshot_as_png()
        hover: list[Any] = browser.execute_script(HOVER) or []
        order = [_sort_by_trial(browser) for _ in range(2)]  # one click: ascending; two: descending
        logs: list[dict[str, Any]] = cast(Any, browser).get_log("browser")  # untyped in selenium
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(png)
    ratio = float(probe["ratio"] or 1)
    coloured, area = ink(png, [v * ratio for v in probe["gantt"] or (0, 0, 0, 0)])
    with Image.open(io.BytesIO(png)) as image:
        size = image.size
    return PageCheck(
        figures=probe["figures"],
        rendered=probe["rendered"],
        gantt_running=probe["running"],
        gantt_pending=probe["pending"],
        gantt_points=probe["points"],
        table_rows=probe["rows"],
        states={int(k): v for k, v in probe["states"].items()},
        console_errors=[str(e.get("message")) for e in logs if e.get("level") == "SEVERE"],
        fetched=[r for r in probe["resources"] if r != url],
        screenshot=screenshot,
        gantt_ink=coloured,
        gantt_area=area,
        size=size,
        hover=[str(v) for v in hover],
        sorted_by_trial=(order[0], order[1]),
    )


def _sort_by_trial(browser: webdriver.Chrome) -> list[int]:
    """Click the results table's "trial" header; the rows' trial numbers in their new order."""
    order: list[int] = browser.execute_script(SORT_BY_TRIAL)
    return order
