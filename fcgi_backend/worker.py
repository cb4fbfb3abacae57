"""The accept loop: take connections from the listen socket and serve each through the gateway."""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import socket

from .gateway import FastCGIGateway

log = logging.getLogger("fcgi_backend.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Worker:
    """Serves one connection at a time until :meth:`stop` is called (SIGTERM and SIGINT call it).

    A stop that arrives during a request lets that request finish first. Use :meth:`handling_signals`
    around binding and serving, so a signal that comes before the loop starts is not lost.
    """

    def __init__(self, gateway: FastCGIGateway) -> None:
        self.gateway = gateway
        self.connections_served = 0
        self._running = True
        self._wake_r: socket.socket | None = None

    def stop(self, *_signal_args) -> None:
        """Leave the loop after the current connection (safe to call from a signal handler)."""
        self._running = False

    @contextlib.contextmanager
    def handling_signals(self):
        """SIGTERM and SIGINT call :meth:`stop` and wake the loop at once, inside this block."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        # A signal writes a byte to wake_w, so select returns at once.
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, self.stop) for sig in STOP_SIGNALS}
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
        watched = [listener] + ([self._wake_r] if self._wake_r else [])
        while self._running:
            ready, _, _ = select.select(watched, [], [])
            if self._wake_r in ready:
                _drain(self._wake_r)
            if listener in ready and self._running:
                self._accept_one(listener)

    def _accept_one(self, listener: socket.socket) -> None:
        try:
            client, addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            return  # another process took it, or a signal came first
        except OSError as exc:
            log.error("accept failed: %s", exc)
            return
        client.setblocking(True)
        self.connections_served += 1
        self.gateway.connection(client, addr).run()


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass
