"""The request a handler receives: method, path, query, headers, cookies, form and body."""

from __future__ import annotations

import json as jsonlib
from functools import cached_property
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from .datastructures import Headers, MultiDict
from .errors import HTTPError

DEFAULT_MAX_BODY = 16 * 1024 * 1024
_READ_CHUNK = 64 * 1024


class Request:
    """One HTTP request, read lazily from a WSGI environ.

    ``max_body`` bounds how much of the body is read into memory (``body``, ``form``, ``json()``);
    a larger body is a 413.
    """

    def __init__(self, environ: dict, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.environ = environ
        self.max_body = max_body
        self.path_params: dict[str, str] = {}

    @property
    def method(self) -> str:
        return self.environ.get("REQUEST_METHOD", "GET").upper()

    @cached_property
    def path(self) -> str:
        """The URL path as text (percent-decoded, UTF-8)."""
        raw = self.environ.get("SCRIPT_NAME", "") + self.environ.get("PATH_INFO", "")
        return raw.encode("latin-1").decode("utf-8", "replace") or "/"

    @property
    def query_string(self) -> str:
        return self.environ.get("QUERY_STRING", "")

    @cached_property
    def query(self) -> MultiDict:
        """The query string's parameters."""
        return MultiDict(parse_qsl(self.query_string, keep_blank_values=True))

    @cached_property
    def headers(self) -> Headers:
        return Headers(self.environ)

    @cached_property
    def cookies(self) -> dict[str, str]:
        """Cookies sent by the browser; a malformed Cookie header gives what could be read of it."""
        jar = SimpleCookie()
        for piece in self.environ.get("HTTP_COOKIE", "").split(";"):
            try:
                jar.load(piece.strip())
            except CookieError:
                continue
        return {name: morsel.value for name, morsel in jar.items()}

    @property
    def content_type(self) -> str:
        """The media type of the body, without parameters, lower case."""
        return self.environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        value = self.environ.get("CONTENT_LENGTH", "")
        return int(value) if value.isdigit() else None

    @property
    def remote_addr(self) -> str:
        return self.environ.get("REMOTE_ADDR", "")

    @cached_property
    def body(self) -> bytes:
        """The whole request body (at most ``max_body`` bytes, else 413)."""
        length = self.content_length
        if length is not None and length > self.max_body:
            raise HTTPError(413, f"request body of {length} bytes exceeds the limit of {self.max_body}")
        stream = self.environ["wsgi.input"]
        if length is not None:
            return _read_exactly(stream, length)
        data = stream.read(self.max_body + 1)  # no length given: read to the end, within the limit
        if len(data) > self.max_body:
            raise HTTPError(413, f"request body exceeds the limit of {self.max_body} bytes")
        return data

    @cached_property
    def form(self) -> MultiDict:
        """Fields of an ``application/x-www-form-urlencoded`` body (empty for other bodies)."""
        if self.method in ("GET", "HEAD") or self.content_type != "application/x-www-form-urlencoded":
            return MultiDict()
        text = self.body.decode("utf-8", "replace")
        return MultiDict(parse_qsl(text, keep_blank_values=True))

    def json(self) -> Any:
        """The body parsed as JSON; a body that is not JSON is a 400."""
        try:
            return jsonlib.loads(self.body)
        except ValueError as exc:
            raise HTTPError(400, f"request body is not valid JSON: {exc}") from None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"


def _read_exactly(stream, length: int) -> bytes:
    chunks = []
    left = length
    while left:
        chunk = stream.read(min(left, _READ_CHUNK))
        if not chunk:
            raise HTTPError(400, f"request body ended after {length - left} of {length} bytes")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
