"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for the tests.

The protocol runs over a pipe (``--remote-debugging-pipe``: commands on the browser's fd 3, answers
on its fd 4, each a JSON message ended by a NUL byte), so no WebSocket library is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

# Debian's /usr/bin/chromium is a shell script that does not pass fds 3 and 4 on: run the binary.
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium",) if os.access(p, os.X_OK)), None) \
    or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--ignore-certificate-errors", "--remote-debugging-pipe"]


class BrowserError(Exception):
    pass


class Browser:
    """One headless Chromium with one page. ``with Browser() as page: page.goto(url)``."""

    def __init__(self, timeout: float = 30.0) -> None:
        if CHROMIUM is None:
            raise BrowserError("chromium is not installed")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="fcgi-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes answers on fd 4: bash (which, unlike dash, takes fds
        # above 9 in redirections) moves the pipes there.
        # Through fds 100 and 101, since the pipes may sit on 3 or 4 themselves.
        move = (f"exec 100<&{to_browser_r} 101>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-; "
                'exec 3<&100 4>&101 100<&- 101>&- "$0" "$@"')
        self.proc = subprocess.Popen(["/bin/bash", "-c", move, CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"], pass_fds=(to_browser_r, from_browser_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._pending = b""
        self._next_id = 0
        self._events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    # ---- the protocol ----------------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._pending:
            if time.monotonic() > deadline:
                raise BrowserError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 65536)
            if not chunk:
                raise BrowserError("chromium closed the pipe")
            self._pending += chunk
        message, self._pending = self._pending.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_for_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method:
                    return self._events.pop(i)
            self._events.append(self._read_message(deadline))

    # ---- what tests do ---------------------------------------------------------------------------

    def goto(self, url: str) -> None:
        """Load ``url`` and wait for its load event (the page and what it links to)."""
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        result = self.call("Page.navigate", session=True, url=url)
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def submit(self, form_selector: str, values: dict[str, str]) -> None:
        """Fill a form's fields and submit it as a user would (its button), then wait for the next page."""
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        fill = "".join(f"form.elements[{json.dumps(name)}].value = {json.dumps(value)};" for name, value in values.items())
        self.evaluate(f"(() => {{ const form = document.querySelector({json.dumps(form_selector)}); {fill} "
                      f"form.requestSubmit(); return true; }})()")
        self.wait_for_event("Page.loadEventFired")
