"""The slow log, as php-fpm's: a request running past ``slowlog_timeout`` has its Python stack
written down while it goes on running.

The supervisor, which watches every worker's request in the scoreboard, writes a line naming the
worker, the request and how long it has run, then sends the worker SLOWLOG_SIGNAL. The worker has
``faulthandler`` dump its stack on that signal: all frames, file, line and function, written from
C inside the signal handler, so it comes even when the request is deep in C code (a query, a
regex) that would hold a Python-level handler off.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import time

from . import logs

log = logging.getLogger("fcgi_backend.slow")

SLOWLOG_SIGNAL = signal.SIGRTMIN + 2  # a real-time signal nothing else here uses
_SPACING = 0.2  # seconds between two reports: one stack is written whole before the next begins


def arm_worker(slowlog_timeout: float) -> None:
    """In a worker: dump the stack into the slow log when the supervisor asks."""
    if slowlog_timeout:
        faulthandler.register(SLOWLOG_SIGNAL, file=logs.slow_stream(), all_threads=True, chain=False)


class Reporter:
    """The supervisor's side: each slow request is reported once."""

    def __init__(self) -> None:
        self._reported: dict[int, float] = {}  # worker pid -> start of the request reported
        self._last = 0.0

    def report(self, pid: int, request_started: float, request: str, running_for: float) -> None:
        if self._reported.get(pid) == request_started or time.monotonic() - self._last < _SPACING:
            return
        self._reported[pid] = request_started
        self._last = time.monotonic()
        log.warning("slow request: worker %d, %s, running for %.1fs; its stack follows", pid, request or "?",
                    running_for)
        for handler in log.handlers or logging.getLogger("fcgi_backend").handlers:
            handler.flush()
        try:
            os.kill(pid, SLOWLOG_SIGNAL)
        except ProcessLookupError:
            pass

    def forget(self, pid: int) -> None:
        self._reported.pop(pid, None)
