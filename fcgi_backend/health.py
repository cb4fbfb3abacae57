"""An HTTP health check on the FastCGI port, for mod_proxy_hcheck's ``hcmethod=GET``.

Apache's health checks speak HTTP to a balancer member, whatever its scheme: to an ``fcgi://``
member it writes ``GET /fcgi-ping HTTP/1.0``. A FastCGI stream starts with the version byte 1, so
a connection whose first bytes are an HTTP request line cannot be FastCGI: it gets a small HTTP
answer (200 "pong" for the ping path, 404 for anything else) and is closed. The check costs normal
traffic nothing: it is looked at only when the first record's version byte is wrong.
"""

from __future__ import annotations

import re

_REQUEST_LINE = re.compile(rb"(GET|HEAD|OPTIONS) (\S+) HTTP/1\.[01]\r?\n")
MAX_HEAD = 8192  # what is looked at of a health check's request


def health_answer(head: bytes, ping_path: str) -> bytes | None:
    """The HTTP answer to the request that ``head`` starts, or None if it is not an HTTP health
    check (then it is malformed FastCGI)."""
    match = _REQUEST_LINE.match(head[:MAX_HEAD])
    if match is None:
        return None
    method, target = match.group(1), match.group(2).split(b"?", 1)[0]
    if ping_path and target == ping_path.encode("latin-1"):
        status, body = b"200 OK", b"pong\n"
    else:
        status, body = b"404 Not Found", b"not a health check path\n"
    headers = (b"HTTP/1.0 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
    return headers if method == b"HEAD" else headers + body
