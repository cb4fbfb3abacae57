"""A limit on the number of processes, as systemd's TasksMax or a container's pids limit set one:
a pids cgroup of its own (cgroup v2, or v1's pids hierarchy), for tests where fork must fail."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_V2 = Path("/sys/fs/cgroup")
_V1 = Path("/sys/fs/cgroup/pids")


def _hierarchy() -> Path | None:
    """Where a pids cgroup can be made here, or None (not root, no pids controller)."""
    if os.geteuid() != 0:
        return None
    if (_V1 / "cgroup.procs").exists():
        return _V1
    controllers = _V2 / "cgroup.controllers"
    if controllers.exists() and "pids" in controllers.read_text().split():
        return _V2
    return None


def available() -> bool:
    return _hierarchy() is not None


@contextlib.contextmanager
def pids_limited(name: str):
    """A fresh pids cgroup: yields a function ``limit(pids, most)`` that moves ``pids`` into it and
    allows ``most`` processes there (``None``: no limit). Removed afterwards, once empty."""
    base = _hierarchy()
    if base is None:
        raise RuntimeError("no pids cgroup can be made here")
    group = base / name
    group.mkdir(exist_ok=True)
    if base == _V2 and "pids" not in (_V2 / "cgroup.subtree_control").read_text().split():
        (_V2 / "cgroup.subtree_control").write_text("+pids")

    def limit(pids: list[int], most: int | None) -> None:
        for pid in pids:
            (group / "cgroup.procs").write_text(str(pid))
        (group / "pids.max").write_text("max" if most is None else str(most))

    try:
        yield limit
    finally:
        (group / "pids.max").write_text("max")
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # (it may have exited since)
                (base / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            group.rmdir()
