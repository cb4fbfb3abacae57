"""Log set-up: timestamped lines on stderr or in a log file; ``--debug`` adds detail. The access
log and the slow log each go to a file of their own, or into the server's log.

USR1 reopens every log file (after logrotate moved them). A log hook sees every line too.

What a client sent (a path, a header) goes into messages: control characters in a message are
written as \\xHH, so a request cannot forge a line of its own or send escape sequences to the
terminal of whoever reads the log. A traceback keeps its line breaks.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Callable

FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
_root = logging.getLogger("fcgi_backend")


_access = logging.getLogger("fcgi_backend.access")
_slow = logging.getLogger("fcgi_backend.slow")

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C0 but the tab, DEL, C1 (0x9b starts escapes too)
_CONTROL_IN_TRACEBACK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # the same but the line feed


def escape_controls(text: str, pattern: re.Pattern = _CONTROL) -> str:
    """``text`` with its control characters as \\xHH: one line, nothing a terminal acts on."""
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class LineFormatter(logging.Formatter):
    """The server's log lines: a message is always one line (its control characters escaped)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape_controls(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message  # other handlers (a log hook) get what was logged

    def formatException(self, exc_info) -> str:
        return escape_controls(super().formatException(exc_info), _CONTROL_IN_TRACEBACK)


class Throttled:
    """A message about a state that can come and go many times a second (every worker busy, no
    room for a worker): logged the first time, then at most once per ``interval`` seconds, saying
    how often it came between."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.level, self.interval, self.clock = logger, level, interval, clock
        self._logged_at: float | None = None
        self._held = 0  # times it came since it was last logged

    def log(self, message: str, *args) -> None:
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < self.interval:
            self._held += 1
            return
        if self._held:
            message += f" (also {self._held} times in the {now - self._logged_at:.0f} s before)"
        self.logger.log(self.level, message, *args)
        self._logged_at, self._held = now, 0


def configure(debug: bool = False, stream=None, log_file: str = "") -> None:
    """Send the server's logs to ``log_file`` (appended) or ``stream`` (stderr), with timestamps
    and the process id."""
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LineFormatter(FORMAT))
    _root.handlers[:] = [handler]
    _root.setLevel(logging.DEBUG if debug else logging.INFO)
    _root.propagate = False


def _own_file(logger: logging.Logger, path: str, formatter: logging.Formatter) -> None:
    """``logger`` writes to ``path`` alone ("" or "-": into the server's log)."""
    if path and path != "-":
        handler = logging.FileHandler(path)
        handler.setFormatter(formatter)
        logger.handlers[:] = [handler]
        logger.propagate = False
    else:
        logger.handlers[:] = []
        logger.propagate = True
    logger.setLevel(logging.INFO)


def configure_access(path: str) -> None:
    """The access log's lines go to ``path`` as they are, or into the server's log with "-"."""
    _own_file(_access, path, logging.Formatter("%(message)s"))  # its lines come escaped (access_log)


def configure_slow(path: str) -> None:
    """Slow requests' stacks go to ``path``, or into the server's log with ""."""
    _own_file(_slow, path, LineFormatter(FORMAT))


def slow_stream():
    """The open file slow requests' stacks are written to (the slow log's, or the server's log's)."""
    for logger in (_slow, _root):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, _HookHandler):
                return handler.stream
    return sys.stderr


def configured() -> bool:
    """Logging was set up (by configure, or by the program that uses the package)."""
    return bool(_root.handlers) or bool(logging.getLogger().handlers)


def reopen() -> None:
    """Reopen every log file (after logrotate moved them). One that cannot be opened is logged to
    stderr, and its lines go there until the next reopen: the server goes on."""
    for logger in (_root, _access, _slow):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    handler.close()
                    try:
                        handler.stream = handler._open()
                    except OSError as exc:
                        handler.stream = os.fdopen(os.dup(2), "w")  # its own copy: closing it later is harmless
                        print(f"log file {handler.baseFilename} cannot be reopened: {exc.strerror}; "
                              f"writing to stderr", file=sys.stderr)
                finally:
                    handler.release()


class _HookHandler(logging.Handler):
    def __init__(self, callback: Callable[[str, int], None]) -> None:
        super().__init__()
        self.callback = callback
        self._inside = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._inside:  # a hook that logs must not loop
            return
        self._inside = True
        try:
            self.callback(self.format(record), record.levelno)  # the message, and a traceback logged with it
        finally:
            self._inside = False


def attach_hook(callback: Callable[[str, int], None]) -> logging.Handler:
    """Also pass every log line (message, level) to ``callback``."""
    handler = _HookHandler(callback)
    _root.addHandler(handler)
    return handler


def detach_hook(handler: logging.Handler | None) -> None:
    if handler is not None:
        _root.removeHandler(handler)
