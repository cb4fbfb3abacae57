"""systemd's readiness protocol (sd_notify) for ``Type=notify`` units: READY=1 once serving,
RELOADING=1 while a SIGHUP is handled, STOPPING=1 at the end. Nothing happens outside systemd
(no NOTIFY_SOCKET)."""

from __future__ import annotations

import os
import socket
import time


def _send(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        pass  # systemd gone: nothing to tell


def ready(status: str = "") -> None:
    _send(f"READY=1\nMAINPID={os.getpid()}" + (f"\nSTATUS={status}" if status else ""))


def reloading() -> None:
    monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    _send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")


def stopping() -> None:
    _send("STOPPING=1")
