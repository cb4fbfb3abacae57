"""Log set-up: timestamped lines on stderr or in a log file; ``--debug`` adds detail.

USR1 reopens the log file (after logrotate moved it). A log hook sees every line too.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
_root = logging.getLogger("fcgi_backend")


def configure(debug: bool = False, stream=None, log_file: str = "") -> None:
    """Send the server's logs to ``log_file`` (appended) or ``stream`` (stderr), with timestamps
    and the process id."""
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    _root.handlers[:] = [handler]
    _root.setLevel(logging.DEBUG if debug else logging.INFO)
    _root.propagate = False


def configured() -> bool:
    """Logging was set up (by configure, or by the program that uses the package)."""
    return bool(_root.handlers) or bool(logging.getLogger().handlers)


def reopen() -> None:
    """Reopen the log file, if logging goes to one."""
    for handler in _root.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
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
            self.callback(record.getMessage(), record.levelno)
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
