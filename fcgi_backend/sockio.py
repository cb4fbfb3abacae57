"""Socket I/O with deadlines, shared by the protocols and the worker loop: every read and write
passes MSG_DONTWAIT (the socket itself may stay blocking: no fcntl per connection), and each wait
is a poll with a timeout."""

from __future__ import annotations

import os
import select
import socket
import time
from typing import Callable

from ._multipart import ffi, lib
from .pace import Pace
from .records import FCGI_STDOUT, frame_answer

NOWAIT = socket.MSG_DONTWAIT
CLOSE_DRAIN_SECONDS = 1.0  # how long a closing connection waits for the peer to hang up
_ANSWER_FAILED, _ANSWER_TOO_BIG = lib.FCGI_ANSWER_FAILED, lib.FCGI_ANSWER_TOO_BIG
_CONTENTION_LOOK = 0.25  # how often a wait past its patience looks whether clients wait (wait_or_give_way)


class GiveWay(Exception):
    """A wait given up before its deadline: past its patience, and clients wait for the worker."""


def wait(sock, events: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``events`` (select.POLLIN, POLLOUT) on ``sock``; False on timeout."""
    poller = select.poll()
    poller.register(sock, events)
    deadline = time.monotonic() + timeout
    while True:
        if poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            return True
        if time.monotonic() >= deadline:
            return False


def readable(items, timeout: float) -> list:
    """Those of ``items`` (sockets or file descriptors) ready to read, or hung up, within ``timeout``
    seconds. poll, not select.select: a descriptor past 1023 (an application holding many files)
    is select's ValueError, which would end the worker."""
    poller = select.poll()
    by_fd = {}
    for item in items:
        fd = item if isinstance(item, int) else item.fileno()
        by_fd[fd] = item
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


def wait_or_give_way(sock, events: int, timeout: float, give_way_at: float, others_wait: Callable[[], bool]) -> bool:
    """:func:`wait`, but from ``give_way_at`` (monotonic) on, GiveWay once ``others_wait()`` (a
    client waits that no idle worker can take): a client slow to begin (a TLS handshake, a request
    head) keeps its worker only while nobody else needs it."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if now >= give_way_at and others_wait():
            raise GiveWay()
        if now >= deadline:
            return False
        if wait(sock, events, min(deadline - now, max(give_way_at - now, _CONTENTION_LOOK))):
            return True


def wait_paced(sock, events: int, pace: Pace, what: str) -> None:
    """Wait for ``events`` on ``sock`` as long as ``pace`` allows; a TimeoutError names ``what``
    was waited for ("the client sending the body") and why it is given up."""
    wait_for = pace.next_wait()
    began = time.monotonic()
    ready = wait_for > 0 and wait(sock, events, wait_for)
    pace.account(time.monotonic() - began, 0)
    if pace.too_slow:
        raise TimeoutError(pace.describe(what))
    if not ready:
        raise TimeoutError(f"{what}: nothing for {wait_for:g}s")


def send_all(sock: socket.socket, parts: list, timeout: float, total: int | None = None,
             pace: Pace | None = None) -> None:
    """Send every byte of ``parts`` (one sendmsg when the socket takes it all, as it mostly does);
    a peer that takes none of it for ``timeout`` seconds (or, with ``pace``, too slowly) is a
    TimeoutError. ``total``: their length, when the caller counted it already."""
    if total is None:
        total = sum(len(p) for p in parts)
    try:
        sent = sock.sendmsg(parts, (), NOWAIT)
    except BlockingIOError:
        sent = 0
    if sent != total:
        _send_rest(sock, memoryview(b"".join(parts))[sent:], pace or Pace(timeout, 0))


def send_answer(sock: socket.socket, request_id: int, head: bytes, body: bytes, timeout: float,
                end: bool = False, record_type: int = FCGI_STDOUT) -> None:
    """``head`` + ``body`` as one write's records, END_REQUEST after them if ``end``: framed and sent
    in one system call by connector_c/fcgi_answer.c, without copying the body behind the head.
    What the socket does not take at once is framed again by records.frame_answer and sent as
    send_all sends, with the same errors."""
    left = lib.fcgi_answer_send(sock.fileno(), request_id, record_type, head, len(head), body, len(body), end)
    if left:
        if left == _ANSWER_FAILED:
            error = ffi.errno
            raise OSError(error, os.strerror(error))
        framed = memoryview(b"".join(frame_answer(record_type, request_id, head + body if head else body, end)))
        _send_rest(sock, framed if left == _ANSWER_TOO_BIG else framed[-left:], Pace(timeout, 0))


def _send_rest(sock: socket.socket, rest: memoryview, pace: Pace) -> None:
    """The bytes of an answer a first send left, sent as the peer takes them."""
    while rest:
        try:
            sent = sock.send(rest, NOWAIT)
        except BlockingIOError:
            wait_paced(sock, select.POLLOUT, pace, "the peer taking the answer")
            continue
        rest = rest[sent:]
        pace.account(0.0, sent)


def drain_until_eof(sock: socket.socket, buffer, limit: int = 1 << 20) -> bool:
    """Read and drop what ``sock`` has, without waiting; True once the peer has hung up (or sent
    more than ``limit`` bytes, or failed): the socket can be closed."""
    drained = 0
    while drained < limit:
        try:
            received = sock.recv_into(buffer, 0, NOWAIT)
        except BlockingIOError:
            return False
        except (OSError, ValueError):  # ValueError: a TLS socket takes no flags; close it at once
            return True
        if not received:
            return True
        drained += received
    return True


def close_reading_first(sock: socket.socket) -> None:
    """Close a socket shut down on our side, without waiting, after reading what the peer has
    already sent (a TCP peer whose bytes were left unread would get a reset)."""
    drain_until_eof(sock, bytearray(4096))
    sock.close()


def close_gracefully(sock: socket.socket, buffer, linger=None) -> None:
    """Shut down our sending side, then read what the peer still sends until it hangs up, so no
    write of its meets a closed socket: by ``linger(sock)`` (the worker's event loop, which
    closes it later), else here for at most CLOSE_DRAIN_SECONDS."""
    try:
        sock.shutdown(socket.SHUT_WR)
        if linger is not None:  # (not read here: the peer has mostly not even read the answer yet)
            linger(sock)
            return
        if not drain_until_eof(sock, buffer):
            deadline = time.monotonic() + CLOSE_DRAIN_SECONDS
            while (left := deadline - time.monotonic()) > 0 and wait(sock, select.POLLIN, left):
                if drain_until_eof(sock, buffer):
                    break
    except OSError:
        pass
    sock.close()
