"""What an application's status and headers must not hold: a line break (CR or LF), a NUL or any
other control character but a tab, a header name that is not a token, a status that is no final
answer (1xx); the headers that are the server's to send (hop-by-hop); and what its
Content-Length must be to be kept: one number, which its body is then held to.

An application that puts a visitor's input into a header (a redirect's Location taken from
``?next=``) would otherwise let the visitor end that header and add headers of their own, or a
second answer (response splitting, CWE-113). PEP 3333 forbids control characters in a status or
a header; each flavour's ``start_response`` checks, and the application's call fails with
:class:`InvalidResponseHead`: the client gets a 500, the log names the header.
"""

from __future__ import annotations

import logging
import re
from typing import Callable

from .digits import decimal

log = logging.getLogger("fcgi_backend.response_head")

NO_BODY_STATUS = frozenset({204, 304})  # (and 1xx): an answer without a body, whatever its headers say
# RFC 9110 5.5: a field value holds no control character but HTAB (Apache's mod_proxy_fcgi and the
# connector refuse one, nginx and lighttpd passed it on).
CONTROLS = bytes(c for c in range(32) if c != 9) + b"\x7f"


class InvalidResponseHead(ValueError):
    """The application's status or a header cannot go into an answer as it is."""


# RFC 9110 5.1 and 5.6.2: a field name is a token. (A space or colon in one makes the answer
# malformed: nginx and the connector answer 502 for it, serve-http sent it on as it was.)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_BYTES = re.compile(_TOKEN.pattern.encode())
names_checked: set = set()  # the names found to be tokens, each looked at once (an application uses a few)
_NAMES_KEPT = 512


def check_name(name) -> None:
    """InvalidResponseHead unless the header name ``name`` (str or bytes) is a token."""
    pattern = _TOKEN if isinstance(name, str) else _TOKEN_BYTES if isinstance(name, bytes) else None
    if pattern is None or pattern.fullmatch(name) is None:
        raise InvalidResponseHead(f"the header name {name!r} is not a token (RFC 9110 5.1: letters, digits and "
                                  f"!#$%&'*+-.^_`|~ only)")
    if len(names_checked) < _NAMES_KEPT:
        names_checked.add(name)


# The longest header line (name, ": ", value) Apache's mod_proxy_fcgi reads: util_script.c reads
# each into 8 KiB. A longer one is Apache's 500, logged as "Premature end of script headers" (as
# if the backend had died); nginx, lighttpd and the connector take it.
APACHE_LINE_LIMIT = 8189


def warn_of_lines_apache_refuses(headers, describe: Callable[[], str]) -> None:
    """Log each of the answer's headers whose line mod_proxy_fcgi would refuse (the lane looks only
    when its whole header block is that long)."""
    for name, value in headers:
        size = len(name) + 2 + len(value)  # (str or bytes alike: each character is a byte, Latin-1)
        if size > APACHE_LINE_LIMIT:
            log.warning("%s: the answer's header %s is %d characters long; behind Apache's mod_proxy_fcgi, which "
                        "reads header lines of up to %d, the client gets a 500 and Apache's log says \"Premature "
                        "end of script headers\"", describe(), name if isinstance(name, str) else
                        name.decode("latin-1"), size, APACHE_LINE_LIMIT)


def final_status(status) -> int:
    """The code of an application's status, "NNN Reason": three digits from 200 to 599 and a space.
    A 1xx is no final answer (the client would wait on for one); InvalidResponseHead if not."""
    if isinstance(status, bytes):  # (the FastCGI flavour takes bytes, as flup does)
        status = status.decode("latin-1")
    if isinstance(status, str) and status[3:4] == " ":
        code = status[:3]
        if code.isascii() and code.isdigit() and "200" <= code <= "599":  # (three digits compare as numbers)
            return int(code)
    raise InvalidResponseHead(f"the status {status!r} is not 'NNN Reason' with NNN from 200 to 599")


def _has_control(text) -> bool:
    if isinstance(text, str):  # (UTF-8 keeps each control character as its byte, and makes no other one)
        text = text.encode("utf-8", "surrogatepass")
    elif not isinstance(text, (bytes, bytearray)):
        return False  # not text at all: the bridge's own checks say so
    return len(text.translate(None, CONTROLS)) != len(text)


def check(status, headers) -> None:
    """InvalidResponseHead naming the first header (or the status) that would break its line, or
    whose name is not a token."""
    for name, _ in headers:
        if type(name) is bytearray or name not in names_checked:
            check_name(name)
    try:  # the usual head, all str: one joined text looked through (a third of the loop's time)
        text = status + "".join(map("".join, headers))
    except TypeError:
        text = None
    if text is not None and not _has_control(text):
        return
    if _has_control(status):
        raise InvalidResponseHead(f"the status {status!r} has a line break, NUL or other control character in it")
    for name, value in headers:
        if _has_control(name) or _has_control(value):
            raise InvalidResponseHead(f"the header {name!r}: {value!r} has a line break, NUL or other control "
                                      f"character in it")


_CONTENT_LENGTH = ("content-length", b"content-length")


def _declared_length(headers) -> tuple[int | None, list | None]:
    """The application's Content-Length (None if it gave none) and, when it gave one that is not a
    single number (``abc``, ``-1``, two headers), None and its headers without it: the answer then
    goes without one, framed by the server, instead of carrying a length nobody can hold to."""
    values = [value for name, value in headers if len(name) == 14 and name.lower() in _CONTENT_LENGTH]
    if not values:
        return None, None
    length = decimal(values[0]) if len(values) == 1 else None
    if length is not None:
        return length, None
    return None, _without_length(headers)


def _without_length(headers) -> list:
    return [(name, value) for name, value in headers if not (len(name) == 14 and name.lower() in _CONTENT_LENGTH)]


# Log lines (each flavour adds what it does about it).
OVERRUN = "the application sent more than its Content-Length (%d); the rest is dropped"
SHORTFALL = "the application's body ended at %d of its Content-Length %d"


def _lengths_given(headers) -> str:
    """The Content-Length values in ``headers``, for a log line."""
    return ", ".join(repr(value) for name, value in headers if len(name) == 14 and name.lower() in _CONTENT_LENGTH)


def body_block(block) -> bytes:
    """A block of the body that is not ``bytes`` as the answer takes it: a str as Latin-1 (flup's
    rule, so both flavours alike); any other type fails, a bytearray or memoryview too (PEP 3333
    asks for bytes: flup, gunicorn and mod_wsgi refuse them, and so does each flavour here)."""
    if type(block) is str:
        return block.encode("latin-1")
    raise TypeError(f"write() argument must be bytes, not {type(block).__name__}")


def body_allowed(status: int, method: str) -> bool:
    """Whether an answer of ``status`` to ``method`` has a body its Content-Length speaks of."""
    return status >= 200 and status not in NO_BODY_STATUS and method != "HEAD"


# RFC 9110's hop-by-hop fields, which PEP 3333 forbids an application: the server frames the answer
# and keeps the connection. A "Transfer-Encoding: chunked" passed on over a body that is not in
# chunks has a client read the body as chunk sizes. ("Connection: close" is kept: the application
# asks that the connection end after this answer, which the server can do.)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"})
HOP_BY_HOP_LENGTHS = frozenset(len(name) for name in HOP_BY_HOP)  # a first look that spares most names a lower()


def hop_by_hop(name, value) -> bool:
    """Whether the application's header ``name: value`` is one the server drops (str or bytes)."""
    if len(name) not in HOP_BY_HOP_LENGTHS:
        return False
    lname = (name if isinstance(name, str) else name.decode("latin-1")).lower()
    if lname != "connection":
        return lname in HOP_BY_HOP
    return (value if isinstance(value, str) else value.decode("latin-1")).strip().lower() != "close"


def _without_hop_by_hop(headers) -> tuple[list, list]:
    """``headers`` without the hop-by-hop ones, and the names of those dropped (for a log line)."""
    kept, dropped = [], []
    for name, value in headers:
        if hop_by_hop(name, value):
            dropped.append(name if isinstance(name, str) else name.decode("latin-1"))
        else:
            kept.append((name, value))
    return kept, dropped


def passed_on(headers, describe: Callable[[], str], status: int) -> tuple[list, int | None]:
    """The application's headers as the server passes them on, and its Content-Length: without
    hop-by-hop headers, nor a Content-Length that is not one number (each dropped with a log line
    that names the request, ``describe()``), nor one on a 204 (RFC 9110 8.6: a server MUST NOT
    send it; Apache drops it, nginx passed it on)."""
    if any(hop_by_hop(name, value) for name, value in headers):
        headers, dropped = _without_hop_by_hop(headers)
        log.warning("%s: the application's hop-by-hop header %s is dropped (the server frames the answer and keeps "
                    "the connection)", describe(), ", ".join(dropped))
    if status == 204:
        return _without_length(headers), None
    declared, without_length = _declared_length(headers)
    if without_length is not None:
        log.warning("%s: the application's Content-Length is not one number (%s); the answer goes without it",
                    describe(), _lengths_given(headers))
        headers = without_length
    return headers, declared
