"""The report in a real browser: headless Chromium loads a generated report and we check, over
the Chrome DevTools Protocol, that every <img> decodes, nothing is logged as an error, no
network request is made, and the page renders (a screenshot that is not blank).

Why the DevTools Protocol: it is the one channel that sees all four at once (decoded image
sizes, console and CSP messages, every request the page makes, a screenshot) without adding a
script to the report, whose Content-Security-Policy forbids scripts anyway. The client is a
few lines of stdlib (a WebSocket handshake and frames), so the test needs no extra package.

Chromium is Debian's `chromium`, installed with apt-get when absent (we run as root in CI); the
test is skipped, saying why, only where it cannot be installed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxviz.report import report

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-port=0",
]
TIMEOUT = 60.0


# ---------------------------------------------------------------- getting Chromium

def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _install_chromium() -> str | None:
    """apt-get install chromium (after apt-get update if the first try fails); None if that is
    not possible here, with the reason in the skip message."""
    if shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and there is no apt-get to install it with")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        pytest.skip("Chromium is not installed and installing it needs root (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "chromium"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"Chromium cannot be installed here (apt-get install chromium: {last})")
    return _find_chromium()


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _find_chromium() or _install_chromium()
    if path is None:
        pytest.skip("apt-get installed chromium but no chromium executable is on PATH")
    return path


# ---------------------------------------------------------------- a tiny WebSocket + CDP client

class WebSocket:
    """Just enough of RFC 6455 for the DevTools Protocol: text frames, masked from us."""

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        m = re.fullmatch(r"ws://([^/:]+):(\d+)(/.*)", url)
        assert m, url
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "the browser closed the connection during the handshake"
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        assert b" 101 " in status, status
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def send(self, text: str) -> None:
        data = text.encode()
        head = bytes([0x81])
        n = len(data)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def recv(self) -> str:
        parts = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode in (0x9, 0xA):  # ping / pong: not used by Chromium here
                continue
            parts.append(payload)
            if b0 & 0x80:  # FIN
                return b"".join(parts).decode()

    def close(self) -> None:
        self.sock.close()


class DevTools:
    """Commands to one page over a flattened session; events are kept for inspection."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def call(self, method: str, params: dict | None = None, session: bool = True,
             timeout: float = TIMEOUT) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def wait_for(self, method: str, timeout: float = TIMEOUT) -> dict:
        seen = next((e for e in self.events if e.get("method") == method), None)
        deadline = time.monotonic() + timeout
        while seen is None and time.monotonic() < deadline:
            event = json.loads(self.ws.recv())
            self.events.append(event)
            if event.get("method") == method:
                seen = event
        if seen is None:
            raise TimeoutError(method)
        return seen

    def of(self, method: str) -> list[dict]:
        return [e["params"] for e in self.events if e.get("method") == method]


class Browser:
    """Headless Chromium with remote debugging on a free port, a fresh profile."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = None
        deadline = time.monotonic() + TIMEOUT
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                url = m.group(1)
                break
        if url is None:
            self.close()
            raise RuntimeError("Chromium did not start its DevTools endpoint: "
                               + "".join(lines[-5:]))
        self.tools = DevTools(WebSocket(url))

    def open(self, url: str, width: int = 1400, height: int = 1000) -> DevTools:
        """A new page with Page/Runtime/Log/Network events on, loaded from `url`."""
        t = self.tools
        target = t.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = t.call("Target.attachToTarget", {"targetId": target["targetId"],
                                                    "flatten": True}, session=False)
        t.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            t.call(f"{domain}.enable")
        t.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                      "deviceScaleFactor": 1, "mobile": False})
        t.events.clear()
        t.call("Page.navigate", {"url": url})
        t.wait_for("Page.loadEventFired")
        return t

    def close(self) -> None:
        try:
            if hasattr(self, "tools"):
                self.tools.call("Browser.close", session=False, timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()


# ---------------------------------------------------------------- the checks

IMAGES_JS = """
Promise.all(Array.from(document.images).map(img =>
  img.decode().then(() => [img.naturalWidth, img.naturalHeight, img.complete, img.alt],
                    () => [0, 0, img.complete, img.alt])))
  .then(sizes => JSON.stringify({sizes: sizes,
                                 scripts: document.scripts.length,
                                 height: document.documentElement.scrollHeight,
                                 sections: Array.from(document.querySelectorAll('section'))
                                                .map(s => s.id)}))
"""


def inspect_page(tools: DevTools) -> dict:
    """Image sizes, console errors, requests, and a screenshot of the loaded page."""
    res = tools.call("Runtime.evaluate", {"expression": IMAGES_JS, "awaitPromise": True,
                                          "returnByValue": True})
    info = json.loads(res["result"]["value"])
    shot = tools.call("Page.captureScreenshot", {"format": "png"})
    info["screenshot"] = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    info["errors"] = (
        [e["entry"]["text"] for e in tools.of("Log.entryAdded")
         if e["entry"]["level"] in ("error", "warning")]
        + [str(e["args"]) for e in tools.of("Runtime.consoleAPICalled")
           if e["type"] in ("error", "warning", "assert")]
        + [e["exceptionDetails"].get("text", "") for e in tools.of("Runtime.exceptionThrown")])
    info["requests"] = [e["request"]["url"] for e in tools.of("Network.requestWillBeSent")]
    info["dialogs"] = tools.of("Page.javascriptDialogOpening")
    return info


def assert_renders_offline(info: dict, page_url: str) -> None:
    sizes = info["sizes"]
    assert sizes, "no <img> on the page"
    undecoded = [alt for w, h, complete, alt in sizes if not (w > 0 and h > 0 and complete)]
    assert not undecoded, f"images that did not decode: {undecoded[:5]}"
    assert info["errors"] == [], info["errors"]
    outside = [u for u in info["requests"] if u != page_url and not u.startswith("data:")]
    assert outside == [], f"requests beyond the file itself: {outside[:5]}"
    assert info["scripts"] == 0 and info["dialogs"] == []
    shot = np.asarray(info["screenshot"], np.float64)
    assert shot.shape[0] > 500 and shot.shape[1] > 1000
    assert shot.std() > 10, "the screenshot is blank"
    colors = info["screenshot"].getcolors(1 << 20)
    assert colors is None or len(colors) > 100, "the screenshot has almost no detail"


# ---------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    b = Browser(chromium, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_default_report_in_chromium(browser, tmp_path):
    """The default model's report, every section filled (defaults: digit + digits folder)."""
    out = tmp_path / "report.html"
    res = report(maximize=3, steps=8, output=out)
    assert all(s.error is None for s in res.sections)
    url = out.resolve().as_uri()
    info = inspect_page(browser.open(url))
    assert_renders_offline(info, url)
    assert len(info["sizes"]) == res.pictures
    assert info["sections"] == ["model", "layers", "filters", "features", "maximize",
                                "examples", "provenance"]
    assert info["height"] > 3000  # a long page, laid out (not collapsed)


def test_hostile_report_in_chromium(browser, tmp_path):
    """Injection attempts in every model string: nothing runs, nothing is requested."""
    import onnx
    from test_report import EVIL, hostile_model

    model_path = tmp_path / "evil.onnx"
    onnx.save(hostile_model(), model_path)
    image = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
                    ).save(image)
    out = tmp_path / "evil.html"
    report(model_path, images=[image], maximize=1, steps=2, output=out)
    url = out.resolve().as_uri()
    tools = browser.open(url)
    info = inspect_page(tools)
    assert_renders_offline(info, url)
    text = tools.call("Runtime.evaluate", {"expression": "document.body.innerText",
                                           "returnByValue": True})["result"]["value"]
    assert EVIL in text  # shown as text


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    """Negative control: a page with an undecodable image, a request and a console error
    fails each check (so the checks above can fail)."""
    good = base64.b64encode(_png_bytes()).decode()
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><h1>broken</h1>"
        f'<img src="data:image/png;base64,{good}" alt="fine">'
        '<img src="data:image/png;base64,iVBORw0KGgoAAAAN" alt="truncated">'
        '<img src="http://127.0.0.1:9/x.png" alt="remote">'
        "<script>console.error('oops')</script></body></html>")
    url = page.resolve().as_uri()
    info = inspect_page(browser.open(url))
    undecoded = [alt for w, h, complete, alt in info["sizes"] if not w]
    assert undecoded == ["truncated", "remote"]
    assert "http://127.0.0.1:9/x.png" in info["requests"]
    assert any("oops" in e for e in info["errors"])
    with pytest.raises(AssertionError):
        assert_renders_offline(info, url)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()
