"""A page rendered by a real headless Chromium: its screenshot and what it said on the console.

Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON
messages ending in NUL on file descriptors 3 and 4), so nothing but the browser itself is needed
and no port is opened. Console messages are told apart by level there, which the browser's log
lines on stderr do not do.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "chromium-headless-shell", "chrome-headless-shell", "google-chrome",
         "google-chrome-stable", "chrome")
PLAYWRIGHT = ("~/.cache/ms-playwright/chromium*/chrome-linux*/chrome",
              "~/.cache/ms-playwright/chromium_headless_shell*/chrome-*/chrome-headless-shell")
HOW_TO_GET_ONE = ("no Chromium or Chrome found (looked for " + ", ".join(NAMES) + " on PATH, $R1_CHROMIUM and playwright's "
                  "browsers); on Debian or Ubuntu: apt-get install chromium-headless-shell")


def find_chromium() -> str | None:
    """A Chromium-family browser: $R1_CHROMIUM, one on PATH, or one playwright downloaded."""
    if os.environ.get("R1_CHROMIUM"):
        return os.environ["R1_CHROMIUM"]
    for name in NAMES:
        if found := shutil.which(name):
            return found
    for pattern in PLAYWRIGHT:
        if matches := sorted(glob.glob(os.path.expanduser(pattern))):
            return matches[-1]
    return None


@dataclass
class Rendered:
    png: bytes
    problems: list[str] = field(default_factory=list)  # console errors and warnings, uncaught exceptions, log errors


class _Pipe:
    def __init__(self, browser: str, profile: str):
        # The browser reads commands on fd 3 and writes replies on fd 4. Our ends of the pipes are
        # moved above 4 first, so that putting them in place in the child overwrites neither.
        to_browser_r, self._to_browser = (_high(fd) for fd in os.pipe())
        self._from_browser, from_browser_w = (_high(fd) for fd in os.pipe())
        self.process = subprocess.Popen(
            [browser, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--hide-scrollbars", f"--user-data-dir={profile}",
             "about:blank"],
            close_fds=False, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: (os.dup2(to_browser_r, 3), os.dup2(from_browser_w, 4)))  # dup2'd fds survive exec
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self.receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        value = json.loads(message)
        if "method" in value:
            self.events.append(value)
        return value

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(event["method"] == method for event in self.events):
            self.receive(deadline)

    def close(self) -> None:
        """Ask the browser to quit; whatever of its process group is left after 10 s is killed."""
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its helper processes too
        self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def _high(fd: int) -> int:
    """FD moved to a number above 4, close-on-exec (our ends never reach the browser)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return moved


def render(browser: str, page: Path, width: int = 1200, height: int = 1600) -> Rendered:
    """Load PAGE (a file) in headless BROWSER; the screenshot of its first WIDTH x HEIGHT pixels,
    and every console error or warning, uncaught exception and log error it caused."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        pipe = _Pipe(browser, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                             "mobile": False}, session=session)
            pipe.events.clear()
            pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired")
            shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session)
            return Rendered(base64.b64decode(shot["data"]), problems(pipe.events))
        finally:
            pipe.close()


def problems(events: list[dict]) -> list[str]:
    found = []
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            found.append(f"console.{params['type']}: " + " ".join(str(arg.get("value", arg.get("description", "")))
                                                                  for arg in params.get("args", [])))
        elif event["method"] == "Runtime.exceptionThrown":
            found.append("exception: " + str(params.get("exceptionDetails", {}).get("text")))
        elif event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            found.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
    return found
