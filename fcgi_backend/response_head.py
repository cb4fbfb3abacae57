"""What an application's status and headers must not hold: a line break (CR or LF) or a NUL.

An application that puts a visitor's input into a header (a redirect's Location taken from
``?next=``) would otherwise let the visitor end that header and add headers of their own, or a
second answer (response splitting, CWE-113). PEP 3333 forbids control characters in a status or
a header; each flavour's ``start_response`` checks, and the application's call fails with
:class:`InvalidResponseHead`: the client gets a 500, the log names the header.
"""

from __future__ import annotations

import re

_BREAKING = re.compile("[\r\n\0]")
_BREAKING_BYTES = re.compile(b"[\r\n\0]")


class InvalidResponseHead(ValueError):
    """The application's status or a header has a line break or NUL in it."""


def _breaks(text) -> bool:
    if isinstance(text, str):
        return _BREAKING.search(text) is not None
    if isinstance(text, (bytes, bytearray)):
        return _BREAKING_BYTES.search(text) is not None
    return False  # not text at all: the bridge's own checks say so


def check(status, headers) -> None:
    """InvalidResponseHead naming the first header (or the status) that would break its line."""
    try:  # the usual head, all str: one joined text looked through (a third of the loop's time)
        text = status + "".join(map("".join, headers))
    except TypeError:
        text = None
    if text is not None and "\n" not in text and "\r" not in text and "\0" not in text:
        return
    if _breaks(status):
        raise InvalidResponseHead(f"the status {status!r} has a line break or NUL in it")
    for name, value in headers:
        if _breaks(name) or _breaks(value):
            raise InvalidResponseHead(f"the header {name!r}: {value!r} has a line break or NUL in it")

