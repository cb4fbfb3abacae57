"""What a wrk run printed, read into numbers: one reading for the tests and bench/."""

from __future__ import annotations

import re
from typing import NamedTuple


class SocketErrors(NamedTuple):
    """wrk's "Socket errors" line (all zero when it printed none)."""
    connect: int
    read: int
    write: int
    timeout: int


_MS_PER = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}  # wrk's time units


def latency_ms(out: str, percent: str) -> float:
    """A percentile of the latency distribution (wrk run with --latency), in milliseconds."""
    value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M).groups()
    return float(value) * _MS_PER[unit]


def max_latency_ms(out: str) -> float:
    """The longest latency of the run (the Max column of wrk's Latency line), in milliseconds."""
    value, unit = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m|h)\s", out, re.M).groups()
    return float(value) * _MS_PER[unit]


def requests_done(out: str) -> int:
    return int(re.search(r"(\d+) requests in", out).group(1))


def requests_per_second(out: str) -> float:
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def non_2xx(out: str) -> int:
    """Answers with a status outside 2xx and 3xx."""
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(m.group(1)) if m else 0


def socket_errors(out: str) -> SocketErrors:
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return SocketErrors(*(int(x) for x in m.groups())) if m else SocketErrors(0, 0, 0, 0)
