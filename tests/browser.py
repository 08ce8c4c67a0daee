"""A headless Chromium driven over the Chrome DevTools Protocol, for the report's browser tests.

``Browser()`` starts Debian's ``chromium`` (``.ci/run`` installs it) with a fresh profile and
talks to its page over the DevTools websocket (``websocket-client``, already a dependency): load
a URL and wait for the page's ready flag, evaluate JavaScript, move the mouse, click, and save a
screenshot. ``find_chromium()`` is ``None`` where no browser is installed (tests skip, saying how
to install it).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

INSTALL_HINT = "install Debian's chromium (apt-get install chromium), as .ci/run does"


def find_chromium() -> str | None:
    """The Chromium executable, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class Browser:
    """One headless Chromium with one page; use as a context manager.

    Args:
        width: The window's width in CSS pixels.
        height: The window's height in CSS pixels.
    """

    def __init__(self, width: int = 1400, height: int = 1000):
        executable = find_chromium()
        if executable is None:
            raise RuntimeError(f"no Chromium found: {INSTALL_HINT}")
        self._profile = tempfile.mkdtemp(prefix="kfnas-chromium-")
        self._process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",  # WebGL (plotly's parallel coordinates) on the CPU
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._port()
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self._ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self._ids = itertools.count(1)
        self.errors: list[str] = []
        self.send("Runtime.enable")
        self.send("Page.enable")

    def _port(self, timeout: float = 30.0) -> int:
        active = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if active.exists() and (text := active.read_text().split()):
                return int(text[0])
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._process.returncode}")
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Sends one DevTools command and returns its result (events meanwhile are noted)."""
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description", str(details)))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Polls ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := self.evaluate(expression):
                return value
            time.sleep(0.2)
        raise TimeoutError(f"still false after {timeout:.0f} s: {expression}")

    def open(self, url: str, ready: str = "document.body && document.body.dataset.ready") -> Any:
        """Loads ``url`` and waits until ``ready`` is truthy; returns its value."""
        self.send("Page.navigate", url=url)
        time.sleep(0.2)
        return self.wait_for(ready)

    def mouse(self, kind: str, x: float, y: float) -> None:
        """A mouse event (``mouseMoved``, ``mousePressed``, ``mouseReleased``) at (x, y)."""
        extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
        self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def center(self, element: str) -> tuple[float, float]:
        """Scrolls the element JavaScript ``element`` evaluates to into view; its centre."""
        x, y = self.evaluate(
            f"(() => {{const e = {element}; e.scrollIntoView({{block: 'center'}});"
            "const r = e.getBoundingClientRect(); return [r.x + r.width/2, r.y + r.height/2];})()"
        )
        return x, y

    def click(self, x: float, y: float) -> None:
        """A left click at (x, y)."""
        self.mouse("mousePressed", x, y)
        self.mouse("mouseReleased", x, y)

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """Saves the page (whole length by default) as a PNG."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": metrics["width"],
                "height": metrics["height"],
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Stops the browser and removes its profile."""
        try:
            self._ws.close()
        finally:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- What every report page must show, in a real browser ----------------------------------------

SECTION_PLOTS = ("plot-by-trial", "plot-latency", "plot-flops")
#: Markers whose centres lie this close (pixels) share a spot: the hover names one of them.
OVERLAP_PX = 8.0


def check_report(
    browser: Browser, url: str, shots: Path | None = None, name: str = "report"
) -> dict:
    """Opens a report page and checks it as a user would; returns the page data.

    Every study section with a completed trial has its table and drawn plots (a Plotly graph,
    not an empty-state note) for trials by id, metric against latency and FLOPs, and training
    curves (or why there are none); a searched study also has parallel coordinates. Clicking the
    reward header sorts the table best first; hovering a point of the Pareto front shows that
    trial's tooltip with its metric and decisions, and clicking it lists all its decisions.
    Screenshots go to ``shots`` if given.
    """
    assert browser.open(url) == "1", browser.errors
    assert not browser.errors, browser.errors
    data = browser.evaluate("JSON.parse(document.getElementById('kfnas-data').textContent)")
    for study in data["studies"]:
        section = f"document.getElementById('study-{study['name']}')"
        done = study["counts"]["COMPLETED"]
        rows = browser.evaluate(f"{section}.querySelectorAll('tbody tr').length")
        assert rows == len(study["trials"]), study["name"]
        if not done:
            continue
        wanted = list(SECTION_PLOTS)
        if study["curves"]:
            wanted.append("plot-curves")
        else:  # no trial's logs could be read: the section says why instead
            note = browser.evaluate(f"{section}.querySelector('.plot-curves').textContent")
            assert note and any(e in note for e in study["curve_errors"].values()), note
        if study["searched"] and done >= 2 and study["decisions"]:
            wanted.append("plot-parcoords")
        for plot in wanted:
            drawn = browser.evaluate(
                f"!!{section}.querySelector('.{plot} .main-svg, .{plot}.js-plotly-plot, "
                f".{plot} .js-plotly-plot')"
            )
            assert drawn, f"{study['name']}: {plot} not drawn"
    proxy = data["studies"][0]
    _check_sort(browser, proxy)
    _check_hover(browser, proxy, data["metric"])
    if shots is not None:
        browser.screenshot(shots / f"{name}.png")
    return data


def _check_sort(browser: Browser, study: dict) -> None:
    section = f"#study-{study['name']}"
    box = browser.center(f"document.querySelector('{section} thead th[data-key=reward]')")
    browser.click(*box)
    rows = f"[...document.querySelectorAll('{section} tbody tr')]"
    cells = browser.evaluate(f"{rows}.map(r => r.dataset.trial)")
    rewards = {t["trial_id"]: t["reward"] for t in study["trials"]}
    shown = [rewards[int(c)] for c in cells if rewards[int(c)] is not None]
    assert shown == sorted(shown, reverse=True) and shown, "the table is not sorted by reward"


def _check_hover(browser: Browser, study: dict, metric: str) -> None:
    front = study["fronts"]["latency_ms"]
    assert front, f"{study['name']} has no Pareto front to hover"
    plot = f"#study-{study['name']} .plot-latency"
    ids = browser.evaluate(
        f"document.querySelector('{plot} .js-plotly-plot, {plot}').data[0].customdata"
    )
    points = f"document.querySelector('{plot} .scatterlayer .trace').querySelectorAll('path.point')"
    # Trials with equal scores share a spot, and the one drawn last takes the hover: hover the
    # front's most isolated point, and expect any trial drawn within a few pixels of it.
    spots = browser.evaluate(
        f"[...{points}].map(p => {{const r = p.getBoundingClientRect(); "
        "return [r.x + r.width / 2, r.y + r.height / 2];})"
    )

    def gap(i: int, j: int) -> float:
        return math.dist(spots[i], spots[j])

    def isolation(i: int) -> float:
        return min((gap(i, j) for j in range(len(spots)) if j != i), default=math.inf)

    index = max((ids.index(trial) for trial in front), key=isolation)
    near = {ids[j] for j in range(len(spots)) if gap(index, j) <= OVERLAP_PX}
    box = browser.center(f"{points}[{index}]")
    browser.mouse("mouseMoved", box[0] - 30, box[1] - 30)
    browser.mouse("mouseMoved", *box)
    text = browser.wait_for(
        f"(document.querySelector('{plot} .hoverlayer .hovertext') || {{}}).textContent", 10
    )
    named = [trial for trial in near if f"trial {trial} (" in text]
    assert len(named) == 1 and metric in text, (near, text)
    if study["decisions"]:
        assert any(f"{d['id']} = " in text for d in study["decisions"]), text
    # A click shows every decision of the trial under the table.
    browser.click(*box)
    details = f"document.querySelector('#study-{study['name']} .trial-details')"
    shown = browser.wait_for(f"!{details}.hidden && {details}.textContent", 10)
    assert f"trial {named[0]}" in shown
    assert all(d["id"] in shown for d in study["decisions"]), shown
