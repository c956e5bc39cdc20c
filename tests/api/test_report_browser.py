"""The report in a real headless Chromium, driven over the Chrome DevTools Protocol.

The page is served by a local HTTP server on 127.0.0.1 (as the API would serve it); the test
checks that it loads with its title and no console errors, that every chart has a real size and
the expected number of series, that the summary bar stays on screen when scrolled, that the
injected <script> from a malicious submission never runs, and it saves a full-page screenshot
(PNG, valid, non-uniform) under the test's tmp dir — set PGOLF_REPORT_SHOT=path to keep a copy.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import json
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import zlib
from pathlib import Path

import pytest

from api.report import render_report
from report_samples import sample_verdict

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two rendered reports (normal + malicious) behind a ThreadingHTTPServer on 127.0.0.1."""
    root = tmp_path_factory.mktemp("site")
    verdict, logs = sample_verdict()
    sub = {"id": "sub_1", "status": "reported", "source": "github", "repo": "openai/parameter-golf",
           "pr": 1900, "head_sha": "0123456789abcdef0123456789abcdef01234567"}
    (root / "report.html").write_text(render_report(verdict, submission=sub, logs=logs), encoding="utf-8")
    evil, evil_logs = sample_verdict(malicious=True, with_runs=False)
    (root / "evil.html").write_text(render_report(evil, logs=evil_logs), encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", verdict
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium) — browser test skipped")
    profile = tempfile.mkdtemp(prefix="pgolf-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ws_url = None
    try:
        for _ in range(400):  # the DevTools URL is printed on stderr once it listens
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            if "DevTools listening on" in line:
                ws_url = line.split("DevTools listening on", 1)[1].strip()
                break
        if ws_url is None:
            pytest.skip("chromium started but did not expose DevTools (sandboxed CI?)")
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain
        yield ws_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


class CDP:
    """Minimal DevTools client: one page target, flat session, events collected."""

    def __init__(self, ws):
        self.ws, self.next_id, self.session = ws, 0, None
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self.pending:
                self.pending.pop(msg["id"]).set_result(msg)
            else:
                self.events.append(msg)

    async def send(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def wait_event(self, method, timeout=30.0):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            for ev in self.events:
                if ev.get("method") == method:
                    return ev
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {method} within {timeout}s")

    async def eval(self, expr):
        res = await self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        if "exceptionDetails" in res:
            raise AssertionError(f"JS error in {expr!r}: {res['exceptionDetails']}")
        return res["result"].get("value")


async def _open(ws_url, url, width=1280, height=900):
    import websockets
    ws = await websockets.connect(ws_url, max_size=64 * 2**20)
    cdp = CDP(ws)
    target = await cdp.send("Target.createTarget", {"url": "about:blank"}, session=False)
    att = await cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                         session=False)
    cdp.session = att["sessionId"]
    for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
        await cdp.send(domain)
    await cdp.send("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    await cdp.send("Page.navigate", {"url": url})
    await cdp.wait_event("Page.loadEventFired")
    return ws, cdp


def _errors(events):
    out = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(("console", p.get("args")))
        elif m == "Runtime.exceptionThrown":
            out.append(("exception", p.get("exceptionDetails", {}).get("text")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(("log", p["entry"].get("text"), p["entry"].get("url")))
    return out


def _png_info(data: bytes) -> tuple[int, int, set[bytes]]:
    """Width, height and a sample of distinct pixels of an 8-bit RGB(A) PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    w = h = depth = ctype = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and ctype in (2, 6), (depth, ctype)
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # undo PNG filters
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 7 == 0:
            for x in range(0, w, 5):
                colours.add(bytes(line[x * bpp:x * bpp + 3]))
        prev = line
    return w, h, colours


def test_report_renders_in_chromium(browser, served, tmp_path):
    base, verdict = served

    async def go():
        ws, cdp = await _open(browser, f"{base}/report.html")
        try:
            title = await cdp.eval("document.title")
            charts = await cdp.eval("""Array.from(document.querySelectorAll('svg.chart')).map(s => {
                const r = s.getBoundingClientRect();
                return {chart: s.dataset.chart, w: r.width, h: r.height,
                        series: s.querySelectorAll('polyline.series').length,
                        dots: s.querySelectorAll('circle.dot').length,
                        len: Array.from(s.querySelectorAll('polyline.series')).map(p => p.getTotalLength())};
            })""")
            rules = await cdp.eval("Array.from(document.querySelectorAll('details.rule')).map(d => [d.dataset.rule, d.dataset.outcome, d.open])")
            outcome = await cdp.eval("document.getElementById('outcome').textContent.trim()")
            colour = await cdp.eval("getComputedStyle(document.querySelector('.hero .verdict')).color")
            await cdp.eval("window.scrollTo(0, document.body.scrollHeight)")
            await asyncio.sleep(0.2)
            bar_top = await cdp.eval("document.getElementById('summary-bar').getBoundingClientRect().top")
            height = await cdp.eval("Math.ceil(document.documentElement.scrollHeight)")
            await cdp.eval("window.scrollTo(0, 0)")
            shot = await cdp.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": 1280, "height": min(height, 6000), "scale": 1}})
            return title, charts, rules, outcome, colour, bar_top, height, base64.b64decode(shot["data"]), _errors(cdp.events)
        finally:
            cdp.reader.cancel()
            await ws.close()

    title, charts, rules, outcome, colour, bar_top, height, png, errors = asyncio.run(go())
    assert title.startswith("FAIL") and "SmearGate" in title
    assert errors == [], errors
    assert outcome == "FAIL" and colour == "rgb(207, 34, 46)"   # the big verdict is red
    by_chart = {c["chart"]: c for c in charts}
    assert set(by_chart) == {"train-loss", "val-bpb", "bpb-strip"}
    for c in charts:
        assert c["w"] > 300 and c["h"] > 100, c
    n_series = len(verdict["seeds"]) + 1   # three claimed seeds + one reproduced run log
    assert by_chart["train-loss"]["series"] == n_series
    assert by_chart["val-bpb"]["series"] == n_series
    assert all(length > 50 for length in by_chart["train-loss"]["len"])  # curves really drawn
    assert by_chart["bpb-strip"]["dots"] == 3 + 1 + 3                 # claimed, reproduced, baseline
    assert len(rules) == 15 and rules[0][1] == "fail" and rules[0][2] is True
    assert [r for r in rules if r[1] == "pass"][0][2] is False         # passing rules collapsed
    assert bar_top == 0                                                 # sticky summary bar
    w, h, colours = _png_info(png)
    assert (w, h) == (1280, min(height, 6000)) and height > 2000
    assert len(png) > 50_000 and len(colours) > 50                     # a real page, not blank
    out = tmp_path / "report.png"
    out.write_bytes(png)
    if os.environ.get("PGOLF_REPORT_SHOT"):
        Path(os.environ["PGOLF_REPORT_SHOT"]).write_bytes(png)


def test_malicious_submission_cannot_run_script(browser, served):
    base, _ = served

    async def go():
        ws, cdp = await _open(browser, f"{base}/evil.html")
        try:
            alerts = [e for e in cdp.events if e.get("method") == "Page.javascriptDialogOpening"]
            scripts = await cdp.eval("document.querySelectorAll('script').length")
            imgs = await cdp.eval("document.querySelectorAll('img').length")
            shown = await cdp.eval("document.body.innerText.includes(\"<script>alert('xss')</script>\")")
            return alerts, scripts, imgs, shown, _errors(cdp.events)
        finally:
            cdp.reader.cancel()
            await ws.close()

    alerts, scripts, imgs, shown, errors = asyncio.run(go())
    assert alerts == [] and scripts == 0 and imgs == 0
    assert shown is True          # the text is shown to the maintainer, as text
    assert errors == [], errors
