"""How long the HTTP flavour waits on a slow client: Apache's mod_reqtimeout ``MinRate``, as a
bucket of seconds.

A deadline on each wait alone lets a client that sends one byte a minute (or takes one byte of
the answer a minute) keep a worker for days, and a handful of such clients keep them all. So the
time spent waiting on a client inside a request must be earned: each wait lasts at most
``read_timeout``, and the waits of one request body (or one answer) together at most
``read_timeout`` plus a second for every ``min_rate`` bytes moved, with at most ``read_timeout``
seconds saved up. A client moving ``r`` bytes a second below ``min_rate`` is let go after about
``read_timeout / (1 - r / min_rate)`` seconds of waiting; one at ``min_rate`` or faster never is.
Time the application spends between its reads is not waiting and is not counted.
"""

from __future__ import annotations


class Pace:
    """The waiting a client has earned in one request body or one answer (``min_rate`` 0: only
    the per-wait deadline)."""

    __slots__ = ("read_timeout", "min_rate", "seconds_per_byte", "allowance", "moved", "waited")

    def __init__(self, read_timeout: float, min_rate: int) -> None:
        self.read_timeout = read_timeout
        self.min_rate = min_rate
        self.seconds_per_byte = 1.0 / min_rate if min_rate > 0 else 0.0
        self.allowance = read_timeout  # seconds the client may still be waited for
        self.moved = 0
        self.waited = 0.0

    def next_wait(self) -> float:
        """The longest the next wait may last (0 or less: the client is too slow)."""
        if not self.seconds_per_byte:
            return self.read_timeout
        return min(self.read_timeout, self.allowance)

    def account(self, waited: float, moved: int) -> None:
        """A wait of ``waited`` seconds, and ``moved`` bytes received or sent."""
        self.waited += waited
        self.moved += moved
        if self.seconds_per_byte:
            self.allowance = min(self.read_timeout, self.allowance - waited + moved * self.seconds_per_byte)

    @property
    def too_slow(self) -> bool:
        return bool(self.seconds_per_byte) and self.allowance <= 0

    def describe(self, what: str) -> str:
        """Why the client is let go (it fell a whole read_timeout behind min_rate)."""
        return (f"{what}: {self.read_timeout:g}s behind min_rate ({self.min_rate} bytes a second); "
                f"{self.moved} bytes in {self.waited:.1f}s of waiting in all")
