"""A number a peer or an application writes (Content-Length, a port, a status code, a byte range),
read as RFC 9110's 1*DIGIT: ASCII digits only. ``str.isdigit()`` also says yes to "²" and other
scripts' digits, which ``int()`` then refuses or reads."""

from __future__ import annotations


def decimal(text: str) -> int | None:
    """``text`` as a number if it is nothing but ASCII digits, else None."""
    return int(text) if text.isascii() and text.isdigit() else None
