"""Event hooks: Net::Waiter's event handlers, as callables a handler module can register.

The Server calls its ``on_*`` methods at each event; their default bodies run the callables
registered here under the event's name, so a site can hook in without subclassing the server.
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger("fcgi_backend.hooks")

EVENTS = frozenset({
    "listen_ok", "accept_error", "accept_ok", "fork_ok", "child_start", "child_exit", "close",
    "server_close", "ssl_error", "sig_child", "sig_usr1", "sig_usr2", "child_sig_usr1", "child_sig_usr2",
    "prefork_child_idle", "forking_idle", "maxforked", "log",
})


class Hooks:
    """Callables by event name; each is called as ``hook(server, *event_args)``."""

    def __init__(self) -> None:
        self._hooks: dict[str, list[Callable]] = {}

    def register(self, event: str, func: Callable) -> Callable:
        name = event.removeprefix("on_")
        if name not in EVENTS:
            raise ValueError(f"unknown hook {event!r}; known: {', '.join(sorted(EVENTS))}")
        if not callable(func):
            raise TypeError(f"hook {event!r} must be callable")
        self._hooks.setdefault(name, []).append(func)
        return func

    def fire(self, event: str, server, *args) -> None:
        """Call every hook of ``event``; one that raises is logged and the others still run."""
        for func in self._hooks.get(event, ()):
            try:
                func(server, *args)
            except Exception:
                if event != "log":  # a failing log hook must not recurse into logging
                    log.exception("hook %s (%s) failed", event, getattr(func, "__name__", func))

    def __contains__(self, event: str) -> bool:
        return event in self._hooks  # (a list, once made, only grows)
