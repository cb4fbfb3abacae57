"""The request a handler receives: method, path, query, headers, cookies, form and body."""

from __future__ import annotations

import json as jsonlib
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

from .datastructures import Headers, MultiDict
from .digits import decimal
from .errors import HTTPError
from .limits import Limits

_READ_CHUNK = 64 * 1024


class Request:
    """One HTTP request, read lazily from a WSGI environ.

    ``limits`` bound the body: ``body``, ``json()`` and urlencoded forms are read into memory (at
    most ``max_memory``); multipart bodies stream, files to disk. Call :meth:`close` at the end to
    remove uploaded files the handler did not keep.
    """

    def __init__(self, environ: dict, limits: Limits | None = None, sessions=None) -> None:
        self.environ = environ
        self.limits = limits or Limits()
        self.path_params: dict[str, str] = {}
        self.route = None  #: the registry's Route this request matched, if any
        self._sessions = sessions
        self.loaded_session = None  # the session, once a handler used it

    @property
    def method(self) -> str:
        return self.environ.get("REQUEST_METHOD", "GET").upper()

    @cached_property
    def path(self) -> str:
        """The URL path as text (percent-decoded, UTF-8)."""
        return _as_utf8(self.environ.get("SCRIPT_NAME", "") + self.environ.get("PATH_INFO", "")) or "/"

    @property
    def query_string(self) -> str:
        return self.environ.get("QUERY_STRING", "")

    @cached_property
    def query(self) -> MultiDict:
        """The query string's parameters, its bytes read as UTF-8 as the path's are (a client may
        send them unencoded: Apache passes them on as they came)."""
        return MultiDict(parse_qsl(_as_utf8(self.query_string), keep_blank_values=True))

    @cached_property
    def headers(self) -> Headers:
        return Headers(self.environ)

    @cached_property
    def cookies(self) -> dict[str, str]:
        """Cookies sent by the browser; a malformed Cookie header gives what could be read of it."""
        return parse_cookie_header(self.environ.get("HTTP_COOKIE", ""))

    @property
    def content_type(self) -> str:
        """The media type of the body, without parameters, lower case."""
        return self.environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        return decimal(self.environ.get("CONTENT_LENGTH", ""))

    @property
    def session(self):
        """This visitor's :class:`~fcgi_backend.sessions.Session`, loaded on first use (and held
        against the visitor's other requests until this one's answer is built)."""
        if self.loaded_session is None:
            if self._sessions is None:
                raise RuntimeError("sessions are not set up for this application")
            self.loaded_session = self._sessions.load(self.environ, self.cookies)
        return self.loaded_session

    def release_session(self) -> None:
        """Give up the session's lock without saving anything (the request failed)."""
        if self.loaded_session is not None:
            session, self.loaded_session = self.loaded_session, None
            self._sessions.release(session)

    @property
    def remote_addr(self) -> str:
        return self.environ.get("REMOTE_ADDR", "")

    def _check_length(self, limit: int, what: str) -> None:
        length = self.content_length
        if length is not None and length > limit:
            raise HTTPError(413, f"request body of {length} bytes exceeds the {what} limit of {limit} bytes")

    @cached_property
    def body(self) -> bytes:
        """The whole request body, read into memory (at most ``limits.max_memory`` bytes, else 413)."""
        limit = self.limits.max_memory
        self._check_length(limit, "in-memory")
        stream = self.environ["wsgi.input"]
        if self.content_length is not None:
            return _read_exactly(stream, self.content_length)
        data = stream.read(limit + 1)  # no length given: read to the end, within the limit
        if len(data) > limit:
            raise HTTPError(413, f"request body exceeds the in-memory limit of {limit} bytes")
        return data

    @cached_property
    def _form_and_files(self) -> tuple[MultiDict, MultiDict]:
        if self.method in ("GET", "HEAD"):
            return MultiDict(), MultiDict()
        if self.content_type == "application/x-www-form-urlencoded":
            return MultiDict(_form_fields(self.body.decode("utf-8", "replace"), self.limits.max_parts)), MultiDict()
        if self.content_type == "multipart/form-data":
            self._check_length(self.limits.max_body, "body size")
            from .uploads import parse_multipart  # loads the C parser only when a form needs it

            already_read = self.__dict__.get("body")
            return parse_multipart(self.environ, self.environ.get("CONTENT_TYPE", ""), self.limits, already_read)
        return MultiDict(), MultiDict()

    @property
    def form(self) -> MultiDict:
        """Fields of an urlencoded or multipart form body (empty for other bodies)."""
        return self._form_and_files[0]

    @property
    def files(self) -> MultiDict:
        """Uploaded files of a multipart body: name -> :class:`~fcgi_backend.uploads.UploadedFile`."""
        return self._form_and_files[1]

    @property
    def has_uploads(self) -> bool:
        """The body was parsed as a form, so temporary upload files may exist for :meth:`close`."""
        return "_form_and_files" in self.__dict__

    def close(self) -> None:
        """Remove the temporary files of uploads the handler did not move or keep."""
        parsed = self.__dict__.get("_form_and_files")
        if parsed is not None:
            for _, uploaded in parsed[1].items(multi=True):
                uploaded.discard()

    def json(self) -> Any:
        """The body parsed as JSON; a body that is not JSON is a 400."""
        try:
            return jsonlib.loads(self.body)
        except ValueError as exc:
            raise HTTPError(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:  # ("[[[[..." past the interpreter's recursion limit)
            raise HTTPError(400, "request body is JSON nested too deeply") from None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"


def _form_fields(text: str, max_fields: int) -> list[tuple[str, str]]:
    """The name=value pairs of an urlencoded form, at most ``max_fields`` of them, else 413: a
    16 MiB body of "a&a&..." is five million pairs, seconds of a worker's CPU and a gigabyte."""
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=max_fields)
    except ValueError:  # (counted before any is parsed)
        raise HTTPError(413, f"form with more fields than the limit allows ({max_fields}, max_parts)") from None


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


def _as_utf8(native: str) -> str:
    """A WSGI native string (the request's bytes as Latin-1) read as the UTF-8 it holds; one that
    holds more than bytes (an environ made by hand) as it is."""
    try:
        return native.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return native


def parse_cookie_header(header: str) -> dict[str, str]:
    """The name=value pairs of a Cookie header (RFC 6265, 4.2): pairs split at ";", a value in
    double quotes unquoted, pairs without a name or "=" skipped; the first of two with one name
    wins (browsers send the most specific cookie first)."""
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        name = name.strip()
        if not eq or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies
