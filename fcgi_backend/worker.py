"""A worker's accept loop: take connections from the listen socket and serve each through the gateway.

A worker serves one connection at a time. Between two requests on a connection the web server
keeps open (FCGI_KEEP_CONN: nginx's ``fastcgi_keep_conn``, Apache's ``enablereuse``) the worker is
idle, not busy: it stops, reloads and reaches max_requests there, gives the connection up after
``idle_timeout``, and gives it up at once when a new connection waits that no idle worker takes
(the web server opens another when it needs one). Kept connections never starve new ones.
"""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import socket
import time
from typing import Callable

from .errors import RequestTimeout
from .connection import drain_until_eof
from .gateway import FastCGIGateway
from .scoreboard import BUSY, IDLE, KEPT, Scoreboard

log = logging.getLogger("fcgi_backend.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_KEPT_TICK = 1.0  # longest single wait while idle on a kept connection
_YIELD_GRACE = 0.005  # what an idle worker gets to accept a new connection before a kept one yields
_LINGER_SECONDS = 1.0  # how long a closed connection is read for the web server to hang up


class NoEvents:
    """Event handlers that do nothing (a Worker used on its own)."""

    def on_accept_ok(self, client: socket.socket) -> None: ...
    def on_accept_error(self, error: OSError) -> None: ...
    def on_close(self, client: socket.socket) -> None: ...
    def on_prefork_child_idle(self) -> None: ...


class Worker:
    """Serves one connection at a time until :meth:`stop` (SIGTERM, SIGINT and SIGQUIT call it).

    A stop during a request lets that request finish first. Every ``timeout`` seconds without a
    connection, ``events.on_prefork_child_idle()`` runs. After ``max_requests`` requests (0: no
    limit) the worker stops, to be replaced. ``scoreboard`` and ``slot`` publish its state.
    """

    def __init__(self, gateway: FastCGIGateway, *, events=None, timeout: float | None = None,
                 max_requests: int = 0, request_timeout: float = 0.0, scoreboard: Scoreboard | None = None,
                 slot: int | None = None) -> None:
        self.gateway = gateway
        self.request_timeout = gateway.request_timeout = request_timeout
        self.events = events or NoEvents()
        self.timeout = timeout
        self.max_requests = max_requests
        self.scoreboard = scoreboard
        self.slot = slot
        self._running = True
        self._connection = None
        self._wake_r: socket.socket | None = None
        self._lingering: _Lingering | None = None  # closed connections waiting for the peer to hang up
        gateway.on_request_start = self._request_started
        gateway.on_request_end = self._request_ended

    def _request_started(self, what: str) -> None:
        if self.scoreboard is not None:
            self.scoreboard.start_request(self.slot, what)
        if self.request_timeout:
            signal.setitimer(signal.ITIMER_REAL, self.request_timeout)

    def _request_ended(self) -> None:
        if self.request_timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if self.scoreboard is not None:
            self.scoreboard.count_request(self.slot)

    @staticmethod
    def _request_timed_out(*_signal_args) -> None:
        raise RequestTimeout()

    def stop(self, *_signal_args) -> None:
        """Leave the loop after the current request (safe to call from a signal handler)."""
        self._running = False
        if self._connection is not None:
            self._connection.close_after_request = True

    @contextlib.contextmanager
    def handling_signals(self, extra: dict[int, Callable[[], None]] | None = None):
        """Inside this block, stop signals call :meth:`stop` and wake the loop at once; ``extra``
        maps further signals to functions of no arguments."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        # A signal writes a byte to wake_w, so select returns at once.
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        handlers = {sig: self.stop for sig in STOP_SIGNALS}
        if self.request_timeout:
            handlers[signal.SIGALRM] = self._request_timed_out
        handlers.update({sig: (lambda func: lambda *_: func())(func) for sig, func in (extra or {}).items()})
        old_handlers = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        self._wake_r = wake_r
        try:
            yield self
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self._wake_r = None
            wake_r.close()
            wake_w.close()

    def serve(self, listener: socket.socket) -> None:
        """Run the accept loop on ``listener`` until stopped."""
        listener.setblocking(False)
        wait = _ReadinessWait(listener, self._wake_r)
        self._lingering = _Lingering(wait, self.gateway.receive_buffer)
        idle_since = time.monotonic()
        try:
            while self._running:
                timeout = self._lingering.wait_at_most(self.timeout)
                ready = wait.poll(timeout)
                self._lingering.serve(ready)
                if not ready - self._lingering.fds:
                    if self.timeout is not None and time.monotonic() - idle_since >= self.timeout:
                        self.events.on_prefork_child_idle()
                        idle_since = time.monotonic()
                    continue
                idle_since = time.monotonic()
                if self._wake_r is not None and self._wake_r.fileno() in ready:
                    drain(self._wake_r)
                if listener.fileno() in ready and self._running:
                    client = self._accept(listener)
                    while client is not None:  # a kept connection may hand over a new one
                        client = self._serve_connection(client, listener, wait)
                self._check_max_requests()
        finally:
            self._lingering.close_all()
            self._lingering = None  # from here on (the backlog of a stop) closing waits in place
            wait.close()

    def _check_max_requests(self) -> None:
        if self.gateway.timed_out:
            self._running = False  # a request was interrupted: start afresh in a new worker
        elif self._running and self.max_requests and self.gateway.requests_served >= self.max_requests:
            log.info("served %d requests (max_requests); making way for a fresh worker",
                     self.gateway.requests_served)
            self._running = False

    def serve_backlog(self, listener: socket.socket) -> None:
        """Serve, one by one, the connections already waiting in the listen backlog (the server is
        stopping: they were accepted by the kernel, and a graceful stop drops none of them)."""
        while (client := self._accept(listener)) is not None:
            if self._connection_to_serve(client) is not None:
                self._serve_requests(self._connection)
                self._connection = None
        self._set_state(IDLE)

    def _set_state(self, state: int, accepted: int = 0) -> None:
        if self.scoreboard is not None:
            self.scoreboard.set_state(self.slot, state, accepted)

    def _accept(self, listener: socket.socket) -> socket.socket | None:
        try:
            client, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return None  # another worker took it, or a signal came first
        except OSError as exc:
            log.error("accept failed: %s", exc)
            self.events.on_accept_error(exc)
            return None
        return client

    def _connection_to_serve(self, client: socket.socket):
        self._set_state(BUSY, accepted=1)
        self.events.on_accept_ok(client)
        self._connection = self.gateway.connection(client, None, before_close=self.events.on_close,
                                                   linger=self._lingering.add if self._lingering else None)
        if not self._running:
            self._connection.close_after_request = True
        return self._connection

    def _serve_connection(self, client: socket.socket, listener: socket.socket, wait) -> socket.socket | None:
        """Serve every request of one connection; returns a new connection taken over from the
        backlog while this one idled, if any."""
        conn = self._connection_to_serve(client)
        try:
            return self._serve_requests(conn, listener, wait)
        finally:
            self._connection = None
            self._set_state(IDLE)

    def _serve_requests(self, conn, listener: socket.socket | None = None, wait=None) -> socket.socket | None:
        while conn.serve_request():
            self._check_max_requests()
            if not self._running:
                conn.close()
                return None
            next_client = self._idle_on_kept_connection(conn, listener, wait) if wait else None
            if conn.closed:
                return next_client
            self._set_state(BUSY)
        return None

    def _idle_on_kept_connection(self, conn, listener: socket.socket, wait) -> socket.socket | None:
        """Wait for the next request on a kept connection. Returns when it comes (the connection
        open), or with the connection closed: after idle_timeout, when the worker stops, or when a
        new connection waits and no idle worker is there to take it (that one is returned)."""
        if conn.has_buffered_record():
            return None
        self._set_state(KEPT)
        with wait.watching(conn.fileno()):
            outcome, client = self._wait_on_kept(conn, listener, wait)
        if outcome == "request":
            return None
        if outcome == "idle":
            log.debug("closing a kept connection idle for %gs", self.gateway.limits.idle_timeout)
        elif outcome == "yield":
            log.debug("a new connection waits and no worker is idle: leaving a kept connection for it")
        conn.close()
        return client

    def _wait_on_kept(self, conn, listener: socket.socket, wait) -> tuple[str, socket.socket | None]:
        """("request", None), ("idle", None), ("stop", None) or ("yield", new connection)."""
        deadline = time.monotonic() + self.gateway.limits.idle_timeout
        while self._running:
            left = deadline - time.monotonic()
            if left <= 0:
                return "idle", None
            ready = wait.poll_kept(min(left, _KEPT_TICK))
            if conn.fileno() in ready:
                return "request", None
            if self._wake_r is not None and self._wake_r.fileno() in ready:
                drain(self._wake_r)
            if listener.fileno() in ready and self._running:
                if self._idle_workers_exist():
                    # An idle worker was woken for it: look again after it had time to accept.
                    if conn.fileno() in wait.poll_kept(_YIELD_GRACE, include_listener=False):
                        return "request", None
                    continue
                client = self._accept(listener)
                if client is not None:
                    return "yield", client
        return "stop", None

    def _idle_workers_exist(self) -> bool:
        if self.scoreboard is None:
            return False
        return self.scoreboard.count_in_state(IDLE) > 0


class _ReadinessWait:
    """Waits for a connection on the listen socket (or a wake-up byte).

    On Linux, epoll with EPOLLEXCLUSIVE wakes one waiting worker per connection, the one that
    went idle last: light traffic stays on few workers, so the others idle out (as Net::Waiter's
    blocking accept does), and a burst does not wake the whole pool for one connection.

    A worker idle on a kept connection waits instead in a second epoll, on that connection, the
    wake-up byte and the listen socket (not exclusive: it only looks, the kernel still hands each
    new connection to a worker waiting to accept).
    """

    def __init__(self, listener: socket.socket, wake: socket.socket | None) -> None:
        self._listener = listener.fileno()
        self._others = [wake.fileno()] if wake is not None else []
        self._epoll = select.epoll()
        self._epoll.register(self._listener, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self._kept = select.epoll()
        for fd in self._others:
            self._epoll.register(fd, select.EPOLLIN)
            self._kept.register(fd, select.EPOLLIN)
        self._kept_fd: int | None = None

    def poll(self, timeout: float | None) -> set[int]:
        """File descriptors ready to read; empty after ``timeout`` seconds."""
        return {fd for fd, _ in self._epoll.poll(-1 if timeout is None else timeout)}

    @contextlib.contextmanager
    def watching(self, fd: int):
        """Inside this block, :meth:`poll_kept` waits for ``fd`` (a kept connection), the wake-up
        byte and the listen socket; meanwhile this worker is out of the kernel's choice of whom to
        wake for a new connection, since it is not waiting in accept."""
        self._kept.register(fd, select.EPOLLIN)
        self._kept.register(self._listener, select.EPOLLIN)
        self._epoll.unregister(self._listener)
        self._kept_fd = fd
        try:
            yield self
        finally:
            self._kept_fd = None
            self._epoll.register(self._listener, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            self._kept.unregister(self._listener)
            self._kept.unregister(fd)

    def add(self, fd: int) -> None:
        """Also wake for ``fd`` (a lingering connection; closing it removes it again)."""
        self._epoll.register(fd, select.EPOLLIN)

    def poll_kept(self, timeout: float, include_listener: bool = True) -> set[int]:
        if include_listener:
            return {fd for fd, _ in self._kept.poll(timeout)}
        fds = [self._kept_fd, *self._others]
        return set(select.select(fds, [], [], timeout)[0])

    def close(self) -> None:
        self._epoll.close()
        self._kept.close()


class _Lingering:
    """Connections shut down on our side, read and dropped until the web server hangs up (or a
    second passes): the worker's event loop does it while it serves others, so a web server
    slow to close never holds a worker, and none of its late writes meets a closed socket."""

    LIMIT = 256  # more at once: the oldest is closed without waiting

    def __init__(self, wait: _ReadinessWait, buffer) -> None:
        self._wait = wait
        self._buffer = buffer
        self._socks: dict[int, tuple[socket.socket, float]] = {}  # fd -> (socket, deadline)

    @property
    def fds(self) -> set[int]:
        return set(self._socks)

    def add(self, sock: socket.socket) -> None:
        if len(self._socks) >= self.LIMIT:
            self._close(next(iter(self._socks)))
        self._socks[sock.fileno()] = (sock, time.monotonic() + _LINGER_SECONDS)
        self._wait.add(sock.fileno())

    def wait_at_most(self, timeout: float | None) -> float | None:
        """``timeout``, shortened to the next deadline of a lingering connection."""
        if not self._socks:
            return timeout
        left = max(0.0, min(deadline for _, deadline in self._socks.values()) - time.monotonic())
        return left if timeout is None else min(timeout, left)

    def serve(self, ready: set[int]) -> None:
        """Read the ready ones; close those whose peer hung up, or whose time is up."""
        now = time.monotonic()
        for fd, (sock, deadline) in list(self._socks.items()):
            if (fd in ready and drain_until_eof(sock, self._buffer)) or now >= deadline:
                self._close(fd)

    def _close(self, fd: int) -> None:
        sock, _ = self._socks.pop(fd)
        sock.close()  # leaves the epoll with it

    def close_all(self) -> None:
        for fd in list(self._socks):
            self._close(fd)


def drain(sock: socket.socket) -> None:
    """Empty a non-blocking wake-up socket (the bytes signals wrote to it)."""
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass
