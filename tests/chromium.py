"""A small Chrome DevTools Protocol driver over ``--remote-debugging-pipe``, standard
library only (for the site's browser test).

Chromium reads commands from fd 3 and writes replies and events to fd 4; each message is
one JSON object terminated by a NUL byte. :class:`Chromium` starts a headless browser with
its own profile folder, opens one page target (``Target.createTarget``, attached with
``flatten`` so page commands carry its ``sessionId``), enables ``Page`` and ``Network``
events and records every ``Network.requestWillBeSent`` URL in :attr:`requests`.

    with Chromium() as c:
        c.navigate("file:///tmp/site/index.html")
        text = c.evaluate("document.body.innerText")
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any

BINARY = "/usr/bin/chromium"


def find_chromium() -> str | None:
    """The Chromium binary (Debian's ``/usr/bin/chromium``, else ``chromium`` on PATH)."""
    if os.access(BINARY, os.X_OK):
        return BINARY
    return shutil.which("chromium")


def _high(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or more (not inherited); ``fd`` is closed."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class CDPError(RuntimeError):
    pass


class Chromium:
    """Headless Chromium driven over the DevTools pipe; a context manager."""

    def __init__(self, binary: str | None = None, timeout: float = 20.0) -> None:
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError("chromium not found (apt-get install chromium)")
        self.timeout = timeout
        self.requests: list[str] = []
        self.events: list[dict] = []
        self._id = 0
        self._buf = b""
        self.session: str | None = None

    # -- process -------------------------------------------------------------------------
    def __enter__(self) -> Chromium:
        self._profile = tempfile.mkdtemp(prefix="weightlab-chromium-")
        # pipe ends moved above fd 9, so putting the child's on fds 3 and 4 clobbers none
        to_r, to_w = (_high(fd) for fd in os.pipe())  # we write; chromium reads on fd 3
        from_r, from_w = (_high(fd) for fd in os.pipe())  # chromium writes on fd 4
        args = [self.binary, "--headless", "--disable-gpu", "--remote-debugging-pipe"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")
        args += [
            f"--user-data-dir={self._profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "about:blank",
        ]

        def child_fds() -> None:  # runs in the child: put the pipe ends on fds 3 and 4
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)

        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),  # kept open after preexec_fn put the pipe ends there
            preexec_fn=child_fds,
        )
        os.close(to_r)
        os.close(from_w)
        self._w, self._r = to_w, from_r
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call(
                "Target.attachToTarget", {"targetId": target, "flatten": True}
            )["sessionId"]
            self.call("Page.enable", session=True)
            self.call("Network.enable", session=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.call("Browser.close", timeout=3)
                except (CDPError, OSError, TimeoutError):
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol ------------------------------------------------------------------------
    def _send(self, msg: dict) -> None:
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self._w, data)
            data = data[n:]

    def _recv(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from chromium in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise CDPError(f"chromium closed the pipe (exit code {self.proc.poll()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg = json.loads(raw)
        if "method" in msg:
            self._event(msg)
        return msg

    def _event(self, msg: dict) -> None:
        self.events.append(msg)
        if msg["method"] == "Network.requestWillBeSent":
            self.requests.append(msg["params"]["request"]["url"])

    def call(
        self,
        method: str,
        params: dict | None = None,
        session: bool = False,
        timeout: float | None = None,
    ) -> dict:
        """Send one command (to the page session when ``session``) and return its result;
        events that arrive meanwhile are recorded."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self._send(msg)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def wait_event(self, method: str, since: int = 0, timeout: float | None = None) -> dict:
        """The first event ``method`` recorded at index ``since`` or later (waiting for it)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for ev in self.events[since:]:
                if ev["method"] == method:
                    return ev
            since = len(self.events)
            self._recv(deadline)

    # -- page helpers --------------------------------------------------------------------
    def navigate(self, url: str) -> None:
        """Open ``url`` in the page and wait for its load event."""
        mark = len(self.events)
        result = self.call("Page.navigate", {"url": url}, session=True)
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        self.wait_event("Page.loadEventFired", since=mark)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def click_and_wait(self, selector: str) -> None:
        """Click the first element matching ``selector`` and wait for the next page load."""
        mark = len(self.events)
        found = self.evaluate(
            f"(() => {{ const a = document.querySelector({json.dumps(selector)});"
            " if (!a) return false; a.click(); return true; })()"
        )
        if not found:
            raise CDPError(f"no element matches {selector!r}")
        self.wait_event("Page.loadEventFired", since=mark)
