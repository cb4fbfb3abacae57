"""The access log: a line per request in Apache's LogFormat language, written where ``--access-log``
says (its own file, or the server's log).

The default is Apache's "combined" format plus the time taken in microseconds::

    %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i" %D

Directives: ``%h``/``%a`` client address (REMOTE_ADDR), ``%l`` "-", ``%u`` REMOTE_USER, ``%t`` the
time the request came, ``%r`` its first line, ``%m`` method, ``%U`` path, ``%q`` query string
(with its "?"), ``%H`` protocol, ``%>s``/``%s`` status, ``%b`` body bytes ("-" for none), ``%B``
body bytes, ``%D`` microseconds taken, ``%T`` seconds taken, ``%{Name}i`` a request header,
``%{NAME}e`` a CGI/WSGI variable, ``%P`` the worker's pid, ``%R`` what answered (``static`` for a
file the HTTP flavour served from the webroot, ``server`` for a request it refused or ``OPTIONS *``, else
``application``), ``%%`` a percent sign. As Apache does,
quotes, backslashes and unprintable bytes in values are escaped (``\\x22``), so a line cannot be forged
by a request.

Formatting is pure (:func:`compile_format`, :meth:`AccessLog.line`); the line is written through
the ``fcgi_backend.access`` logger, which ``logs.configure_access`` points at the file.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Callable, Mapping

logger = logging.getLogger("fcgi_backend.access")

HANDLER_KEY = "fcgi_backend.handler"  # set by the HTTP flavour: "static" for a webroot file, "server"

DEFAULT_FORMAT = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i" %D'

_DIRECTIVE = re.compile(r"%(?:\{([^}]*)\})?(>?)([a-zA-Z%])")
_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')

Field = Callable[[Mapping[str, str], int, int, float, float], str]


def _escape(value: str) -> str:
    """Apache's escaping of logged values: quotes, backslashes and unprintables as \\xHH (of the
    bytes as they came: WSGI strings hold them as latin-1 code points)."""
    if not _UNSAFE.search(value):
        return value
    return _UNSAFE.sub(lambda m: "".join(f"\\x{b:02x}" for b in _bytes_of(m.group())), value)


def _bytes_of(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _variable(name: str, default: str = "-") -> Field:
    return lambda cgi, status, size, started, took: _escape(cgi.get(name) or default)


def _header(name: str) -> Field:
    key = "HTTP_" + name.upper().replace("-", "_")
    if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):  # CGI keeps these two without HTTP_
        key = key[5:]
    return _variable(key)


def _request_line(cgi, status, size, started, took) -> str:
    return _escape(f"{cgi.get('REQUEST_METHOD', '-')} {cgi.get('REQUEST_URI') or '-'} "
                   f"{cgi.get('SERVER_PROTOCOL', '-')}")


def _path(cgi, status, size, started, took) -> str:
    return _escape((cgi.get("REQUEST_URI") or "-").split("?", 1)[0])


def _query(cgi, status, size, started, took) -> str:
    query = cgi.get("QUERY_STRING", "")
    return _escape("?" + query) if query else ""


def _time(cgi, status, size, started, took) -> str:
    return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(started))


_SIMPLE: dict[str, Field] = {
    "h": _variable("REMOTE_ADDR"), "a": _variable("REMOTE_ADDR"),
    "l": lambda *_: "-",
    "u": _variable("REMOTE_USER"),
    "t": _time,
    "r": _request_line,
    "m": _variable("REQUEST_METHOD"),
    "U": _path,
    "q": _query,
    "H": _variable("SERVER_PROTOCOL"),
    "s": lambda cgi, status, size, started, took: str(status),
    "b": lambda cgi, status, size, started, took: str(size) if size else "-",
    "B": lambda cgi, status, size, started, took: str(size),
    "D": lambda cgi, status, size, started, took: str(int(took * 1_000_000)),
    "T": lambda cgi, status, size, started, took: str(int(took)),
    "P": lambda *_: str(os.getpid()),
    "R": _variable(HANDLER_KEY, "application"),
    "%": lambda *_: "%",
}


class FormatError(ValueError):
    """A LogFormat string with a directive this log does not know."""


def compile_format(fmt: str) -> list[str | Field]:
    """The format as literal text and fields, checked: FormatError names an unknown directive."""
    parts: list[str | Field] = []
    pos = 0
    for match in _DIRECTIVE.finditer(fmt):
        if match.start() > pos:
            parts.append(fmt[pos:match.start()])
        argument, _, letter = match.groups()
        if argument is not None and letter == "i":
            parts.append(_header(argument))
        elif argument is not None and letter == "e":
            parts.append(_variable(argument))
        elif argument is None and letter in _SIMPLE:
            parts.append(_SIMPLE[letter])
        else:
            raise FormatError(f"access log format: {match.group()} is not a directive this log knows "
                              f"(see fcgi_backend/access_log.py)")
        pos = match.end()
    if "%" in fmt[pos:]:
        raise FormatError(f"access log format: a lone % at {fmt[pos:]!r}")
    parts.append(fmt[pos:])
    return [p for p in parts if p != ""]


class AccessLog:
    """Writes a line per request in ``fmt`` to the ``fcgi_backend.access`` logger."""

    def __init__(self, fmt: str) -> None:
        self.parts = compile_format(fmt)

    def line(self, cgi: Mapping[str, str], status: int, size: int, started: float, took: float) -> str:
        """The line for a request: its CGI variables, status, body bytes, start (wall clock) and
        seconds taken."""
        return "".join(p if isinstance(p, str) else p(cgi, status, size, started, took) for p in self.parts)

    def write(self, cgi: Mapping[str, str], status: int, size: int, started: float, took: float) -> None:
        try:
            logger.info("%s", self.line(cgi, status, size, started, took))
        except Exception:  # a line that cannot be written never costs the request its answer
            logging.getLogger("fcgi_backend").exception("access log line not written")
