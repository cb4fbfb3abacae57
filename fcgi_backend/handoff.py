"""Kept FastCGI connections passed from one worker to another: when their worker exits while the
server runs on (max_requests, max_worker_rss, a reload), or while it runs a long request
(parking.py). Over a datagram socket pair the supervisor made before forking (SCM_RIGHTS), to
whichever worker looks first. Closing them lost a request the web server sent on one that moment
(nginx answered a POST 502): FastCGI cannot ask it to close first.

A worker gives its connections none of their bytes read; the one that takes them parks each, and
serves it when its next request comes. An idle worker wakes for them (the taking end is in its
epolls); a busy one looks when the scoreboard says some wait. What no worker took is closed with
the socket pair's last end, at the server's stop."""

from __future__ import annotations

import socket

_MOST_A_MESSAGE = 32  # descriptors a datagram carries (the kernel's limit is 253)


class Handoff:
    def __init__(self) -> None:
        self.taker, self._giver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for end in (self.taker, self._giver):
            end.setblocking(False)

    def give(self, socks: list) -> int:
        """Pass ``socks`` on, the first ones if not all could go (a full buffer); how many went.
        The caller closes its own copies of those, which leaves the connections open."""
        fds = [sock.fileno() for sock in socks]
        given = 0
        try:
            for first in range(0, len(fds), _MOST_A_MESSAGE):
                socket.send_fds(self._giver, [b"k"], fds[first:first + _MOST_A_MESSAGE])
                given = min(first + _MOST_A_MESSAGE, len(fds))
        except OSError:
            pass
        return given

    def take(self) -> list[int]:
        """The connections given since anyone last took them (none if another worker was first)."""
        taken = []
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(self.taker, 16, _MOST_A_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return taken
            taken.extend(fds)

    def close(self) -> None:
        self.taker.close()
        self._giver.close()
