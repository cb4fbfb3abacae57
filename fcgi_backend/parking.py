"""Kept FastCGI connections a worker holds open, unread, while it serves others ("parked"), and
passing them on to a worker free to serve them.

A worker idle on a kept connection parks it when a new connection waits that no idle worker
takes (FastCGI cannot ask the web server to close first: a request it sent as the connection
closed was lost). The worker serves a parked connection's next request when it is between
requests. While it runs a request longer than ``PASS_ON_AFTER``, a thread of its own passes its
parked connections on (handoff.py), to be served by the first worker free: a request
the web server sent on one used to wait for the request in hand to end (behind a page taking
half a second, loaded over and over, one in ten quick pages through nginx waited 0.3 s or more,
the other worker idle).
A thread rather than a signal: it runs while the request waits in C code that lets the GIL go (a
database query), where a signal's Python handler would wait until the query returned.

A worker that leaves while the server runs on passes its parked connections on as well.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Callable

from .handoff import Handoff
from .scoreboard import OwnSlot, Scoreboard
from .sockio import readable

if TYPE_CHECKING:
    from .worker import _ReadinessWait

log = logging.getLogger("fcgi_backend.worker")

PARKED_AT_MOST = 32  # kept connections a worker keeps open for later while it serves others
PASS_ON_AFTER = 0.02  # seconds a request runs before its worker's parked connections go to a free worker


class ParkedConnections:
    """A worker's parked connections. Its main thread parks, serves and closes them between
    requests; the watching thread passes them on during a long request. Both under one lock."""

    def __init__(self, wait: "_ReadinessWait", *, slot: OwnSlot, scoreboard: Scoreboard, handoff: Handoff | None,
                 idle_timeout: float, close: Callable[[socket.socket], None], new_client: Callable[[int], socket.socket],
                 running_since: Callable[[], float | None]) -> None:
        self._wait = wait
        self._slot = slot
        self._scoreboard = scoreboard
        self._handoff = handoff
        self._idle_timeout = idle_timeout
        self._close = close  # a parked connection closed here lingers as any other
        self._new_client = new_client
        self._running_since = running_since  # when the request in hand began (monotonic), None between requests
        self._socks: dict[int, tuple[socket.socket, float]] = {}  # fd -> (socket, when parked), oldest first
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None  # started with the first connection parked
        self._wake_watcher = threading.Event()
        self._watcher_waits_for_one = False  # the watcher sleeps until a connection is parked
        self._ended = False

    def __bool__(self) -> bool:
        return bool(self._socks)

    def __contains__(self, fd: int) -> bool:
        return fd in self._socks

    def park(self, client: socket.socket) -> None:
        with self._lock:
            self._park(client)
        log.debug("kept connection parked while a waiting one is served (%d parked)", len(self._socks))

    def take_ready(self, ready: set[int]) -> socket.socket | None:
        """One whose next request has come (its descriptor in ``ready``), no longer parked."""
        with self._lock:
            fd = next((fd for fd in ready if fd in self._socks), None)
            return self._unpark(fd) if fd is not None else None

    def take_next_ready(self) -> socket.socket | None:
        """One whose next request has come (or whose peer hung up), found without waiting."""
        with self._lock:
            ready = readable(list(self._socks), 0)
            return self._unpark(ready[0]) if ready else None

    def close_idle(self) -> None:
        """Those idle for idle_timeout are closed, as a kept one is."""
        with self._lock:
            too_old = time.monotonic() - self._idle_timeout
            for fd in [fd for fd, (_, since) in self._socks.items() if since < too_old]:
                self._close(self._unpark(fd))

    def adopt(self) -> None:
        """Park the connections other workers passed on, if none took them first (FastCGI
        prefork: the only mode with a Handoff, the only one where any are passed on)."""
        with self._lock:
            self._scoreboard.set_handoff_pending(False)  # (before taking: one given meanwhile sets it again)
            for fd in self._handoff.take():
                self._park(self._new_client(fd))

    def may_pass_on(self) -> bool:
        """Leaving now, this worker would pass its connections on: the server runs on (at a stop
        they close)."""
        return self._handoff is not None and not self._scoreboard.stopping

    def end(self) -> None:
        """The worker's loop ends: its parked connections go to another worker if the server runs
        on (closing them loses a request sent that moment), else are closed."""
        with self._lock:
            self._ended = True
            if self.may_pass_on():
                self._pass_on()
            for fd in list(self._socks):
                self._close(self._unpark(fd))
        self._wake_watcher.set()

    # ---- under the lock ---------------------------------------------------------------------------

    def _park(self, client: socket.socket) -> None:
        if len(self._socks) >= PARKED_AT_MOST:  # the one parked longest goes (it can race a request)
            self._close(self._unpark(next(iter(self._socks))))
        self._socks[client.fileno()] = (client, time.monotonic())
        self._wait.add_parked(client.fileno())
        self._slot.set_parked(len(self._socks))
        if self._watcher is None and self._handoff is not None:
            self._watcher = threading.Thread(target=self._watch, name="fcgi_backend parked connections", daemon=True)
            self._watcher.start()
        elif self._watcher_waits_for_one:  # (only then: waking it costs the worker a thread switch)
            self._wake_watcher.set()

    def _unpark(self, fd: int) -> socket.socket:
        client, _ = self._socks.pop(fd)
        self._wait.remove_parked(fd)
        self._slot.set_parked(len(self._socks))
        return client

    def _pass_on(self) -> int:
        """Hand every parked connection to whichever worker looks first; how many went."""
        socks = [sock for sock, _ in self._socks.values()]
        given = self._handoff.give(socks) if socks else 0
        if given:
            self._scoreboard.set_handoff_pending(True)  # (after giving: a busy worker looks when it sees it)
            self._slot.count_handed_off(given)
            for sock in socks[:given]:
                self._unpark(sock.fileno()).close()  # (this copy only: the connection lives on in another worker)
        return given

    # ---- the watching thread ----------------------------------------------------------------------

    def _watch(self) -> None:
        """While the worker runs a request past PASS_ON_AFTER holding parked connections, pass
        them on: a worker idle, or idle on a kept connection, wakes for them; a busy one takes
        them after its request (even this one: then nothing was lost)."""
        while not self._ended:
            wait = None  # (nothing parked: until something is)
            if self._socks:
                since = self._running_since()
                ran = time.monotonic() - since if since is not None else 0.0
                wait = PASS_ON_AFTER - ran if ran < PASS_ON_AFTER else PASS_ON_AFTER
                if ran >= PASS_ON_AFTER:
                    with self._lock:  # (the request may have ended meanwhile: then the worker serves them)
                        given = self._pass_on() if not self._ended and self._running_since() == since else 0
                    if given:
                        log.debug("%d parked connections passed on: this worker's request has run %.0f ms", given,
                                  ran * 1000)
            self._watcher_waits_for_one = wait is None
            if wait is None and self._socks:  # (one parked since it looked)
                continue
            self._wake_watcher.wait(wait)
            self._wake_watcher.clear()
