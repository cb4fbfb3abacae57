"""The status page (JSON and OpenMetrics text) and the ping path, in front of the application.

Like php-fpm's pm.status_path and ping.path: answered by whichever worker takes the request,
from the shared scoreboard, so every figure covers the whole pool.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Callable

from .allowlist import LOOPBACK, AllowList
from .scoreboard import STATE_NAMES, PoolStatus

log = logging.getLogger("fcgi_backend.status")

OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def status_dict(pool: PoolStatus, *, prefork: int, maxfork: int, listen_queue: int | None,
                resident_bytes: Callable[[int], int | None]) -> dict:
    """The pool's figures as one JSON-ready dict; ``resident_bytes`` tells a worker's memory."""
    return {
        "start_time": int(pool.start_time),
        "uptime_seconds": round(time.time() - pool.start_time, 3),
        "accepted_connections": pool.accepted,
        "requests": pool.requests,
        "listen_queue": listen_queue,
        "active_workers": pool.busy,
        "idle_workers": pool.idle,
        "kept_connections": pool.kept,
        "kept_connections_given_up": pool.given_up,
        "kept_connections_handed_off": pool.handed_off,
        "total_workers": len(pool.workers),
        "prefork": prefork,
        "maxfork": maxfork,
        "maxfork_reached": pool.maxfork_reached,
        "workers": [{"pid": w.pid, "state": STATE_NAMES[w.state], "generation": w.generation,
                     "accepted_connections": w.accepted, "requests": w.requests,
                     "started": int(w.started), "request": w.request,
                     "request_seconds": round(w.request_for, 3), "parked_connections": w.parked,
                     "resident_bytes": resident_bytes(w.pid)}
                    for w in pool.workers],
    }


def openmetrics_text(status: dict) -> str:
    """The same figures in the OpenMetrics text format."""
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, object]]) -> None:
        lines.append(f"# TYPE fcgi_backend_{name} {kind}")
        lines.append(f"# HELP fcgi_backend_{name} {help_text}")
        for suffix_labels, value in samples:
            lines.append(f"fcgi_backend_{name}{suffix_labels} {value}")

    metric("accepted_connections", "counter", "Connections accepted from the web server.",
           [("_total", status["accepted_connections"])])
    metric("requests", "counter", "Requests served.", [("_total", status["requests"])])
    metric("workers", "gauge", "Worker processes by state.",
           [('{state="busy"}', status["active_workers"]), ('{state="idle"}', status["idle_workers"])])
    metric("maxfork", "gauge", "Most worker processes allowed.", [("", status["maxfork"])])
    metric("maxfork_reached", "counter", "Times every worker was busy at maxfork.",
           [("_total", status["maxfork_reached"])])
    metric("kept_connections", "gauge", "Connections the web server keeps open, idle between requests.",
           [("", status["kept_connections"])])
    metric("kept_connections_given_up", "counter",
           "Idle kept connections closed for a new one that waited when no worker was free.",
           [("_total", status["kept_connections_given_up"])])
    metric("kept_connections_handed_off", "counter",
           "Kept connections a worker passed to another: during a long request, or as it left.",
           [("_total", status["kept_connections_handed_off"])])
    if status["listen_queue"] is not None:
        metric("listen_queue", "gauge", "Connections waiting in the listen backlog.", [("", status["listen_queue"])])
    metric("uptime_seconds", "gauge", "Seconds since the server started.", [("", status["uptime_seconds"])])
    metric("worker_requests", "counter", "Requests served by each worker.",
           [(f'_total{{pid="{w["pid"]}"}}', w["requests"]) for w in status["workers"]])
    metric("worker_resident_bytes", "gauge", "Resident memory of each worker.",
           [(f'{{pid="{w["pid"]}"}}', w["resident_bytes"]) for w in status["workers"]
            if w["resident_bytes"] is not None])
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def wants_openmetrics(environ: dict) -> bool:
    query = environ.get("QUERY_STRING", "")
    return ("openmetrics" in query.split("&") or "format=openmetrics" in query
            or "application/openmetrics-text" in environ.get("HTTP_ACCEPT", ""))


class StatusMiddleware:
    """Answers ``status_path`` and ``ping_path``; passes everything else to ``app``."""

    def __init__(self, app: Callable, *, status_path: str, ping_path: str, read_status: Callable[[], dict],
                 allow: AllowList | None = None) -> None:
        self.app = app
        self.allow = allow if allow is not None else AllowList(LOOPBACK)  # who sees the status page
        self.status_path = status_path
        self.ping_path = ping_path
        self.read_status = read_status

    def __call__(self, environ: dict, start_response: Callable):
        path = environ.get("PATH_INFO", "")
        if self.ping_path and path == self.ping_path:
            return _answer(start_response, "text/plain", b"pong\n")
        if self.status_path and path == self.status_path:
            if not self.allow.allows(environ.get("REMOTE_ADDR", "")):
                # the requests in flight are in it (their query strings too): as if there were none
                log.info("status page not shown to %s (not in status_allow)", environ.get("REMOTE_ADDR"))
                return self.app(environ, start_response)
            status = self.read_status()
            if wants_openmetrics(environ):
                return _answer(start_response, OPENMETRICS_TYPE, openmetrics_text(status).encode())
            return _answer(start_response, "application/json", json.dumps(status, indent=1).encode())
        return self.app(environ, start_response)


def _answer(start_response: Callable, content_type: str, body: bytes) -> list[bytes]:
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                              ("Cache-Control", "no-store")])
    return [body]
