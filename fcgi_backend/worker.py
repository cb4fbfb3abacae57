"""A worker process's loop (or the one process of nofork mode): accept, serve, and everything a
connection needs while it is served that is not its protocol.

A worker serves one connection at a time. Between two requests on a connection the client keeps
open (FastCGI's FCGI_KEEP_CONN, HTTP keep-alive) the worker is idle, not busy: it stops, reloads
and reaches max_requests there, gives the connection up after ``idle_timeout``, and gives it up
at once when a new connection waits that no idle worker takes (the client opens another when it
needs one). Kept connections never starve new ones.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import select
import signal
import socket
import time
from typing import TYPE_CHECKING, Callable

from . import logs
from .errors import RequestTimeout
from .handoff import Handoff
from .listener import accept_failure
from .parking import ParkedConnections
from .scoreboard import BUSY, IDLE, KEPT, LEAVING, Scoreboard
from .sockio import close_gracefully, close_reading_first, drain_until_eof, readable

if TYPE_CHECKING:
    from .waiter import Waiter

log = logging.getLogger("fcgi_backend.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_KEPT_TICK = 1.0  # longest single wait while idle on a kept connection
_YIELD_GRACE = 0.005  # what an idle worker gets to accept a new connection before a kept one yields
_LINGER_SECONDS = 1.0  # how long a closed connection is read for the peer to hang up
_LOOK_AFTER = 0.25  # before a wait, a socket shut down more recently is looked at on the next wake or this late
_DEFER_AT_MOST = 4  # ... while no more than this many are waiting to be looked at


class WorkerLoop:
    """Accepts on ``listener`` and hands each connection to ``waiter.serve_client``, until
    :meth:`stop` (SIGTERM, SIGINT and SIGQUIT call it; a stop during a request lets it finish).

    Every ``timeout`` seconds without a connection, ``waiter.on_prefork_child_idle()`` runs. After
    ``max_requests`` requests (0: no limit) the loop ends, so the worker is replaced. A request
    running past ``request_timeout`` (0: never) gets :class:`RequestTimeout` raised in it.
    ``scoreboard`` and ``slot`` publish the worker's state. In forking mode the process serves the
    one connection it was forked for (:meth:`serve_one`), and only watches ``listener``: a kept
    connection is given up for one that waits there (the supervisor accepts while it has room).
    """

    def __init__(self, waiter: "Waiter", *, scoreboard: Scoreboard, slot: int, timeout: float | None,
                 max_requests: int = 0, request_timeout: float = 0.0, idle_timeout: float = 15.0,
                 listener: socket.socket | None = None, handoff: Handoff | None = None) -> None:
        self.waiter = waiter
        self.scoreboard = scoreboard
        self._slot = scoreboard.own_slot(slot)
        self.timeout = timeout
        self.max_requests = max_requests
        self.request_timeout = request_timeout
        # request_timeout's alarm is set when a request starts and none is set, and left set when it
        # ends: where it rings, the request running then is stopped or the alarm set again for what
        # its own deadline leaves (two setitimer calls a request cost more than a small page).
        self._request_deadline: float | None = None  # the running request's, on the monotonic clock
        self._request_since: float | None = None  # when the running request began (monotonic), None between
        self._request_what = ""  # the running request, as the log names it where it is stopped
        self._alarm_set = False
        self.idle_timeout = idle_timeout
        self.listener = listener
        # What an accepted socket is made as (socket.accept looks the listener's family and type up
        # as enums on every connection).
        self._new_client = functools.partial(waiter.client_socket_type, int(listener.family), int(listener.type),
                                             listener.proto) if listener else None
        self._running = True
        self._wake_r: socket.socket | None = None
        self._wait: _ReadinessWait | None = None
        self._lingering: _Lingering | None = None
        # Kept connections given up for a waiting one but left open (waiter.parks_kept_connections),
        # served as their next request comes: made with the waits.
        self._parked: ParkedConnections | None = None
        self._may_park = False  # only while serve() runs: not for a forked connection nor a stop's backlog
        self._handoff = handoff  # where parked connections go to another worker (FastCGI prefork only)
        self._accept_error = logs.Throttled(log, logging.ERROR)  # (it can repeat as fast as accept is called)

    def stop(self, *_signal_args) -> None:
        """Leave the loop after the current connection (safe to call from a signal handler)."""
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    @contextlib.contextmanager
    def handling_signals(self, extra: dict[int, Callable[[], None]] | None = None):
        """Inside this block, stop signals call :meth:`stop` and wake the loop at once; ``extra``
        maps further signals to functions of no arguments."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        # A signal writes a byte to wake_w, so a wait returns at once.
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        handlers = {sig: self.stop for sig in STOP_SIGNALS}
        if self.request_timeout:
            handlers[signal.SIGALRM] = self._alarm_rang
        handlers.update({sig: (lambda func: lambda *_: func())(func) for sig, func in (extra or {}).items()})
        old_handlers = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        self._wake_r = wake_r
        try:
            yield self
        finally:
            if self._alarm_set:  # (left set after the last request: it must not ring into the default handler)
                signal.setitimer(signal.ITIMER_REAL, 0)
                self._alarm_set = False
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self._wake_r = None
            wake_r.close()
            wake_w.close()

    # ---- the loop ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Accept and serve until stopped."""
        self.listener.setblocking(False)
        self._open_waits()
        self._may_park = self.waiter.parks_kept_connections
        listen_fd = self.listener.fileno()
        handoff_fd = self._wait.handoff_fd
        idle_since = time.monotonic()
        try:
            while self._running:
                self._lingering.watch_due()
                wait = self._lingering.wait_at_most(self.timeout)
                if self._parked:
                    wait = min(wait if wait is not None else _KEPT_TICK, _KEPT_TICK)
                ready = self._wait.poll(wait)
                self._lingering.serve(ready)  # (its own are taken out of ready)
                if handoff_fd in ready or self.scoreboard.handoff_pending:
                    self._adopt_handed_off()
                if self._parked:
                    self._parked.close_idle()
                    if listen_fd not in ready:  # (else a new connection first: see _serve_back_to_back)
                        resumed = self._parked.take_ready(ready)
                        if resumed is not None:
                            self._serve_back_to_back(resumed, resumed=True)
                            continue
                if not ready:
                    if self.timeout is not None and time.monotonic() - idle_since >= self.timeout:
                        self.waiter.on_prefork_child_idle()
                        idle_since = time.monotonic()
                    continue
                idle_since = time.monotonic()
                if self._wake_r is not None and self._wake_r.fileno() in ready:
                    drain(self._wake_r)
                if listen_fd in ready and self._running:
                    self._serve_back_to_back(self._accept())
        finally:
            self._may_park = False
            self._parked.end()
            self._close_waits()

    def _serve_back_to_back(self, client: socket.socket | None, resumed: bool = False) -> None:
        """Serve ``client``, then each connection already waiting, taken without an epoll wait:
        under load the next one mostly waits already. A new connection first, then a parked one
        whose request has come: under load a parked one is nearly always ready, and a new one,
        taken only when none was, waited in the listen queue (100 to 190 ms behind nginx).
        Back to the wait once stopped, or when sockets linger in the epoll (the wait serves them)."""
        while client is not None:
            self._serve(client, resumed)
            self._check_max_requests()
            if not self._running or self._lingering.watching:
                return
            self._lingering.look_again()
            if self.scoreboard.handoff_pending:
                self._adopt_handed_off()
            client, resumed = self._accept(), False
            if client is None and self._parked:
                client = self._parked.take_next_ready()
                resumed = client is not None

    def serve_one(self, client: socket.socket) -> None:
        """Forking mode: serve the one connection this process was forked for (never accepting)."""
        self._open_waits()
        try:
            self._serve(client)
        finally:
            self._close_waits()

    def serve_backlog(self) -> None:
        """Serve, one by one, the connections already waiting in the listen backlog (the server is
        stopping: they were accepted by the kernel, and a graceful stop drops none of them)."""
        self._running = False  # each is served, then closed: no waiting for more requests on it
        while (client := self._accept()) is not None:
            self._serve(client)
        self._slot.set_state(IDLE)

    def leave(self) -> None:
        """Serving is over for good: the slot says so, and the supervisor starts a replacement
        now rather than when this process has exited (on_child_exit may take a while)."""
        self._slot.set_state(LEAVING)

    def _open_waits(self) -> None:
        self._wait = _ReadinessWait(self.listener, self._wake_r, self._handoff.taker if self._handoff else None)
        self._lingering = _Lingering(self._wait)
        self._parked = ParkedConnections(self._wait, slot=self._slot, scoreboard=self.scoreboard, handoff=self._handoff,
                                         idle_timeout=self.idle_timeout, new_client=self._new_client,
                                         close=lambda sock: close_gracefully(sock, None, self.linger),
                                         running_since=lambda: self._request_since)

    def _close_waits(self) -> None:
        self._lingering.close_all()
        self._wait.close()
        self._lingering = self._wait = self._parked = None  # from here on, closing waits in place (a stop's backlog)

    def _accept(self) -> socket.socket | None:
        try:
            client = self._new_client(self.listener._accept()[0])
        except (BlockingIOError, InterruptedError):
            return None  # another worker took it, or a signal came first
        except OSError as exc:
            if exc.errno == errno.EMFILE and self._lingering is not None and self._lingering.holding:
                self._lingering.close_all()  # (their peers have their answers: closing them now frees descriptors)
                return self._accept()
            self._accept_failed(exc)
            return None
        return client

    def _accept_failed(self, exc: OSError) -> None:
        """Logged (once a minute at most while it repeats). Out of descriptors after serving
        requests (an application leaking files, say), this worker leaves for a fresh one; out of
        them from the start, or the system out of room, it waits a moment before the next accept
        (the listen socket stays ready: accepting again at once would loop)."""
        self.waiter.on_accept_error(exc)
        message, pause = accept_failure(exc)
        if exc.errno == errno.EMFILE and self._slot.requests:
            log.error("%s: this worker leaves for a fresh one (an application leaking files?)", message)
            self._running = False
            return
        self._accept_error.log(message)
        if pause:
            readable([self._wake_r] if self._wake_r is not None else [], pause)  # (a stop signal ends it)

    def _serve(self, client: socket.socket, resumed: bool = False) -> None:
        """``client`` as accepted, or ``resumed``: parked, and its next request has come."""
        if resumed:
            self._slot.set_state(BUSY)
        else:
            self._slot.accept()
        try:
            self.waiter.serve_client(client, resumed)
        finally:
            self._slot.set_state(IDLE)

    def _check_max_requests(self) -> None:
        if self._running and self.max_requests and self._slot.requests >= self.max_requests:
            log.info("served %d requests (max_requests); making way for a fresh worker", self._slot.requests)
            self._running = False

    # ---- requests -------------------------------------------------------------------------------

    def request_started(self, what: str) -> None:
        self._request_since = self._slot.start_request(what)
        if self.request_timeout:
            self._request_deadline = time.monotonic() + self.request_timeout
            self._request_what = what
            if not self._alarm_set:
                self._alarm_set = True
                signal.setitimer(signal.ITIMER_REAL, self.request_timeout)

    def request_ended(self) -> None:
        self._request_deadline = self._request_since = None  # (the alarm stays set: see __init__)
        self._slot.count_request()
        self._check_max_requests()

    def _alarm_rang(self, *_signal_args) -> None:
        """SIGALRM: the request running past its deadline is stopped (RequestTimeout raised in
        it, logged here for both flavours); one that started since the alarm was set gets it again
        for the rest of its time."""
        deadline = self._request_deadline
        if deadline is None:  # between requests: the next one sets it
            self._alarm_set = False
            return
        now = time.monotonic()
        if deadline > now:
            signal.setitimer(signal.ITIMER_REAL, max(deadline - now, 0.001))  # (under a microsecond would unset it)
            return
        self._alarm_set = False  # (not set again: the answer that follows is not cut short)
        log.error("%s stopped after %.1fs (request_timeout %gs); this worker is replaced", self._request_what,
                  now - deadline + self.request_timeout, self.request_timeout)
        raise RequestTimeout()

    # ---- connections kept open between requests ---------------------------------------------

    def wait_for_next_request(self, client: socket.socket, yield_after: float = 0.0) -> str:
        """See Waiter.wait_for_next_request: "request", "park" (``client`` is left open, watched
        here), or why to close it ("idle", "yield", "stop")."""
        if not self._running or self._wait is None:  # (None: serving a stop's backlog)
            outcome = "stop"
        else:
            self._slot.set_state(KEPT)
            self._lingering.watch_all()
            try:
                with self._wait.watching(client.fileno()):
                    outcome = self._wait_on_kept(client, yield_after)
            finally:
                self._slot.set_state(BUSY)
        if outcome == "stop":
            return self._stop_or_hand_off(client)
        if outcome == "idle":
            log.debug("closing a kept connection idle for %gs", self.idle_timeout)
        elif outcome == "park":
            self._parked.park(client)
        elif outcome == "yield":
            self._slot.count_given_up()  # (the status page counts them: each can race a request sent that instant)
            log.debug("a new connection waits and no worker is idle: leaving a kept connection for it")
        return outcome

    def _wait_on_kept(self, client: socket.socket, yield_after: float) -> str:
        """"request", "park", "idle", "stop" or "yield"."""
        started = time.monotonic()
        deadline = started + self.idle_timeout
        fd = client.fileno()
        while self._running:
            left = deadline - time.monotonic()
            if left <= 0:
                return "idle"
            ready = self._wait.poll_kept(min(left, _KEPT_TICK))
            self._lingering.serve(ready)
            if fd in ready:
                if self._may_park and self.listener.fileno() in ready and not self.scoreboard.count_in_state(IDLE):
                    return "park"  # a new connection waits and no worker is idle: its turn first
                return "request"
            if self._wait.handoff_fd in ready or self.scoreboard.handoff_pending:
                self._adopt_handed_off()
            if self._parked:
                self._parked.close_idle()
                if any(other in self._parked for other in ready):
                    return "park"  # a parked connection has its next request: its turn
            if self._wake_r is not None and self._wake_r.fileno() in ready:
                drain(self._wake_r)
            if self.listener is not None and self.listener.fileno() in ready and self._running:
                # An idle worker was woken for it, or the client of this connection is about to
                # send its next request: look again after they had time.
                grace = _YIELD_GRACE if self.scoreboard.count_in_state(IDLE) > 0 else \
                    yield_after - (time.monotonic() - started)
                if grace > 0:
                    if fd in self._wait.poll_kept(grace, include_listener=False):
                        return "request"
                    continue
                return "park" if self._may_park else "yield"
        return "stop"

    # ---- kept connections parked (parking.py), and handed off to another worker (handoff.py) ----

    def _stop_or_hand_off(self, client: socket.socket) -> str:
        """This worker leaves: its kept connection is parked, to be passed on with the others at
        the loop's end if the server runs on (a reload, max_requests); else closed ("stop")."""
        if self._may_park and self._parked.may_pass_on():
            self._parked.park(client)
            return "park"
        return "stop"

    def _adopt_handed_off(self) -> None:
        """Park the kept connections other workers passed on (a worker on its way out takes none:
        it would only pass them on again)."""
        if self._may_park and self._running:
            self._parked.adopt()

    def connections_waiting(self) -> bool:
        """See Waiter.connections_waiting (a look at the listen socket only when no worker is idle)."""
        if self.listener is None or self.scoreboard.count_in_state(IDLE) > 0:
            return False
        return bool(readable([self.listener], 0))

    def linger(self, sock: socket.socket) -> None:
        """See Waiter.linger."""
        if self._lingering is not None:
            self._lingering.add(sock)
        else:
            close_reading_first(sock)


class _ReadinessWait:
    """Waits for a connection on the listen socket (or a wake-up byte).

    On Linux, epoll with EPOLLEXCLUSIVE wakes one waiting worker per connection, the one that
    went idle last: light traffic stays on few workers, so the others idle out (as Net::Waiter's
    blocking accept does), and a burst does not wake the whole pool for one connection.

    A worker idle on a kept connection waits instead in a second epoll, on that connection, the
    wake-up byte and the listen socket (not exclusive: it only looks, the kernel still hands each
    new connection to a worker waiting to accept).
    """

    def __init__(self, listener: socket.socket | None, wake: socket.socket | None,
                 handoff: socket.socket | None = None) -> None:
        self._listener = listener.fileno() if listener is not None else None
        self._others = [wake.fileno()] if wake is not None else []
        self._epoll = select.epoll()
        self._kept = select.epoll()
        if self._listener is not None:
            self._epoll.register(self._listener, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        # kept connections another worker handed off (handoff.py): one idle worker wakes to take them
        self.handoff_fd = handoff.fileno() if handoff is not None else -1
        if handoff is not None:
            self._epoll.register(self.handoff_fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            self._kept.register(self.handoff_fd, select.EPOLLIN)  # (a worker idle on a kept connection takes them too)
        for fd in self._others:
            self._epoll.register(fd, select.EPOLLIN)
            self._kept.register(fd, select.EPOLLIN)
        self._kept_fd: int | None = None
        self._lingering: set[int] = set()

    def poll(self, timeout: float | None) -> set[int]:
        """File descriptors ready to read; empty after ``timeout`` seconds."""
        return {fd for fd, _ in self._epoll.poll(-1 if timeout is None else timeout)}

    @contextlib.contextmanager
    def watching(self, fd: int):
        """Inside this block, :meth:`poll_kept` waits for ``fd`` (a kept connection), the wake-up
        byte, lingering connections and the listen socket; meanwhile this worker is out of the
        kernel's choice of whom to wake for a new connection, since it is not waiting in accept."""
        self._kept.register(fd, select.EPOLLIN)
        if self._listener is not None:
            self._kept.register(self._listener, select.EPOLLIN)
            self._epoll.unregister(self._listener)
        for other in self._lingering:
            self._kept.register(other, select.EPOLLIN)
        self._kept_fd = fd
        try:
            yield self
        finally:
            self._kept_fd = None
            for other in self._lingering:
                self._kept.unregister(other)
            if self._listener is not None:
                self._epoll.register(self._listener, select.EPOLLIN | select.EPOLLEXCLUSIVE)
                self._kept.unregister(self._listener)
            self._kept.unregister(fd)

    def poll_kept(self, timeout: float, include_listener: bool = True) -> set[int]:
        if include_listener:
            return {fd for fd, _ in self._kept.poll(timeout)}
        fds = [self._kept_fd, *self._others]
        return set(readable(fds, timeout))

    def add_parked(self, fd: int) -> None:
        """Also wake for ``fd`` (a parked kept connection), whether idle or waiting on a kept one."""
        self._epoll.register(fd, select.EPOLLIN)
        self._kept.register(fd, select.EPOLLIN)

    def remove_parked(self, fd: int) -> None:
        self._epoll.unregister(fd)
        self._kept.unregister(fd)

    def add_lingering(self, fd: int) -> None:
        """Also wake for ``fd`` (a lingering connection; closing it removes it from the epolls)."""
        self._epoll.register(fd, select.EPOLLIN)
        self._lingering.add(fd)
        if self._kept_fd is not None:
            self._kept.register(fd, select.EPOLLIN)

    def remove_lingering(self, fd: int) -> None:
        self._lingering.discard(fd)

    def close(self) -> None:
        self._epoll.close()
        self._kept.close()


class _Lingering:
    """Connections shut down on our side, read and dropped until the peer hangs up (or a second
    passes): the worker's event loop does it while it serves others, so a web server slow to close
    never holds a worker, and none of its late writes meets a closed socket.

    A web server mostly hangs up within microseconds of reading the answer. While the worker takes
    one connection after another without waiting, a socket is looked at once more after the next
    connection is served (:meth:`look_again`), and mostly closed then, without the cost of an epoll
    registration and a wake-up of its own. Before the worker waits for a new connection, a socket
    shut down a moment ago is not looked at yet (its peer is mostly still reading the answer: the
    look would find it open and watch it, a registration and a wake-up more): it is looked at when
    the wait ends, by the next connection or at most ``_LOOK_AFTER`` later (:meth:`watch_due`).
    The others still open are watched by the epoll; before a wait on a kept connection, all of
    them (:meth:`watch_all`)."""

    LIMIT = 256  # more at once: the oldest is closed without waiting

    def __init__(self, wait: _ReadinessWait) -> None:
        self._wait = wait
        self._buffer = bytearray(65536)
        self._new: list[tuple[socket.socket, float]] = []    # since the last look_again
        self._older: list[tuple[socket.socket, float]] = []  # before it: looked at by the next one
        self._socks: dict[int, tuple[socket.socket, float]] = {}  # watched: fd -> (socket, deadline), oldest first

    def add(self, sock: socket.socket) -> None:
        """A socket its connection has just shut down (not read: its peer has mostly not even
        read the answer yet)."""
        self._new.append((sock, time.monotonic() + _LINGER_SECONDS))

    def look_again(self) -> None:
        """Between two connections taken without waiting: close the older sockets whose peer hung
        up, watch the rest."""
        older, self._older, self._new = self._older, self._new, []
        self._look(older)

    def watch_all(self) -> None:
        """Before the worker waits on a kept connection: the sockets not yet watched are looked
        at, and those still open watched."""
        if self._older or self._new:
            unwatched, self._older, self._new = self._older + self._new, [], []
            self._look(unwatched)

    def watch_due(self) -> None:
        """Before the worker waits for a new connection: as :meth:`watch_all`, but for the sockets
        shut down less than ``_LOOK_AFTER`` ago, as long as they are few; they are left for the
        next look, which :meth:`wait_at_most` does not let wait longer than that."""
        unwatched = self._older + self._new
        first_fresh = len(unwatched)  # (none fresh: all are looked at)
        if len(unwatched) <= _DEFER_AT_MOST:
            due = time.monotonic() + _LINGER_SECONDS - _LOOK_AFTER  # deadline of a socket shut down _LOOK_AFTER ago
            first_fresh = next((at for at, (_, deadline) in enumerate(unwatched) if deadline > due), first_fresh)
        self._older, self._new = unwatched[first_fresh:], []  # (in the order they were shut down)
        self._look(unwatched[:first_fresh])

    def _look(self, unwatched: list[tuple[socket.socket, float]]) -> None:
        for sock, deadline in unwatched:
            if drain_until_eof(sock, self._buffer):
                sock.close()
            else:
                self._watch(sock, deadline)

    @property
    def watching(self) -> bool:
        """Some sockets wait in the epoll for their peer to hang up."""
        return bool(self._socks)

    @property
    def holding(self) -> bool:
        """Some sockets linger, watched or not."""
        return bool(self._socks or self._older or self._new)

    def wait_at_most(self, timeout: float | None) -> float | None:
        """``timeout``, shortened to the next deadline of a lingering connection, or to when the
        first socket :meth:`watch_due` left is due for its look."""
        due = []
        if self._socks:
            due.append(next(iter(self._socks.values()))[1])  # (every deadline is its add's time + 1 s)
        if self._older:
            due.append(self._older[0][1] - _LINGER_SECONDS + _LOOK_AFTER)
        if not due:
            return timeout
        left = max(0.0, min(due) - time.monotonic())
        return left if timeout is None else min(timeout, left)

    def serve(self, ready: set[int]) -> None:
        """Read the ready ones (taking them out of ``ready``); close those whose peer hung up, or
        whose time is up."""
        if not self._socks:
            return
        mine = ready & self._socks.keys()
        ready -= mine
        now = time.monotonic()
        for fd, (sock, deadline) in list(self._socks.items()):
            if (fd in mine and drain_until_eof(sock, self._buffer)) or now >= deadline:
                self._close(fd)

    def _watch(self, sock: socket.socket, deadline: float) -> None:
        if len(self._socks) >= self.LIMIT:
            self._close(next(iter(self._socks)))
        fd = sock.fileno()
        self._socks[fd] = (sock, deadline)
        self._wait.add_lingering(fd)

    def _close(self, fd: int) -> None:
        sock, _ = self._socks.pop(fd)
        self._wait.remove_lingering(fd)
        sock.close()  # leaves the epolls with it

    def close_all(self) -> None:
        for sock, _ in self._older + self._new:
            sock.close()
        self._older, self._new = [], []
        for fd in list(self._socks):
            self._close(fd)


def drain(sock: socket.socket) -> None:
    """Empty a non-blocking wake-up socket (the bytes signals wrote to it)."""
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass
