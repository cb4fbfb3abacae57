"""The server: a supervisor with a pool of preforked workers, after Net::Waiter.

Read top to bottom as gunicorn's arbiter: signals are queued and handled in the main loop, dead
workers are reaped, the pool grows when every worker is busy (up to maxfork) and shrinks when
workers above prefork idle for px_idle, and stragglers are killed after graceful_timeout.

Subclass :class:`Server` and override its ``on_*`` methods (Net::Waiter's event handlers), or let
handler modules register callables with ``registry.hook(name, func)``: the default methods run
those.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from typing import Callable

from . import logs
from .config import ServerConfig
from .gateway import FastCGIGateway
from .hooks import Hooks
from .limits import Limits
from .listener import (ListenAddress, ListenError, listen_queue_length, open_listener, remove_unix_socket,
                       file_id)
from .loader import HandlerLoadError
from .scoreboard import IDLE, Scoreboard, ScoreboardFull
from .uploads import remove_stale_upload_files, remove_upload_files
from .status import StatusMiddleware, status_dict
from .worker import Worker, drain

log = logging.getLogger("fcgi_backend.server")

EXIT_OK = 0
EXIT_CANNOT_LISTEN = 100  # Net::Waiter: cannot create server listen socket

_TICK = 0.05  # seconds between looks at the pool
_REQUEST_KILL_GRACE = 5.0  # past request_timeout, what a worker gets to stop the request itself
_SUPERVISOR_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                       signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)

AppFactory = Callable[[], tuple[Callable, "Hooks | None"]]


class Server:
    """A FastCGI server for one WSGI application: binds, forks workers, watches them, stops.

    ``load_app`` builds (application, hooks) afresh; it runs at start and again on SIGHUP. ``run()``
    returns the exit code: 0, or 100 when the listen socket cannot be created.
    """

    def __init__(self, load_app: AppFactory, address: ListenAddress, config: ServerConfig, *,
                 limits: Limits | None = None, debug: bool = False, socket_mode: int = 0o660,
                 socket_group: str | None = None) -> None:
        self.load_app = load_app
        self.address = address
        self.config = config.resolved()
        self.limits = limits or Limits()
        self.debug = debug
        self.socket_mode = socket_mode
        self.socket_group = socket_group
        self.app, hooks = load_app()
        self.hooks = hooks or Hooks()
        # Room for two generations of workers: the old finish their requests while the new start.
        self.scoreboard = Scoreboard(2 * self.config.maxfork)
        self.listener: socket.socket | None = None
        self.generation = 1
        self.workers: dict[int, tuple[int, int]] = {}  # pid -> (scoreboard slot, generation)
        self._retiring: dict[int, float] = {}  # pid -> when it was told to finish and exit
        self._child = False
        self._worker: Worker | None = None
        self._running = True
        self._graceful_stop = False
        self._signal_queue: list[int] = []
        self._maxforked = False
        self._spawn_rate = 1
        self._log_hook_handler = None

    # ---- Net::Waiter's API ---------------------------------------------------------------------

    def run(self) -> int:
        """Bind, serve until stopped, clean up; the exit code."""
        self._log_hook_handler = logs.attach_hook(self.on_log)
        try:
            self.listener = open_listener(self.address, self.socket_mode, self.socket_group)
        except ListenError as exc:
            log.error("%s", exc)
            return EXIT_CANNOT_LISTEN
        self._socket_file = file_id(self.address.path) if self.address.path else None
        try:
            log.info("listening on %s", self.address)
            self._remove_stale_uploads()
            self.on_listen_ok()
            if self.config.nofork:
                self._serve_in_this_process()
            else:
                self._supervise()
            return EXIT_OK
        finally:
            if not self._child:
                self.on_server_close()
                if self.address.path:
                    remove_unix_socket(self.listener, self.address.path)
                else:
                    self.listener.close()
                logs.detach_hook(self._log_hook_handler)

    def break_main_loop(self) -> None:
        """Leave the main loop at its next turn (from a hook): the supervisor stops, or this worker."""
        if self._child and self._worker is not None:
            self._worker.stop()
        else:
            self._running = False

    def is_child(self) -> bool:
        return self._child

    def get_busy_kids_count(self) -> tuple[int, int]:
        """(busy workers, all workers), from any process."""
        return self.scoreboard.busy_counts()

    def get_kid_pids(self) -> list[int]:
        """Worker pids (in the supervisor only)."""
        return [] if self._child else sorted(self.workers)

    def get_server_socket(self) -> socket.socket | None:
        return None if self._child else self.listener

    def propagate_signal(self, signum: int) -> None:
        """Send ``signum`` to every worker."""
        for pid in list(self.workers):
            _kill(pid, signum)

    # ---- event handlers: override, or register callables ---------------------------------------

    def on_listen_ok(self) -> None:
        self.hooks.fire("listen_ok", self)

    def on_accept_error(self, error: OSError) -> None:
        self.hooks.fire("accept_error", self, error)

    def on_accept_ok(self, client: socket.socket) -> None:
        self.hooks.fire("accept_ok", self, client)

    def on_fork_ok(self, pid: int) -> None:
        self.hooks.fire("fork_ok", self, pid)

    def on_child_start(self) -> None:
        self.hooks.fire("child_start", self)

    def on_child_exit(self) -> None:
        self.hooks.fire("child_exit", self)

    def on_close(self, client: socket.socket) -> None:
        self.hooks.fire("close", self, client)

    def on_server_close(self) -> None:
        self.hooks.fire("server_close", self)

    def on_sig_child(self, pid: int) -> None:
        self.hooks.fire("sig_child", self, pid)

    def on_sig_usr1(self) -> None:
        self.hooks.fire("sig_usr1", self)

    def on_sig_usr2(self) -> None:
        self.hooks.fire("sig_usr2", self)

    def on_child_sig_usr1(self) -> None:
        self.hooks.fire("child_sig_usr1", self)

    def on_child_sig_usr2(self) -> None:
        self.hooks.fire("child_sig_usr2", self)

    def on_prefork_child_idle(self) -> None:
        self.hooks.fire("prefork_child_idle", self)

    def on_maxforked(self) -> None:
        self.hooks.fire("maxforked", self)

    def on_log(self, message: str, level: int) -> None:
        self.hooks.fire("log", self, message, level)

    # ---- the application each worker serves ------------------------------------------------------

    def _gateway(self) -> FastCGIGateway:
        app = self.app
        if self.config.status_path or self.config.ping_path:
            app = StatusMiddleware(app, status_path=self.config.status_path, ping_path=self.config.ping_path,
                                   read_status=self.status)
        return FastCGIGateway(app, debug=self.debug, limits=self.limits, multiprocess=not self.config.nofork,
                              max_conns=1 if self.config.nofork else self.config.maxfork)

    def status(self) -> dict:
        """The pool's figures, as the status page shows them."""
        return status_dict(self.scoreboard.read(), prefork=self.config.prefork, maxfork=self.config.maxfork,
                           listen_queue=listen_queue_length(self.listener))

    def _make_worker(self, slot: int | None) -> Worker:
        return Worker(self._gateway(), events=self, timeout=self.config.timeout,
                      max_requests=self.config.max_requests, request_timeout=self.config.request_timeout,
                      scoreboard=self.scoreboard, slot=slot)

    def _serve_in_this_process(self) -> None:
        slot = self.scoreboard.claim(self.generation)
        self.scoreboard.assign(slot, os.getpid())
        self._worker = self._make_worker(slot)
        log.info("serving in one process (nofork)")
        handlers = self._worker_signal_handlers()
        handlers[signal.SIGHUP] = lambda: log.warning("SIGHUP: no reload in nofork mode; restart the server")
        with self._worker.handling_signals(handlers):
            self._worker.serve(self.listener)
            self._stop_accepting()
            self._worker.serve_backlog(self.listener)

    # ---- the supervisor ---------------------------------------------------------------------------

    def _supervise(self) -> None:
        wake_r, wake_w = socket.socketpair()
        for s in (wake_r, wake_w):
            s.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, self._queue_signal) for sig in _SUPERVISOR_SIGNALS}
        self._wake = (wake_r, wake_w)
        log.info("supervisor %d: prefork %d, maxfork %d", os.getpid(), self.config.prefork, self.config.maxfork)
        try:
            while self._running:
                self._handle_signals()
                self._reap()
                if not self._running:
                    break
                self._watch_requests()
                self._manage_pool()
                self._sleep(wake_r)
            self._stop_workers(wake_r)
        finally:
            if not self._child:
                signal.set_wakeup_fd(old_wakeup)
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
                wake_r.close()
                wake_w.close()

    @staticmethod
    def _sleep(wake_r: socket.socket) -> None:
        """Wait one tick, or less if a signal comes."""
        ready, _, _ = select.select([wake_r], [], [], _TICK)
        if ready:
            drain(wake_r)

    def _queue_signal(self, signum: int, _frame) -> None:
        self._signal_queue.append(signum)

    def _handle_signals(self) -> None:
        while self._signal_queue and self._running:
            signum = self._signal_queue.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("%s: stopping; requests in flight get %gs", signal.Signals(signum).name,
                         self.config.graceful_timeout)
                self._running = False  # signals after this one are _stop_workers' to handle
            elif signum == signal.SIGQUIT:
                log.info("SIGQUIT: stopping once every request in flight has finished")
                self._running = False
                self._graceful_stop = True
            elif signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGUSR1:
                logs.reopen()
                self.on_sig_usr1()
                if self.config.prop_sigusr:
                    self.propagate_signal(signal.SIGUSR1)
            elif signum == signal.SIGUSR2:
                self.on_sig_usr2()
                if self.config.prop_sigusr:
                    self.propagate_signal(signal.SIGUSR2)
            # SIGCHLD only wakes the loop; _reap does the work

    def _reload(self) -> None:
        old = [pid for pid, (_, gen) in self.workers.items() if gen == self.generation]
        room = self.scoreboard.free_slots()
        if room < self.config.prefork:
            log.error("SIGHUP: reload refused: %d workers of earlier generations are still finishing requests "
                      "and only %d of %d worker slots are free; it can be asked again once they exit (each is "
                      "stopped graceful_timeout=%gs after it was retired)", len(self._retiring), room,
                      self.scoreboard.capacity, self.config.graceful_timeout)
            return
        log.info("SIGHUP: reloading handler modules and templates")
        try:
            self.app, hooks = self.load_app()
            self.hooks = hooks or Hooks()
        except HandlerLoadError as exc:
            log.error("reload failed, the running workers go on serving: %s", exc)
            return
        self.generation += 1
        for _ in range(self.config.prefork):
            self._spawn()
        for pid in old:  # they finish the request in hand, then exit
            self._retire(pid)
        log.info("reloaded: generation %d started, %d old workers finishing", self.generation, len(old))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot, _ = self.workers.pop(pid, (None, None))
            if slot is None:
                continue
            self.scoreboard.release(slot)
            retiring = self._retiring.pop(pid, None) is not None
            if os.WIFSIGNALED(status) and not retiring:
                log.warning("worker %d was killed by %s; replacing it", pid, signal.Signals(os.WTERMSIG(status)).name)
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                log.warning("worker %d exited with code %d", pid, os.WEXITSTATUS(status))
            else:
                log.debug("worker %d exited", pid)
            self._remove_uploads_of(pid)
            self.on_sig_child(pid)

    def _remove_stale_uploads(self) -> None:
        """Temporary upload files of workers no longer running (an earlier server was killed)."""
        try:
            count, size = remove_stale_upload_files(self.limits.upload_dir)
        except OSError as exc:
            log.warning("cannot look for stale upload files in %s: %s", self.limits.upload_dir, exc)
            return
        if count:
            log.warning("removed %d stale upload file%s (%.1f MB) in %s", count, "s" * (count != 1), size / 1e6,
                        self.limits.upload_dir)

    def _remove_uploads_of(self, pid: int) -> None:
        """A worker that died mid-upload (killed, out of memory) could not remove its temporary files."""
        try:
            count, size = remove_upload_files(self.limits.upload_dir, pid)
        except OSError as exc:
            log.warning("cannot look for upload files of worker %d in %s: %s", pid, self.limits.upload_dir, exc)
            return
        if count:
            log.warning("removed %d upload file%s (%.1f MB) left by worker %d", count, "s" * (count != 1),
                        size / 1e6, pid)

    def _watch_requests(self) -> None:
        """Kill what must go: a request far past request_timeout (the worker did not stop it
        itself: stuck in C code), a retired worker still busy graceful_timeout after retirement."""
        now = time.monotonic()
        limit = self.config.request_timeout
        for w in self.scoreboard.read().workers:
            if w.pid not in self.workers:
                continue
            if limit and w.busy and w.request_for > limit + _REQUEST_KILL_GRACE:
                log.error("worker %d: %s has run %.1fs, past request_timeout %gs and not stopped; killing the "
                          "worker", w.pid, w.request or "a request", w.request_for, limit)
                _kill(w.pid, signal.SIGKILL)
            retired = self._retiring.get(w.pid)
            if retired is not None and now - retired > self.config.graceful_timeout and w.busy:
                log.warning("worker %d, retired %.0fs ago, is still busy with %s; killing it (graceful_timeout "
                            "%gs)", w.pid, now - retired, w.request or "a request", self.config.graceful_timeout)
                _kill(w.pid, signal.SIGKILL)
                self._retiring[w.pid] = float("inf")  # still retiring until reaped, but never killed twice

    def _manage_pool(self) -> None:
        """Keep prefork workers; grow while all are busy, up to maxfork; let idle extras go."""
        current = {w.pid: w for w in self.scoreboard.read().workers
                   if w.generation == self.generation and w.pid not in self._retiring and w.pid in self.workers}
        count = sum(1 for pid, (_, gen) in self.workers.items() if gen == self.generation and pid not in self._retiring)
        for _ in range(self.config.prefork - count):
            self._spawn()
        count = max(count, self.config.prefork)
        # A worker idle on a kept connection is not free to accept: only plain idle ones count.
        all_busy = bool(current) and len(current) == count and all(w.state != IDLE for w in current.values())
        if all_busy:
            if count < self.config.maxfork:
                for _ in range(min(self._spawn_rate, self.config.maxfork - count)):
                    self._spawn()
                self._spawn_rate = min(self._spawn_rate * 2, 32)  # as php-fpm's dynamic spawning
            elif not self._maxforked:
                self._maxforked = True
                self.scoreboard.count_maxfork_reached()
                log.warning("all %d workers are busy (maxfork); new connections wait in the listen backlog",
                            count)
                self.on_maxforked()
            return
        self._spawn_rate = 1
        self._maxforked = False
        extra = count - self.config.prefork
        for w in sorted((w for w in current.values() if w.state == IDLE), key=lambda w: -w.idle_for):
            if extra <= 0 or w.idle_for < self.config.px_idle:
                break
            log.info("worker %d idle for %.0fs above prefork; letting it go", w.pid, w.idle_for)
            self._retire(w.pid)
            extra -= 1

    def _retire(self, pid: int) -> None:
        self._retiring.setdefault(pid, time.monotonic())
        _kill(pid, signal.SIGQUIT)

    def _spawn(self) -> bool:
        """Fork one worker of the current generation; False (logged) if the pool has no room."""
        try:
            slot = self.scoreboard.claim(self.generation)
        except ScoreboardFull:
            log.error("cannot start a worker: all %d worker slots are taken (workers of earlier generations "
                      "still finishing requests)", self.scoreboard.capacity)
            return False
        # Signals wait until the child has its own handlers: the supervisor's would only queue them,
        # and a worker that missed its SIGTERM would hold the stop up for graceful_timeout.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._child_main(slot)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.scoreboard.assign(slot, pid)
        self.workers[pid] = (slot, self.generation)
        log.debug("forked worker %d (generation %d)", pid, self.generation)
        self.on_fork_ok(pid)
        return True

    def _stop_accepting(self) -> None:
        """New clients are refused from now on: the socket file goes (connecting to its path fails
        at once), while the workers still accept what is already in the backlog."""
        if self.address.path and file_id(self.address.path) == self._socket_file:  # not another server's since
            try:
                os.unlink(self.address.path)
            except OSError as exc:
                log.warning("cannot remove socket %s: %s", self.address.path, exc.strerror)

    def _stop_workers(self, wake_r: socket.socket) -> None:
        """Stop every worker: each finishes its request in hand and what waits in the backlog. A
        stop by TERM or INT kills workers still busy after graceful_timeout; a stop by QUIT waits,
        until a TERM or INT comes; a second TERM or INT kills at once."""
        self.scoreboard.set_stopping()
        self._stop_accepting()
        deadline = None
        if self._graceful_stop:
            self.propagate_signal(signal.SIGQUIT)
        else:
            deadline = time.monotonic() + self.config.graceful_timeout
            self.propagate_signal(signal.SIGTERM)
        while True:
            self._reap()
            if not self.workers:
                return
            for signum in self._take_signals():
                if signum == signal.SIGUSR1:
                    logs.reopen()
                elif signum in (signal.SIGTERM, signal.SIGINT):
                    if deadline is None:
                        log.info("%s: requests in flight now get %gs", signal.Signals(signum).name,
                                 self.config.graceful_timeout)
                        deadline = time.monotonic() + self.config.graceful_timeout
                        self.propagate_signal(signal.SIGTERM)
                    else:
                        log.warning("%s again: killing %d workers now", signal.Signals(signum).name, len(self.workers))
                        deadline = 0.0
            if deadline is not None and time.monotonic() >= deadline:
                busy = [w for w in self.scoreboard.read().workers if w.pid in self.workers and w.busy]
                log.warning("killing %d workers still busy after %gs%s", len(self.workers),
                            self.config.graceful_timeout,
                            "".join(f"; {w.pid}: {w.request} ({w.request_for:.1f}s)" for w in busy))
                self.propagate_signal(signal.SIGKILL)
                deadline = None
            self._watch_requests()
            self._sleep(wake_r)

    def _take_signals(self) -> list[int]:
        taken, self._signal_queue = self._signal_queue, []
        return taken

    # ---- a worker -----------------------------------------------------------------------------------

    def _child_main(self, slot: int) -> int:
        self._child = True
        wake_r, wake_w = self._wake
        wake_r.close()
        wake_w.close()
        signal.set_wakeup_fd(-1)
        for sig in _SUPERVISOR_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.scoreboard.assign(slot, os.getpid())
        self.workers = {}
        self._worker = self._make_worker(slot)
        self.on_child_start()
        try:
            with self._worker.handling_signals(self._worker_signal_handlers()):
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISOR_SIGNALS)  # blocked since the fork
                self._worker.serve(self.listener)
                if self.scoreboard.stopping:  # the server stops (not a reload or retirement)
                    self._worker.serve_backlog(self.listener)
        finally:
            self.on_child_exit()
        return 0

    def _worker_signal_handlers(self) -> dict[int, Callable[[], None]]:
        def usr1() -> None:
            logs.reopen()
            self.on_child_sig_usr1()
        return {signal.SIGUSR1: usr1, signal.SIGUSR2: self.on_child_sig_usr2}


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass

