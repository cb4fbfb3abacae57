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
from .listener import ListenAddress, ListenError, listen_queue_length, open_listener, remove_unix_socket
from .loader import HandlerLoadError
from .scoreboard import Scoreboard
from .status import StatusMiddleware, status_dict
from .worker import Worker, drain

log = logging.getLogger("fcgi_backend.server")

EXIT_OK = 0
EXIT_CANNOT_LISTEN = 100  # Net::Waiter: cannot create server listen socket

_TICK = 0.05  # seconds between looks at the pool
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
        self._retiring: set[int] = set()
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
        try:
            log.info("listening on %s", self.address)
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
                      max_requests=self.config.max_requests, scoreboard=self.scoreboard, slot=slot)

    def _serve_in_this_process(self) -> None:
        slot = self.scoreboard.claim(self.generation)
        self.scoreboard.assign(slot, os.getpid())
        self._worker = self._make_worker(slot)
        log.info("serving in one process (nofork)")
        handlers = self._worker_signal_handlers()
        handlers[signal.SIGHUP] = lambda: log.warning("SIGHUP: no reload in nofork mode; restart the server")
        with self._worker.handling_signals(handlers):
            self._worker.serve(self.listener)

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
                self._manage_pool()
                ready, _, _ = select.select([wake_r], [], [], _TICK)
                if ready:
                    drain(wake_r)
            self._stop_workers()
        finally:
            if not self._child:
                signal.set_wakeup_fd(old_wakeup)
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
                wake_r.close()
                wake_w.close()

    def _queue_signal(self, signum: int, _frame) -> None:
        self._signal_queue.append(signum)

    def _handle_signals(self) -> None:
        while self._signal_queue:
            signum = self._signal_queue.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("%s: stopping; requests in flight get %gs", signal.Signals(signum).name,
                         self.config.graceful_timeout)
                self._running = False
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
        log.info("SIGHUP: reloading handler modules and templates")
        try:
            self.app, hooks = self.load_app()
            self.hooks = hooks or Hooks()
        except HandlerLoadError as exc:
            log.error("reload failed, the running workers go on serving: %s", exc)
            return
        old = [pid for pid, (_, gen) in self.workers.items() if gen == self.generation]
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
            retiring = pid in self._retiring
            self._retiring.discard(pid)
            if os.WIFSIGNALED(status) and not retiring:
                log.warning("worker %d was killed by %s; replacing it", pid, signal.Signals(os.WTERMSIG(status)).name)
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                log.warning("worker %d exited with code %d", pid, os.WEXITSTATUS(status))
            else:
                log.debug("worker %d exited", pid)
            self.on_sig_child(pid)

    def _manage_pool(self) -> None:
        """Keep prefork workers; grow while all are busy, up to maxfork; let idle extras go."""
        current = {w.pid: w for w in self.scoreboard.read().workers
                   if w.generation == self.generation and w.pid not in self._retiring and w.pid in self.workers}
        count = sum(1 for pid, (_, gen) in self.workers.items() if gen == self.generation and pid not in self._retiring)
        for _ in range(self.config.prefork - count):
            self._spawn()
        count = max(count, self.config.prefork)
        all_busy = bool(current) and len(current) == count and all(w.busy for w in current.values())
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
        for w in sorted(current.values(), key=lambda w: -w.idle_for):
            if extra <= 0 or w.idle_for < self.config.px_idle:
                break
            log.info("worker %d idle for %.0fs above prefork; letting it go", w.pid, w.idle_for)
            self._retire(w.pid)
            extra -= 1

    def _retire(self, pid: int) -> None:
        self._retiring.add(pid)
        _kill(pid, signal.SIGQUIT)

    def _spawn(self) -> None:
        slot = self.scoreboard.claim(self.generation)
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

    def _stop_workers(self) -> None:
        deadline = None if self._graceful_stop else time.monotonic() + self.config.graceful_timeout
        self.propagate_signal(signal.SIGQUIT if self._graceful_stop else signal.SIGTERM)
        while self.workers:
            self._reap()
            if not self.workers:
                break
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("killing %d workers still busy after %gs", len(self.workers), self.config.graceful_timeout)
                self.propagate_signal(signal.SIGKILL)
                deadline = None
            time.sleep(_TICK)

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

