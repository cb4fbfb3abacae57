"""What a handler may return instead of template values: status, headers, body, redirect or JSON."""

from __future__ import annotations

import json as jsonlib
from http.cookies import SimpleCookie
from typing import Any, Callable, Iterable

from .errors import reason_phrase

HTML = "text/html; charset=utf-8"


class Response:
    """An HTTP response. ``body`` may be str (encoded as UTF-8) or bytes.

    >>> Response("created", status=201, headers=[("X-Id", "7")])
    """

    def __init__(self, body: str | bytes = b"", status: int = 200,
                 headers: Iterable[tuple[str, str]] | None = None, content_type: str | None = HTML) -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        self.status = status
        self.headers: list[tuple[str, str]] = list(headers or [])
        if content_type and not self.has_header("Content-Type"):
            self.headers.append(("Content-Type", content_type))

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> "Response":
        """A redirect to ``location`` (302 by default; 301, 303, 307 or 308 as asked)."""
        return cls(b"", status=status, headers=[("Location", location)], content_type=None)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> "Response":
        """``data`` serialised as JSON."""
        return cls(jsonlib.dumps(data, separators=(",", ":")), status=status,
                   content_type="application/json")

    def has_header(self, name: str) -> bool:
        """True if a header of this name (any case) is set."""
        lname = name.lower()
        return any(k.lower() == lname for k, _ in self.headers)

    def set_cookie(self, name: str, value: str, *, max_age: int | None = None, path: str = "/",
                   secure: bool = False, httponly: bool = True, samesite: str | None = "Lax") -> None:
        """Add a Set-Cookie header."""
        cookie = SimpleCookie()
        cookie[name] = value
        morsel = cookie[name]
        morsel["path"] = path
        if max_age is not None:
            morsel["max-age"] = str(max_age)
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite:
            morsel["samesite"] = samesite
        self.headers.append(("Set-Cookie", morsel.OutputString()))

    @property
    def status_line(self) -> str:
        return f"{self.status} {reason_phrase(self.status)}"

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        """Answer as a WSGI application."""
        headers = self.headers + [("Content-Length", str(len(self.body)))]
        start_response(self.status_line, headers)
        return [self.body]
