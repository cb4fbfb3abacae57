"""A worker's resident memory, read from /proc: for the status page, and for max_worker_rss, which
replaces a worker grown past it (uWSGI's reload-on-rss)."""

from __future__ import annotations

import os

_PAGE = os.sysconf("SC_PAGE_SIZE")
LOOK_EVERY = 1.0  # seconds between the supervisor's looks: a read of /proc a worker, off the requests' path


def resident_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid``, as ps shows it (the pages it shares with the supervisor
    since the fork included), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"
