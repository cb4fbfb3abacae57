"""A worker's accept loop: take connections from the listen socket and serve each through the gateway."""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import socket
from typing import Callable

from .gateway import FastCGIGateway
from .scoreboard import BUSY, IDLE, Scoreboard

log = logging.getLogger("fcgi_backend.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


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
                 max_requests: int = 0, scoreboard: Scoreboard | None = None, slot: int | None = None) -> None:
        self.gateway = gateway
        self.events = events or NoEvents()
        self.timeout = timeout
        self.max_requests = max_requests
        self.scoreboard = scoreboard
        self.slot = slot
        self._running = True
        self._connection = None
        self._wake_r: socket.socket | None = None
        if scoreboard is not None:
            gateway.on_request_end = lambda: scoreboard.count_request(slot)

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
        try:
            while self._running:
                ready = wait.poll(self.timeout)
                if not ready:
                    self.events.on_prefork_child_idle()
                    continue
                if self._wake_r is not None and self._wake_r.fileno() in ready:
                    drain(self._wake_r)
                if listener.fileno() in ready and self._running:
                    self._accept_one(listener)
                if self.max_requests and self.gateway.requests_served >= self.max_requests:
                    log.info("served %d requests (max_requests); making way for a fresh worker",
                             self.gateway.requests_served)
                    self._running = False
        finally:
            wait.close()

    def _set_state(self, state: int, accepted: int = 0) -> None:
        if self.scoreboard is not None:
            self.scoreboard.set_state(self.slot, state, accepted)

    def _accept_one(self, listener: socket.socket) -> None:
        try:
            client, addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it, or a signal came first
        except OSError as exc:
            log.error("accept failed: %s", exc)
            self.events.on_accept_error(exc)
            return
        self._set_state(BUSY, accepted=1)
        try:
            if client.gettimeout() is not None:  # accept4 gives a blocking socket; spare the ioctl
                client.setblocking(True)
            self.events.on_accept_ok(client)
            self._connection = self.gateway.connection(client, addr, before_close=self.events.on_close)
            self._connection.run()
        finally:
            self._connection = None
            self._set_state(IDLE)


class _ReadinessWait:
    """Waits for a connection on the listen socket (or a wake-up byte).

    On Linux, epoll with EPOLLEXCLUSIVE wakes one waiting worker per connection, the one that
    went idle last: light traffic stays on few workers, so the others idle out (as Net::Waiter's
    blocking accept does), and a burst does not wake the whole pool for one connection.
    """

    def __init__(self, listener: socket.socket, wake: socket.socket | None) -> None:
        self._fds = [listener.fileno()] + ([wake.fileno()] if wake is not None else [])
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        if self._epoll is not None:
            self._epoll.register(self._fds[0], select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0))
            for fd in self._fds[1:]:
                self._epoll.register(fd, select.EPOLLIN)

    def poll(self, timeout: float | None) -> set[int]:
        """File descriptors ready to read; empty after ``timeout`` seconds."""
        if self._epoll is not None:
            return {fd for fd, _ in self._epoll.poll(-1 if timeout is None else timeout)}
        return set(select.select(self._fds, [], [], timeout)[0])

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


def drain(sock: socket.socket) -> None:
    """Empty a non-blocking wake-up socket (the bytes signals wrote to it)."""
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass
