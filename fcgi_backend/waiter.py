"""Net::Waiter in Python: a compact socket server that a program subclasses.

A subclass implements ``on_process(client)``; :class:`Waiter` does the rest: it listens (TCP or a
unix socket, optionally TLS), and serves in one of Net::Waiter's three modes:

* **prefork** (``prefork`` > 0): a supervisor forks ``prefork`` workers that accept connections
  themselves; when every worker is busy it forks more, up to ``maxfork``; workers above prefork
  that idle for ``px_idle`` seconds exit. A negative prefork sets prefork and maxfork both.
* **forking** (``prefork=0``): the supervisor accepts, and forks one process per connection, at
  most ``maxfork`` at once; past that the connection is accepted, ``on_maxforked(client)`` may tell
  the client, and it is closed (Net::Waiter's way), or, in a subclass that sets
  ``turn_away_past_maxfork`` False, connections wait in the listen backlog until a process ends,
  as in prefork mode.
* **nofork**: one process serves one connection at a time (to step through code in a debugger).

Read top to bottom as gunicorn's arbiter: signals are queued and handled in the main loop, dead
workers are reaped, the pool is grown or shrunk, stragglers are killed. TERM and INT stop (work in
flight gets ``graceful_timeout``), QUIT stops once work in flight is done, HUP reloads (a new
generation of workers; :meth:`reload` lets a subclass load its code afresh), USR1 reopens the log.

Nothing here knows FastCGI or HTTP: ``fastcgi_server.py`` and ``http_server.py`` are subclasses.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import select
import signal
import socket
import ssl
import time
from typing import Callable

from . import logs, notify, slowlog, worker_memory
from .identity import Identity, as_root, end_with_parent, remove_pidfile, write_pidfile
from .config import ConfigError, ServerConfig, table_fields
from .cpus import parse_cpu_list, pin_this_process
from .handoff import Handoff
from .hooks import Hooks
from .listener import (ListenAddress, ListenError, accept_failure, file_id, listen_queue_length, open_listener,
                       remove_unix_socket)
from .scoreboard import IDLE, LEAVING, Scoreboard, ScoreboardFull
from .sockio import GiveWay, close_reading_first, readable, wait_or_give_way
from .tls import TLSConfig, TLSError
from .worker import WorkerLoop, drain

log = logging.getLogger("fcgi_backend.waiter")

EXIT_OK = 0
EXIT_CANNOT_LISTEN = 100  # Net::Waiter: cannot create server listen socket

_TICK = 0.05  # seconds between looks at the pool
_REQUEST_KILL_GRACE = 5.0  # past request_timeout, what a worker gets to stop the request itself
_FORK_RETRY = 0.5  # forking mode: seconds before a connection whose fork failed is tried again (an exit: sooner)
# A TLS handshake takes a few round trips, a second on a slow mobile link: one not finished this
# long after the connection came gives way when a client waits that no idle worker can take.
_HANDSHAKE_PATIENCE = 2.0
_KILLED = float("inf")  # in _retiring: killed after graceful_timeout (and logged then); never killed twice
_SUPERVISOR_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                       signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)


class Waiter:
    """A socket server: subclass it and implement :meth:`on_process`.

    ``Waiter(port=9123, prefork=8, maxfork=32)`` as Net::Waiter's ``new(PORT => 9123, ...)``; or
    ``Waiter(ListenAddress(path=...), config=ServerConfig(...))``. Options: every field of
    :class:`~fcgi_backend.config.ServerConfig` (``prefork``, ``maxfork``, ``nofork``, ``timeout``,
    ``px_idle``, ``prop_sigusr``, ``debug`` ...), and Net::Waiter's ``ssl`` with ``ssl_cert_file``,
    ``ssl_key_file``, ``ssl_ca_file``, ``ssl_verify_mode`` (or ``tls=TLSConfig(...)``).
    """

    client_socket_type = socket.socket  #: what on_process gets (a subclass may take the C type, _socket.socket)
    #: Forking mode at maxfork: accept, tell on_maxforked(client) and close (Net::Waiter's way), or
    #: (False) leave connections in the listen backlog until a process ends, as prefork mode does.
    turn_away_past_maxfork = True
    #: The protocol's client speaks first (HTTP, TLS, FastCGI): a TCP listener then has the kernel
    #: hold a new connection until its first bytes come (listener.DEFER_ACCEPT_SECONDS). Not for a
    #: protocol whose server greets first, which Waiter's own default allows.
    client_speaks_first = False
    #: A kept connection given up for a waiting one stays open, watched by its worker, which serves
    #: its next request once free (FastCGI: the web server cannot be asked to close first, and a
    #: request it sends as the connection closes is lost). Else it is closed (HTTP says
    #: ``Connection: close`` before).
    parks_kept_connections = False

    def __init__(self, listen: ListenAddress | None = None, *, port: int | None = None,
                 config: ServerConfig | None = None, tls: TLSConfig | None = None, hooks: Hooks | None = None,
                 socket_mode: int = 0o660, socket_group: str | None = None, owned_paths=(), **options) -> None:
        ssl_options = {k: options.pop(k) for k in list(options) if k == "ssl" or k.startswith("ssl_")}
        if "timeout" in options:  # Net::Waiter's TIMEOUT: the accept wait between idle hooks
            options["accept_wait"] = options.pop("timeout")
        unknown = set(options) - set(table_fields("server"))
        if unknown:
            raise TypeError(f"unknown Waiter options: {', '.join(sorted(unknown))}")
        if config is not None and options:
            raise TypeError("give either config= or options, not both")
        if listen is None:
            if port is None:
                raise TypeError("Waiter needs a port= or a listen address")
            listen = ListenAddress(host="0.0.0.0", port=port)
        self.address = listen
        self.config = (config or ServerConfig(**options)).resolved()
        self.tls = tls or _tls_from_ssl_options(ssl_options)
        self._ssl_context = self.make_ssl_context() if self.tls else None
        self.hooks = hooks or Hooks()
        # The per-connection events are announced only if a subclass or a hook listens: a small
        # request's whole Python is counted in microseconds.
        self._announce_accept = type(self).on_accept_ok is not Waiter.on_accept_ok
        self._announce_close = type(self).on_close is not Waiter.on_close
        self.socket_mode = socket_mode
        self.socket_group = socket_group
        self.owned_paths = list(owned_paths)  # made the user's before the server becomes it
        self.identity: Identity | None = None
        # Room for two generations of workers: the old finish their requests while the new start.
        self.scoreboard = Scoreboard(2 * self.config.maxfork)
        self.listener: socket.socket | None = None
        self.generation = 1
        self.workers: dict[int, tuple[int, int]] = {}  # pid -> (scoreboard slot, generation)
        self._retiring: dict[int, float] = {}  # pid -> when it was told to finish and exit
        self._memory_looked = 0.0  # when max_worker_rss last had the workers' memory read (monotonic)
        self._handoff: Handoff | None = None  # kept connections of exiting workers (parks_kept_connections)
        self._child = False
        self._loop: WorkerLoop | None = None  # this process's accept loop (a worker, or nofork)
        self._client: socket.socket | None = None
        self._client_lingers = False
        self._client_parked = False  # the connection in hand was parked: open, its worker's to serve
        self.handshake_seconds = 0.0  # how long the TLS handshake of the connection in hand took (0: none)
        self._running = True
        self._graceful_stop = False
        self._signal_queue: list[int] = []
        self._maxforked = False
        # Under steady load the pool can fill and free four times a second: said once a minute at most.
        self._all_busy_warning = logs.Throttled(log)
        self._turned_away_warning = logs.Throttled(log)
        self._no_room_error = logs.Throttled(log, logging.ERROR)
        self._accept_error = logs.Throttled(log, logging.ERROR)  # (forking mode: the supervisor accepts)
        self._fork_error = logs.Throttled(log, logging.ERROR)
        self._held_client: socket.socket | None = None  # forking mode: accepted, its fork failed; tried again
        self._spawn_rate = 1
        self._socket_file = None
        self._log_hook_handler = None
        self._slow = slowlog.Reporter()

    # ---- Net::Waiter's API ---------------------------------------------------------------------

    def run(self) -> int:
        """Bind, serve until stopped, clean up; 0, or 100 when the listen socket cannot be created."""
        if not logs.configured():  # used as a library: log to stderr, as Net::Waiter does
            logs.configure(debug=self.config.debug)
        self._supervisor_pid = os.getpid()
        # Signals that come while the server starts (a stop as soon as the socket answers) are
        # kept for the main loop, not lost to the default action.
        early_handlers = {sig: signal.signal(sig, self._queue_signal) for sig in _SUPERVISOR_SIGNALS
                          if sig != signal.SIGCHLD}
        self._log_hook_handler = logs.attach_hook(self._log_line)
        try:
            self.listener = open_listener(self.address, self.socket_mode, self.socket_group,
                                          defer_accept=self.client_speaks_first)
        except ListenError as exc:
            log.error("%s", exc)
            logs.detach_hook(self._log_hook_handler)
            self._restore_handlers(early_handlers)
            return EXIT_CANNOT_LISTEN
        self._socket_file = file_id(self.address.path) if self.address.path else None
        pidfile_written = False
        try:
            log.info("listening on %s%s", self.address, " (TLS)" if self.tls else "")
            if self.config.pidfile:
                try:
                    write_pidfile(self.config.pidfile)
                except OSError as exc:  # a read-only folder, a full disk: said in one line, exit 2
                    raise ConfigError(f"pidfile {self.config.pidfile} cannot be written: {exc.strerror}") from None
                pidfile_written = True
            try:
                self.open_logs()
            except OSError as exc:
                raise ConfigError(f"log file {exc.filename} cannot be opened: {exc.strerror}") from None
            self._become_user()
            self.before_serving()
            self.on_listen_ok()
            notify.ready(f"serving on {self.address}")
            if self.config.nofork:
                self._serve_in_this_process()
            else:
                self._supervise()
            return EXIT_OK
        finally:
            if not self._child:
                notify.stopping()
                self.on_server_close()
                with as_root(self.identity):
                    if self.address.path:
                        remove_unix_socket(self.listener, self.address.path)
                    else:
                        self.listener.close()
                    if pidfile_written:
                        remove_pidfile(self.config.pidfile)
                logs.detach_hook(self._log_hook_handler)
                self._restore_handlers(early_handlers)

    @staticmethod
    def _restore_handlers(handlers: dict) -> None:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    def _become_user(self) -> None:
        """Once the socket is bound: the files the server writes become the user's, and the server
        the user (identity.py: for good when it serves from this one process)."""
        if not self.config.user:
            return
        self.identity = Identity.named(self.config.user, self.config.group)
        if self.identity is None:
            return
        paths = self.owned_paths + [self.config.log_file, self.config.access_log, self.config.slowlog_file]
        try:
            self.identity.own(p for p in paths if p)
        except OSError as exc:
            raise ConfigError(f"cannot give {exc.filename} to user {self.identity.name}: {exc.strerror}") from None
        if self.config.nofork:
            self.identity.become_for_good()
        else:
            self.identity.become_for_now()
        log.info("running as user %s (uid %d, gid %d)", self.identity.name, self.identity.uid, self.identity.gid)

    def break_main_loop(self) -> None:
        """Leave the main loop at its next turn (from a handler): the supervisor stops, or this worker."""
        if self._loop is not None and (self._child or self.config.nofork):
            self._loop.stop()
        else:
            self._running = False

    def ssl_in_use(self) -> bool:
        return self.tls is not None

    def is_child(self) -> bool:
        return self._child

    def get_server_socket(self) -> socket.socket | None:
        """The listen socket (in the supervisor; None in a worker)."""
        return None if self._child else self.listener

    def get_client_socket(self) -> socket.socket | None:
        """The connection being served (in a worker; None elsewhere)."""
        return self._client

    def get_busy_kids_count(self) -> tuple[int, int]:
        """(busy workers, all workers), from any process."""
        return self.scoreboard.busy_counts()

    def get_kid_pids(self) -> list[int]:
        """Worker pids (in the supervisor only)."""
        return [] if self._child else sorted(self.workers)

    def propagate_signal(self, signum: int) -> None:
        """Send ``signum`` to every worker."""
        for pid in list(self.workers):
            _kill(pid, signum)

    # ---- what a protocol subclass uses inside on_process ------------------------------------------

    def wait_for_next_request(self, client: socket.socket, yield_after: float = 0.0) -> bool:
        """Between two requests on a connection the client keeps open: wait, as an idle worker,
        until the next request's first bytes arrive (True), or until the connection should be
        closed: idle_timeout passed, the worker stops, or a new connection waits that no idle
        worker can take and this one has been idle ``yield_after`` seconds (False). A client that
        may be sending its next request as the connection closes and will not retry wants some.
        False also when the worker parked it (:meth:`parked`)."""
        if self._loop is None:
            return False
        outcome = self._loop.wait_for_next_request(client, yield_after)
        if outcome == "park":
            self._client_parked = self._client_lingers = True  # serve_client leaves it open
        return outcome == "request"

    def stopping(self) -> bool:
        """This worker leaves after the connection in hand (a stop, a reload, max_requests): an
        answer given now should tell the client to close (HTTP: ``Connection: close``)."""
        return self._loop is not None and not self._loop.running

    def connections_waiting(self) -> bool:
        """A new connection waits and no worker is idle to take it: a connection kept open between
        requests should be given up after the answer in hand (HTTP: ``Connection: close``)."""
        return self._loop.connections_waiting() if self._loop else False

    def parked(self, client: socket.socket) -> bool:
        """The connection in hand was parked by :meth:`wait_for_next_request` (its False): leave
        it open, its worker serves its next request."""
        return self._client_parked and client is self._client

    def linger(self, sock: socket.socket) -> None:
        """Take a socket shut down on our side; it is read until the peer hangs up, then closed,
        while the worker serves others."""
        if sock is self._client:
            self._client_lingers = True  # serve_client leaves it open
        if self._loop is not None:
            self._loop.linger(sock)
        else:
            close_reading_first(sock)

    def request_started(self, what: str) -> None:
        """A request ("METHOD URI") begins: the status page shows it, request_timeout applies."""
        if self._loop is not None:
            self._loop.request_started(what)

    def request_ended(self) -> None:
        """The request's answer is complete (counted before its last bytes leave)."""
        if self._loop is not None:
            self._loop.request_ended()

    def retire(self) -> None:
        """This worker stops after the connection in hand (its state is no longer to be trusted)."""
        if self._loop is not None:
            self._loop.stop()

    # ---- event handlers: override, or register callables with hooks ------------------------------

    def on_process(self, client: socket.socket) -> None:
        """Serve one accepted connection (the work itself): subclasses implement this."""
        raise NotImplementedError("a Waiter subclass implements on_process(client)")

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

    def on_ssl_error(self, error: str) -> None:
        self.hooks.fire("ssl_error", self, error)

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

    def on_forking_idle(self) -> None:
        self.hooks.fire("forking_idle", self)

    def on_maxforked(self, client: socket.socket | None = None) -> None:
        """Every worker is busy at maxfork. In forking mode ``client`` is the connection that finds
        no room: tell it so if you like; it is closed right after (None where connections wait in
        the backlog instead: prefork mode, or ``turn_away_past_maxfork`` False)."""
        self.hooks.fire("maxforked", self, client)

    def log(self, message: str) -> None:
        """Every log line (info and above) passes here, as Net::Waiter's log()."""
        self.hooks.fire("log", self, message, logging.INFO)

    def log_debug(self, message: str) -> None:
        """Every debug line passes here (logged only with debug on)."""
        self.hooks.fire("log", self, message, logging.DEBUG)

    # ---- for subclasses: not Net::Waiter's, but where an application server hooks in -------------

    def open_logs(self) -> None:
        """Open the log files the server writes besides its own (before it becomes its user)."""
        if self.config.slowlog_timeout:
            logs.configure_slow(self.config.slowlog_file)

    def before_serving(self) -> None:
        """In the supervisor, once the socket is bound, before any worker starts."""

    def reload(self) -> bool:
        """In the supervisor on SIGHUP, before the new generation is forked: load code afresh.
        False keeps the running workers (the reason is logged)."""
        return True

    def worker_exited(self, pid: int) -> None:
        """In the supervisor, after a worker was reaped (whatever way it ended)."""

    def make_ssl_context(self) -> ssl.SSLContext:
        """The TLS context, built at start and again on each reload (renewed certificates)."""
        return self.tls.context()

    # ---- serving in this process (nofork) -------------------------------------------------------

    def _make_loop(self, slot: int) -> WorkerLoop:
        max_requests = self.config.max_requests
        if max_requests:  # each worker its own count, drawn after the fork (random is reseeded in a child)
            max_requests += random.randint(0, self.config.max_requests_jitter or 0)
        loop = WorkerLoop(self, scoreboard=self.scoreboard, slot=slot, timeout=self.config.accept_wait,
                          max_requests=max_requests, request_timeout=self.config.request_timeout,
                          idle_timeout=self.config.idle_timeout, listener=self.listener, handoff=self._handoff)
        # From here on a protocol's request_started/request_ended are the loop's own: called per
        # request, they skip the hop through the methods below.
        self.request_started, self.request_ended = loop.request_started, loop.request_ended
        return loop

    def _pin_to_worker_cpus(self) -> None:
        """A worker (or the nofork process) runs on the CPUs ``worker_cpus`` names, if it names any."""
        if self.config.worker_cpus:
            try:
                pin_this_process(parse_cpu_list(self.config.worker_cpus))
            except OSError as exc:  # the host's CPUs changed since the start: serve anywhere rather than not at all
                log.warning("worker_cpus %s: %s; this worker runs on any CPU", self.config.worker_cpus, exc.strerror)

    def _serve_in_this_process(self) -> None:
        if any(sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) for sig in self._take_signals()):
            return  # told to stop while starting
        slot = self.scoreboard.claim(self.generation)
        self.scoreboard.assign(slot, os.getpid())
        self._loop = self._make_loop(slot)
        self._pin_to_worker_cpus()
        log.info("serving in one process (nofork)%s", f" on CPU {self.config.worker_cpus}" if self.config.worker_cpus else "")
        handlers = self._worker_signal_handlers()
        handlers[signal.SIGHUP] = self._reload_tls_only
        with self._loop.handling_signals(handlers):
            self._loop.serve()
            self._stop_accepting()
            self._loop.serve_backlog()

    def _reload_tls_only(self) -> None:
        if self.tls:
            self._load_ssl_context()
        log.warning("SIGHUP: no reload of code in nofork mode (restart the server)%s",
                    "; TLS certificates reloaded" if self.tls else "")

    def _load_ssl_context(self) -> bool:
        try:
            self._ssl_context = self.make_ssl_context()
        except TLSError as exc:
            log.error("TLS certificates not reloaded, the running ones stay: %s", exc)
            return False
        return True

    # ---- one connection, in whatever process serves it ----------------------------------------------

    def serve_client(self, client: socket.socket, resumed: bool = False) -> None:
        """Accepted: the TLS handshake (if any, with a deadline), then on_process, then close
        (unless parked: ``resumed`` when its next request came, without on_accept_ok again)."""
        self._client, self._client_lingers, self._client_parked, self.handshake_seconds = client, False, False, 0.0
        try:
            if not resumed and (self._announce_accept or "accept_ok" in self.hooks):
                self.on_accept_ok(client)
            if self._ssl_context is not None and not resumed:
                began = time.monotonic()
                client = self._handshake(client)
                if client is None:
                    return
                self._client, self.handshake_seconds = client, time.monotonic() - began
            self.on_process(client)
        finally:
            if (self._announce_close or "close" in self.hooks) and not self._client_parked:
                self.on_close(self._client)
            if not self._client_lingers and self._client.fileno() != -1:
                self._client.close()
            self._client = None

    def _handshake(self, client: socket.socket) -> ssl.SSLSocket | None:
        """The server's side of the TLS handshake, within handshake_timeout; a client still in it
        _HANDSHAKE_PATIENCE after it came gives way once a connection waits that no idle worker
        can take (a handshake begun and left, many times over, held every worker that long)."""
        try:
            tls = self._ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
            tls.setblocking(False)
            began = time.monotonic()
            deadline, give_way_at = began + self.tls.handshake_timeout, began + _HANDSHAKE_PATIENCE
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    events = select.POLLIN
                except ssl.SSLWantWriteError:
                    events = select.POLLOUT
                if not wait_or_give_way(tls, events, deadline - time.monotonic(), give_way_at,
                                        self.connections_waiting):
                    raise TimeoutError("timed out")
        except GiveWay:
            what = f"not finished after {_HANDSHAKE_PATIENCE:g}s, and other clients wait"
        except (ssl.SSLError, OSError) as exc:  # (a TimeoutError is an OSError)
            what = str(exc)
        else:
            tls.settimeout(None)
            return tls
        log.info("TLS handshake failed: %s", what)
        self.on_ssl_error(what)
        client.close()
        return None

    # ---- the supervisor ---------------------------------------------------------------------------

    def _supervise(self) -> None:
        wake_r, wake_w = socket.socketpair()
        for s in (wake_r, wake_w):
            s.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, self._queue_signal) for sig in _SUPERVISOR_SIGNALS}
        self._wake = (wake_r, wake_w)
        forking = self.config.prefork == 0
        log.info("supervisor %d: %s%s", os.getpid(), f"forking, maxfork {self.config.maxfork}" if forking
                 else f"prefork {self.config.prefork}, maxfork {self.config.maxfork}",
                 f", workers on CPU {self.config.worker_cpus}" if self.config.worker_cpus else "")
        if forking:
            self.listener.setblocking(False)
        elif self.parks_kept_connections:
            self._handoff = Handoff()  # (before any worker is forked: they all share it)
        idle_since = time.monotonic()
        try:
            while self._running:
                self._handle_signals()
                self._reap()
                if not self._running:
                    break
                self._watch_requests()
                self._watch_memory()
                if forking:
                    if self._accept_and_fork(wake_r) or self._held_client is not None:  # (held: not idle)
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since >= self.config.accept_wait:
                        self.on_forking_idle()
                        idle_since = time.monotonic()
                else:
                    self._manage_pool()
                    self._sleep(wake_r)
            self._stop_workers(wake_r)
        finally:
            if self._handoff is not None and not self._child:
                self._handoff.close()  # (with the workers' ends gone, what none took is closed)
            if not self._child:
                signal.set_wakeup_fd(old_wakeup)
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
                wake_r.close()
                wake_w.close()

    @staticmethod
    def _sleep(wake_r: socket.socket, timeout: float = _TICK) -> None:
        """Wait one tick, or less if a signal comes."""
        ready = readable([wake_r], timeout)
        if ready:
            drain(wake_r)

    def _queue_signal(self, signum: int, _frame) -> None:
        self._signal_queue.append(signum)

    def _take_signals(self) -> list[int]:
        taken, self._signal_queue = self._signal_queue, []
        return taken

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
        needed = self.config.prefork
        if room < needed:
            log.error("SIGHUP: reload refused: %d workers of earlier generations are still finishing requests "
                      "and only %d of %d worker slots are free; it can be asked again once they exit (each is "
                      "stopped graceful_timeout=%gs after it was retired)", len(self._retiring), room,
                      self.scoreboard.capacity, self.config.graceful_timeout)
            return
        log.info("SIGHUP: reloading")
        notify.reloading()
        if not self.reload() or (self.tls and not self._load_ssl_context()):
            notify.ready("reload failed: the running workers go on serving")
            return
        self.generation += 1
        started = sum(self._spawn() for _ in range(needed))  # (each tried, whatever the one before did)
        if not started:
            self.generation -= 1  # (workers started from now on run the code just loaded)
            log.error("SIGHUP: reload failed: no worker of the new generation could start (logged above); "
                      "the running workers go on serving")
            notify.ready("reload failed: the running workers go on serving")
            return
        for pid in old:  # they finish the request in hand, then exit
            self._retire(pid)
        log.info("reloaded: generation %d started, %d old workers finishing", self.generation, len(old))
        notify.ready(f"reloaded: generation {self.generation}")

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
            last = self.scoreboard.release(slot)
            left = last.state == LEAVING  # perhaps before _watch_requests saw it
            retired_at = self._retiring.pop(pid, None)
            # the request it took down with it, if any, for the log
            during = f" while serving {last.request} ({last.request_for:.1f}s in)" if last.request_for else ""
            unexpected = retired_at is None and not left  # (one on its way out is replaced already)
            # not while stopping, nor in forking mode
            replaced = "; replacing it" if unexpected and self._running and self.config.prefork > 0 else ""
            if os.WIFSIGNALED(status):
                signame = signal.Signals(os.WTERMSIG(status)).name
                if unexpected:
                    log.warning("worker %d was killed by %s%s%s", pid, signame, during, replaced)
                elif retired_at != _KILLED:  # its replacement is counted already: its way out died
                    log.warning("worker %d was killed by %s after it was retired", pid, signame)
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                log.warning("worker %d exited with code %d%s%s", pid, os.WEXITSTATUS(status), during, replaced)
            else:
                self.log_debug(f"worker {pid} exited")
            self._slow.forget(pid)
            self.worker_exited(pid)
            self.on_sig_child(pid)

    def _watch_requests(self) -> None:
        """Kill what must go: a request far past request_timeout (the worker did not stop it
        itself: stuck in C code), a retired worker still busy, or still in on_child_exit,
        graceful_timeout after retirement. A worker that left its loop by itself (max_requests,
        retire()) counts as retired from then on: the pool replaces it at once."""
        now = time.monotonic()
        limit = self.config.request_timeout
        for w in self.scoreboard.read().workers:
            if w.pid not in self.workers:
                continue
            if self.config.slowlog_timeout and w.busy and w.request_for > self.config.slowlog_timeout:
                self._slow.report(w.pid, w.request_started, w.request, w.request_for)
            if limit and w.busy and w.request_for > limit + _REQUEST_KILL_GRACE:
                log.error("worker %d: %s has run %.1fs, past request_timeout %gs and not stopped; killing the "
                          "worker", w.pid, w.request or "a request", w.request_for, limit)
                _kill(w.pid, signal.SIGKILL)
            if w.state == LEAVING:
                self._retiring.setdefault(w.pid, now)
            retired = self._retiring.get(w.pid)
            if retired is not None and now - retired > self.config.graceful_timeout and (w.busy or w.state == LEAVING):
                doing = f"busy with {w.request or 'a request'}" if w.busy else "in on_child_exit"
                log.warning("worker %d, retired %.0fs ago, is still %s; killing it (graceful_timeout %gs)", w.pid,
                            now - retired, doing, self.config.graceful_timeout)
                _kill(w.pid, signal.SIGKILL)
                self._retiring[w.pid] = _KILLED  # still retiring until reaped

    def _watch_memory(self) -> None:
        """max_worker_rss: a worker grown past it is retired (it finishes its request, and the
        pool replaces it at once). Looked at once a second."""
        now = time.monotonic()
        if not self.config.max_worker_rss or now - self._memory_looked < worker_memory.LOOK_EVERY:
            return
        self._memory_looked = now
        limit = self.config.max_worker_rss
        for pid in [pid for pid in self.workers if pid not in self._retiring]:
            size = worker_memory.resident_bytes(pid)
            if size is not None and size > limit:
                log.info("worker %d holds %s of memory, past max_worker_rss %s: it is replaced once its request is "
                         "done", pid, worker_memory.mib(size), worker_memory.mib(limit))
                self._retire(pid)

    def _manage_pool(self) -> None:
        """Keep prefork workers; grow while none is idle, up to maxfork; let idle extras go."""
        current = {w.pid: w for w in self.scoreboard.read().workers
                   if w.generation == self.generation and w.pid not in self._retiring and w.pid in self.workers}
        count = sum(1 for pid, (_, gen) in self.workers.items() if gen == self.generation and pid not in self._retiring)
        for _ in range(self.config.prefork - count):
            if not self._spawn():
                return  # (no room, or fork fails: the next turn tries again)
        count = max(count, self.config.prefork)
        # A worker idle on a kept connection is not free to accept: only plain idle ones count.
        all_busy = bool(current) and len(current) == count and all(w.state != IDLE for w in current.values())
        if all_busy:
            if count < self.config.maxfork:
                for _ in range(min(self._spawn_rate, self.config.maxfork - count)):
                    if not self._spawn():
                        break
                self._spawn_rate = min(self._spawn_rate * 2, 32)  # as php-fpm's dynamic spawning
            else:
                self._all_busy(count)
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

    def _all_busy(self, count: int) -> None:
        """Every worker is busy at maxfork: new connections wait in the backlog (counted, logged and
        told to on_maxforked once each time it comes to that)."""
        if not self._maxforked:
            self._maxforked = True
            self.scoreboard.count_maxfork_reached()
            self._all_busy_warning.log("all %d workers are busy (maxfork); new connections wait in the "
                                        "listen backlog", count)
            self.on_maxforked()

    def _accept_and_fork(self, wake_r: socket.socket) -> bool:
        """Forking mode: wait a tick for a connection and give it a process of its own (or, at
        maxfork, leave it in the backlog, or give it to on_maxforked and close it: as
        turn_away_past_maxfork says). True if one came."""
        if self._held_client is not None:
            return self._fork_for(self._held_client, wake_r)
        if self._backlog_waits_for_room():
            self._all_busy(len(self.workers))
            self._sleep(wake_r)  # (a process's end wakes it)
            return False
        ready = readable([wake_r, self.listener], _TICK)
        if wake_r in ready:
            drain(wake_r)
        if self.listener not in ready:
            return False
        self._maxforked = False
        try:
            client, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.on_accept_error(exc)
            message, pause = accept_failure(exc)
            self._accept_error.log(message)
            if pause:
                self._sleep(wake_r, pause)
            return False
        if len(self.workers) >= self.config.maxfork:
            self.scoreboard.count_maxfork_reached()
            self._turned_away_warning.log("all %d processes are busy (maxfork): a connection is closed unserved",
                                           len(self.workers))
            try:
                self.on_maxforked(client)
            finally:
                client.close()
            return True
        self._fork_for(client, wake_r)
        return True

    def _fork_for(self, client: socket.socket, wake_r: socket.socket) -> bool:
        """Forking mode: a process for ``client``. If the fork fails (logged), the connection is
        held and tried again after a pause, or as soon as a process ends, new ones left in the
        backlog meanwhile (as at maxfork): closing it lost the request. True if it went."""
        if not self._spawn(client):
            self._held_client = client
            self._sleep(wake_r, _FORK_RETRY)
            return False
        client.close()  # the child has its own copy
        self._held_client = None
        return True

    def _backlog_waits_for_room(self) -> bool:
        """Forking mode at maxfork, connections left in the backlog (turn_away_past_maxfork False):
        some may wait there for a process to end."""
        return not self.turn_away_past_maxfork and len(self.workers) >= self.config.maxfork

    def _retire(self, pid: int) -> None:
        self._retiring.setdefault(pid, time.monotonic())
        _kill(pid, signal.SIGQUIT)

    def _spawn(self, client: socket.socket | None = None) -> bool:
        """Fork one worker of the current generation (in forking mode, for ``client``); False
        (logged) if the pool has no room or the fork fails."""
        try:
            slot = self.scoreboard.claim(self.generation)
        except ScoreboardFull:
            self._no_room_error.log("cannot start a worker: all %d worker slots are taken (workers retired or "
                                    "of earlier generations still finishing)", self.scoreboard.capacity)
            return False
        # Signals wait until the child has its own handlers: the supervisor's would only queue them,
        # and a worker that missed its SIGTERM would hold the stop up for graceful_timeout.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:  # (EAGAIN: a limit on processes; ENOMEM)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.scoreboard.release(slot)
            self._fork_error.log("cannot start a worker: fork failed: %s (a limit on processes, as systemd's "
                                 "TasksMax or a container's pids limit, or memory)", exc)
            return False
        if pid == 0:
            code = 1
            try:
                code = self._child_main(slot, client)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.scoreboard.assign(slot, pid)
        self.workers[pid] = (slot, self.generation)
        self.log_debug(f"forked worker {pid} (generation {self.generation})")
        self.on_fork_ok(pid)
        return True

    def _stop_accepting(self) -> None:
        """New clients are refused from now on: the socket file goes (connecting to its path fails
        at once), while the workers still accept what is already in the backlog."""
        if self.address.path and file_id(self.address.path) == self._socket_file:  # not another server's since
            try:
                with as_root(self.identity):
                    os.unlink(self.address.path)
            except OSError as exc:
                log.warning("cannot remove socket %s: %s", self.address.path, exc.strerror)

    def _stop_workers(self, wake_r: socket.socket) -> None:
        """Stop every worker: each finishes its request in hand and what waits in the backlog. A
        stop by TERM or INT kills workers still busy after graceful_timeout; a stop by QUIT waits,
        until a TERM or INT comes; a second TERM or INT kills at once."""
        self.scoreboard.set_stopping()
        self._stop_accepting()
        # Forking: what waits in the backlog gets a process each, as room comes (until none waits).
        draining = self.config.prefork == 0
        while draining and self._accept_and_fork(wake_r):
            pass
        draining = draining and self._backlog_waits_for_room()
        deadline = None
        if self._graceful_stop:
            self.propagate_signal(signal.SIGQUIT)
        else:
            deadline = time.monotonic() + self.config.graceful_timeout
            self.propagate_signal(signal.SIGTERM)
        while True:
            self._reap()
            if draining or self._held_client is not None:  # (held: tried while processes remain to end)
                draining = self._accept_and_fork(wake_r) or self._backlog_waits_for_room()
            if not self.workers and not draining:
                if self._held_client is not None:
                    log.error("stopping: a connection accepted while fork failed is closed unserved")
                    self._held_client.close()
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
                doing = {w.pid: f"{w.request} ({w.request_for:.1f}s)" if w.busy else "in on_child_exit"
                         for w in self.scoreboard.read().workers
                         if w.pid in self.workers and (w.busy or w.state == LEAVING)}
                log.warning("killing %d workers still busy after %gs%s", len(self.workers),
                            self.config.graceful_timeout, "".join(f"; {pid}: {what}" for pid, what in doing.items()))
                self.propagate_signal(signal.SIGKILL)
                deadline = None
                draining = False
            self._watch_requests()
            if not draining:
                self._sleep(wake_r)

    # ---- a worker -----------------------------------------------------------------------------------

    def _child_main(self, slot: int, client: socket.socket | None) -> int:
        self._child = True
        wake_r, wake_w = self._wake
        wake_r.close()
        wake_w.close()
        signal.set_wakeup_fd(-1)
        for sig in _SUPERVISOR_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self.identity is not None:
            self.identity.become_for_good()
        end_with_parent(self._supervisor_pid)
        self._pin_to_worker_cpus()
        slowlog.arm_worker(self.config.slowlog_timeout)
        self.scoreboard.assign(slot, os.getpid())
        self.workers = {}
        self._loop = self._make_loop(slot)
        self.on_child_start()
        # What the worker inherited and loaded lives as long as it does: the collector no longer
        # walks it in each full collection (nor writes to its pages, shared with the supervisor).
        gc.freeze()
        with self._loop.handling_signals(self._worker_signal_handlers()):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISOR_SIGNALS)  # blocked since the fork
            try:
                if client is not None:  # forking mode: this connection is the whole life of the process
                    self._loop.serve_one(client)
                else:
                    self._loop.serve()
                    if self.scoreboard.stopping:  # the server stops (not a reload or retirement)
                        self._loop.serve_backlog()
            finally:
                # Still under the worker's handlers: a signal now (the server stops, or logs are
                # rotated, while a worker that retired itself cleans up) must not cut this short.
                # From here to the exit they stay blocked, as before the unblock above, not back
                # to their defaults (which end the process).
                self._loop.leave()
                self.on_child_exit()
                signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        return 0

    def _worker_signal_handlers(self) -> dict[int, Callable[[], None]]:
        def usr1() -> None:
            logs.reopen()
            slowlog.arm_worker(self.config.slowlog_timeout)  # the reopened file
            self.on_child_sig_usr1()
        return {signal.SIGUSR1: usr1, signal.SIGUSR2: self.on_child_sig_usr2}

    def _log_line(self, message: str, level: int) -> None:
        if level < logging.INFO:
            self.log_debug(message)
        else:
            self.log(message)

    # ---- status ---------------------------------------------------------------------------------------

    def listen_queue(self) -> int | None:
        """Connections waiting in the listen backlog, where the system tells."""
        return listen_queue_length(self.listener) if self.listener is not None else None


def _tls_from_ssl_options(options: dict) -> TLSConfig | None:
    """Net::Waiter's ``SSL => 1`` with ``SSL_cert_file`` and friends, as keyword arguments."""
    if not options.pop("ssl", False):
        if options:
            raise TypeError(f"{', '.join(sorted(options))} given without ssl=True")
        return None
    names = {"ssl_cert_file": "cert_file", "ssl_key_file": "key_file", "ssl_ca_file": "ca_file",
             "ssl_verify_mode": "verify_mode"}
    unknown = set(options) - set(names)
    if unknown:
        raise TypeError(f"unknown SSL options: {', '.join(sorted(unknown))}")
    if "ssl_cert_file" not in options:
        raise TypeError("ssl=True needs ssl_cert_file")
    return TLSConfig(**{names[k]: (str(v) if k == "ssl_verify_mode" else v) for k, v in options.items()})


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
