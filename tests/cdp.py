"""Just enough Chrome DevTools Protocol for the browser tests, with no third-party dependency.

* :class:`WebSocket`: a minimal RFC 6455 client over a socket (ws:// only, text frames, masked
  client frames, fragmented messages, ping/pong, no extensions);
* :class:`CDP`: numbered commands and buffered events over one browser connection, with flattened
  target sessions;
* :class:`Tab`: one page: navigate, evaluate, console errors and exceptions, fonts, screenshots;
* :func:`chromium`: a headless Chromium for the length of a ``with`` block.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-port=0",
)  # fmt: skip
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class WebSocket:
    """A blocking websocket client; each call waits at most `timeout` seconds for the socket."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname or not parts.port:
            raise ValueError(f"need a ws://host:port/ URL, not {url!r}")
        self._sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self._buffer = b""
        try:
            self._handshake(f"{parts.hostname}:{parts.port}", parts.path or "/")
        except BaseException:
            self._sock.close()
            raise

    def _handshake(self, host: str, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
        self._sock.sendall(request.encode("ascii"))
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise ConnectionError(f"websocket upgrade refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        expected = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise ConnectionError("bad Sec-WebSocket-Accept")

    def _fill(self) -> None:
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("websocket closed by the peer")
        self._buffer += chunk

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        mask = os.urandom(4)
        self._sock.sendall(header + mask + _xor(payload, mask))

    def _recv_frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._read(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read(8))
        mask = self._read(4) if second & 0x80 else b""
        payload = self._read(size)
        return bool(first & 0x80), first & 0x0F, _xor(payload, mask) if mask else payload

    def send_text(self, text: str) -> None:
        self._send_frame(TEXT, text.encode("utf-8"))

    def recv_text(self) -> str:
        """The next text message (fragments joined); pings are answered, pongs ignored."""
        parts: list[bytes] = []
        while True:
            fin, opcode, payload = self._recv_frame()
            if opcode == PING:
                self._send_frame(PONG, payload)
            elif opcode == CLOSE:
                raise ConnectionError("websocket closed by the peer")
            elif opcode in (TEXT, CONTINUATION):
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode("utf-8")
            elif opcode != PONG:
                raise ConnectionError(f"unexpected websocket opcode {opcode:#x}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(CLOSE, struct.pack("!H", 1000))
        self._sock.close()


def _xor(data: bytes, mask: bytes) -> bytes:
    size = len(data)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


class CDPError(RuntimeError):
    pass


class CDP:
    """One DevTools connection; events are kept, in order, in :attr:`events`."""

    def __init__(self, url: str, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._ws = WebSocket(url, timeout)
        self._next_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._ws.send_text(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise TimeoutError(f"no answer to {method} in {self.timeout}s")

    def wait_for(self, method: str, session: str, since: int, timeout: float | None = None) -> dict[str, Any]:
        """The first `method` event of `session` at index `since` or later in :attr:`events`."""
        deadline = time.monotonic() + (timeout or self.timeout)
        index = since
        while True:
            for event in self.events[index:]:
                if event["method"] == method and event.get("sessionId") == session:
                    return event
            index = len(self.events)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} event in time")
            self._receive()

    def _receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self._ws.recv_text())
        if "method" in message:
            self.events.append(message)
        return message

    def close(self) -> None:
        self._ws.close()


class Tab:
    """A page target attached in flattened mode, with a fixed viewport."""

    def __init__(self, cdp: CDP, width: int = 1280, height: int = 900) -> None:
        self.cdp = cdp
        self.target: str = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = cdp.call("Target.attachToTarget", {"targetId": self.target, "flatten": True})
        self.session: str = attached["sessionId"]
        self.first_event = len(cdp.events)
        for domain in ("Page", "Runtime", "Log", "DOM", "CSS"):
            self.send(f"{domain}.enable")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics)

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.cdp.call(method, params, self.session)

    def goto(self, url: str) -> None:
        since = len(self.cdp.events)
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"cannot load {url}: {result['errorText']}")
        self.cdp.wait_for("Page.loadEventFired", self.session, since)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = self.send("Runtime.evaluate", params)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:60]!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries since the tab was opened."""
        found = []
        for event in self.cdp.events[self.first_event :]:
            if event.get("sessionId") == self.session and (problem := _problem(event)):
                found.append(problem)
        return found

    def fonts(self, selector: str) -> list[str]:
        """The families the browser actually used to draw the text of the first `selector` match."""
        root = self.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise CDPError(f"nothing matches {selector!r}")
        fonts = self.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        return [str(font["familyName"]) for font in fonts]

    def screenshot(self, path: Path) -> int:
        """A full-page PNG of the current page at `path`; returns its size in bytes."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        params = {"format": "png", "captureBeyondViewport": True, "clip": clip}
        data = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return len(data)

    def close(self) -> None:
        self.cdp.call("Target.closeTarget", {"targetId": self.target})


def _problem(event: dict[str, Any]) -> str | None:
    params = event.get("params", {})
    if event["method"] == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return f"exception: {details.get('exception', {}).get('description') or details.get('text')}"
    if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        args = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
        return f"console.{params['type']}: {args}"
    if event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip()
    return None


@contextlib.contextmanager
def chromium(binary: str, profile: Path, timeout: float = 20.0) -> Iterator[str]:
    """Run a headless Chromium with a fresh `profile`; yields the browser's DevTools websocket URL."""
    profile.mkdir(parents=True, exist_ok=True)
    log = profile.parent / f"{profile.name}-stderr.log"
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        yield _devtools_url(process, log, timeout)
    finally:
        _stop(process)


def _devtools_url(process: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    """The URL from the 'DevTools listening on ws://...' line Chromium prints on stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8", errors="replace")
        if match := _LISTENING.search(text):
            return match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}:\n{text[-2000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"chromium printed no DevTools URL in {timeout}s:\n{log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the Chromium we started: SIGTERM, then SIGKILL to its own process group."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
