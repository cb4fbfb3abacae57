"""One HTTP/1.1 connection of the HTTP flavour: requests read with httptools (the llhttp binding
uvicorn uses), answered one at a time in order, pipelined ones included.

* One parser per connection frames every message exactly (Content-Length or chunked, pipelined
  or not); a parser error is a 400 and the connection closes. A request line over ``MAX_URL``
  bytes is a 414, a head over ``MAX_HEAD`` bytes or ``MAX_HEADERS`` fields a 431.
* Deadlines: ``idle_timeout`` for a request to begin, ``read_timeout`` for the whole head of a
  request and for each further wait on its body or on a client slow to take the answer.
* Bodies are read as the application reads them (``Expect: 100-continue`` is answered then). A
  multipart body of known length is read by the C parser straight from the socket, never whole in
  memory; the parser is then started afresh for the next request, since the boundary is exact.
  A body the application leaves unread is read and dropped after the answer if it is small, else
  the connection is closed.
* Answers: Content-Length when the application gives it or returned a list, chunked otherwise
  (HTTP/1.1), no body for HEAD, 1xx, 204 and 304. Static files go with ``sendfile``. A body that
  does not match the application's Content-Length is cut to it, or (short) ends the connection:
  the client never reads one answer's bytes as the next's.
"""

from __future__ import annotations

import collections
import email.utils
import io
import logging
import os
import re
import select
import socket
import ssl
import sys
import time
import traceback
from typing import TYPE_CHECKING, Callable, Iterable
from urllib.parse import unquote_to_bytes

import httptools

from . import forwarded, response_head, static
from .access_log import HANDLER_KEY
from .digits import decimal
from .errors import RequestInputError, RequestTimeout, error_page, reason_phrase
from .file_wrapper import FileWrapper, regular_file_span
from .pace import Pace
from .records import ConnectionClosed, StreamError, joined_lines
from .response_head import NO_BODY_STATUS
from .sockio import GiveWay, send_all, wait, wait_or_give_way, wait_paced

if TYPE_CHECKING:
    from .http_server import HTTPServer

log = logging.getLogger("fcgi_backend.http")

MAX_URL = 8190            # request line: longer is a 414 (Apache's LimitRequestLine)
MAX_HEAD = 64 * 1024      # all header fields together: more is a 431
MAX_HEADERS = 100         # header fields: more is a 431 (Apache's LimitRequestFields)
_DRAIN_MAX = 1024 * 1024  # an unread body up to this is read and dropped to keep the connection
_RECEIVE = 256 * 1024
# A stopping worker's last answer may have said keep-alive (it was on its way as the stop came): a
# request the client sent before it could know is served if it comes within this, about the
# longest one-way trip across the Internet (its answer says Connection: close). Closed at once,
# the connection met it with a reset: a reload under wrk's load cost a few errors each.
_STOP_GRACE = 0.25
_TLS_PIECE = 16 * 1024  # one TLS record: how much is sent under TLS between checks of the client's pace
# A request head still unfinished this long after the worker turned to it (the connection came, or
# its next request began) is given up, with a 408, once a client waits that no idle worker can
# take: a head comes whole in milliseconds, and a client trickling one ("slowloris") held its
# worker for read_timeout; twenty of them kept every worker from a visitor for a minute.
_HEAD_PATIENCE = 1.0
# An HTTP client may send its next request as an idle connection closes, and not all retry: a kept
# connection is given up for a waiting one only once idle this long. (FastCGI's are parked at
# once instead, left open: waiter.parks_kept_connections, docs/PROTOCOL.md, *Kept connections*.)
_YIELD_AFTER = 0.05
# A TLS connection given up for a waiting one is replaced by a handshake (about a millisecond of a
# worker's time with an RSA key): each keeps its worker for a turn this many times its own handshake.
_TURN_PER_HANDSHAKE = 50
_LONGEST_TURN = 0.1
# RFC 9112's request-line: a method (any token), a target, HTTP/1.x.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [!-~]+ HTTP/1\.[01]\r\n")
# RFC 3986's host (an IP literal, or a reg-name, which an IPv4 address also matches) and port
_HOST_AND_PORT = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")


def kept_turn(handshake_seconds: float) -> float:
    """How long a connection keeps its worker while others wait, before it is asked to make way:
    long enough that the handshakes replacing connections take about 2% of the workers' time;
    none without TLS (a new plain connection costs microseconds, and waiting clients go first)."""
    return min(handshake_seconds * _TURN_PER_HANDSHAKE, _LONGEST_TURN)


class BadRequest(Exception):
    """The request cannot be read; answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Message:
    """One request as the parser delivers it: head fields, then body pieces."""

    __slots__ = ("url", "headers", "head_size", "method", "version", "keep_alive", "head_complete",
                 "content_length", "body", "body_received", "complete", "upgrade", "pace")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.head_complete = False
        self.content_length: int | None = None  # the first Content-Length field's (llhttp refuses a bad one)
        self.body: collections.deque[bytes] = collections.deque()
        self.body_received = 0
        self.complete = False
        self.upgrade = False
        self.pace: Pace | None = None  # the client's pace sending the body, once it was waited for


class HTTPConnection:
    """Serves the requests of one accepted connection; :meth:`serve` returns when it should close."""

    def __init__(self, sock: socket.socket, server: "HTTPServer", peer: tuple, tls_environ: dict | None) -> None:
        self.sock = sock
        self.server = server
        self.limits = server.limits
        self.peer = peer
        self.tls_environ = tls_environ
        self.tls = isinstance(sock, ssl.SSLSocket)
        # a reverse proxy we believe: its X-Forwarded-For and -Proto say who the client is (forwarded.py)
        self.from_proxy = bool(peer) and bool(server.trusted_proxies) and server.trusted_proxies.allows(peer[0])
        if self.tls:
            sock.settimeout(self.limits.read_timeout)  # the ssl module waits within its own reads and writes
        else:
            sock.setblocking(False)  # every wait is a poll with a deadline
        self._buffer = server.receive_buffer
        self._parser = httptools.HttpRequestParser(self)
        self._messages: collections.deque[_Message] = collections.deque()  # heads complete, not yet served
        self._building: _Message | None = None  # the message the parser is in
        self._closing = False  # answer with Connection: close, then close
        self.host_seen = b""  # the last Host found valid on this connection
        self._response: _Response | None = None  # the answer being made (for the access log)
        self._answer_pace = Pace(self.limits.read_timeout, self.limits.min_rate)  # the client's, taking it
        self._turn = kept_turn(server.handshake_seconds)
        self._turn_ends = time.monotonic() + self._turn

    # ---- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._building = _Message()

    def on_url(self, url: bytes) -> None:
        msg = self._building
        msg.url += url
        if len(msg.url) > MAX_URL:
            raise BadRequest(414, f"request target over {MAX_URL} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        msg = self._building
        msg.head_size += len(name) + len(value) + 4
        value = value.rstrip(b" \t")  # llhttp leaves the trailing whitespace
        msg.headers.append((name, value))
        if len(name) == 14 and msg.content_length is None and name.lower() == b"content-length" and value.isdigit():
            msg.content_length = int(value)  # (read once here: several steps of the request ask)
        if msg.head_size > MAX_HEAD or len(msg.headers) > MAX_HEADERS:
            raise BadRequest(431, f"request header fields over {MAX_HEAD} bytes or {MAX_HEADERS} fields")

    def on_headers_complete(self) -> None:
        msg = self._building
        msg.method = self._parser.get_method()
        msg.version = self._parser.get_http_version()
        msg.keep_alive = self._parser.should_keep_alive()
        msg.upgrade = self._parser.should_upgrade()
        msg.head_complete = True
        self._messages.append(msg)

    def on_body(self, data: bytes) -> None:
        msg = self._building
        msg.body.append(data)
        msg.body_received += len(data)

    def on_message_complete(self) -> None:
        self._building.complete = True

    # ---- reading -------------------------------------------------------------------------------

    def _receive(self, timeout: float, what: str, give_way_at: float | None = None) -> None:
        """One read, fed to the parser; waits at most ``timeout``. ConnectionError if the client
        hung up, TimeoutError if it sent nothing; GiveWay once ``give_way_at`` (monotonic) has
        passed while a client waits that no idle worker can take."""
        if self.tls:
            if not self.sock.pending() and not self._wait_readable(timeout, give_way_at):
                raise TimeoutError(f"client sent nothing {what} for {timeout:g}s")
            received = self.sock.recv_into(self._buffer)
        else:
            while True:
                try:
                    received = self.sock.recv_into(self._buffer)
                    break
                except BlockingIOError:
                    if not self._wait_readable(timeout, give_way_at):
                        raise TimeoutError(f"client sent nothing {what} for {timeout:g}s") from None
        if not received:
            raise ConnectionResetError(f"client closed the connection {what}")
        self._feed(self._buffer[:received])

    def _wait_readable(self, timeout: float, give_way_at: float | None) -> bool:
        """Wait up to ``timeout`` for the client's bytes (False if none came); see _receive."""
        if give_way_at is None:
            return wait(self.sock, select.POLLIN, timeout)
        return wait_or_give_way(self.sock, select.POLLIN, timeout, give_way_at, self.server.connections_waiting)

    def _feed(self, data) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._closing = True  # no protocol switch here: the request is answered, then the connection ends
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, BadRequest):
                raise cause from None
            raise BadRequest(400, str(exc)) from None
        except httptools.HttpParserError as exc:
            if self._parser.get_method() == b"PRI":  # HTTP/2's connection preface, sent without asking
                raise BadRequest(505, "HTTP/2 is not served here: HTTP/1.1 is (over TLS, ALPN offers only "
                                      "http/1.1)") from None
            if isinstance(exc, httptools.HttpParserInvalidMethodError) and _REQUEST_LINE.match(data):
                # a well-formed request whose method is not on llhttp's list (RFC 9110 9.1)
                raise BadRequest(501, "a request method this server does not know") from None
            raise BadRequest(400, f"malformed request: {exc}") from None

    def _next_message(self) -> _Message | None:
        """The next request's head: waiting idle_timeout for it to begin, then read_timeout for
        the whole of it (but _HEAD_PATIENCE when clients wait that no worker can take: a 408).
        None if the client closed or went quiet between requests."""
        deadline = None
        give_way_at = time.monotonic() + _HEAD_PATIENCE  # (called as the connection comes, or its next head)
        while not self._messages:
            if self._building is None or (self._building.complete and not self._messages):
                timeout, what = self.server.config.idle_timeout, "for a request"
            else:
                deadline = deadline or time.monotonic() + self.limits.read_timeout
                timeout, what = max(0.0, deadline - time.monotonic()), "of the request head"
            try:
                self._receive(timeout, what, give_way_at)
            except GiveWay:
                if self._building is None or self._building.complete:
                    log.info("closing a connection from %s that sent no request in %gs: clients wait", self.peer[0],
                             _HEAD_PATIENCE)
                    return None
                raise BadRequest(408, f"the request head was not complete after {_HEAD_PATIENCE:g}s, and "
                                      f"other clients wait") from None
            except (ConnectionError, TimeoutError) as exc:
                if self._building is not None and not self._building.complete:
                    log.info("closing connection from %s: %s", self.peer[0], exc)
                return None
        return self._messages.popleft()

    # ---- the request cycle -----------------------------------------------------------------------

    def serve(self) -> None:
        """Answer requests until the connection should close."""
        while True:
            try:
                msg = self._next_message()
            except BadRequest as exc:
                log.info("request from %s refused: %d: %s", self.peer[0], exc.status, exc)
                self._answer_error(exc.status, str(exc), close=True)
                return
            except OSError:
                return
            if msg is None:
                return
            try:
                keep = self._serve_message(msg)
            except (RequestInputError, OSError, BadRequest) as exc:
                log.info("connection from %s ended during %s %s: %s", self.peer[0], msg.method.decode("latin-1"),
                         msg.url.decode("latin-1"), exc)
                return
            if not keep:
                if not msg.complete:  # a body left unread, or rejected part way
                    self._close_reading_the_rest()
                return
            if self._messages or (self._building is not None and not self._building.complete):
                continue  # pipelined, or begun: its bytes are here already
            if self.tls and self.sock.pending():
                continue
            # (A turn's worth of idleness too: a client late by that much is rarer than 50 ms.)
            if not self.server.wait_for_next_request(self.sock, yield_after=max(_YIELD_AFTER, self._turn)):
                if not (self.server.stopping() and wait(self.sock, select.POLLIN, _STOP_GRACE)):
                    return

    def _close_reading_the_rest(self) -> None:
        """The client may still be sending a body we stopped reading: closed at once, the socket
        would answer it with a reset, which can reach the client before it read our answer (a
        browser then shows "connection reset", not the 413). Our side is shut down and the worker
        reads and drops the rest a while (its lingering close, RFC 9112 §9.6)."""
        if self.tls:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        self.server.linger(self.sock)

    def _serve_message(self, msg: _Message) -> bool:
        """Answer one request; True if the connection stays open for the next."""
        head = _Head(msg, self)
        refusal = head.refusal() or self._over_max_body(msg)
        self._closing = self._closing or not msg.keep_alive or msg.upgrade or refusal is not None
        lookup = None if refusal is not None or msg.url == b"*" else self.server.lookup(head.path)
        started, began = time.time(), time.monotonic()
        self._response = None
        if self._answer_pace.waited or self._answer_pace.moved:  # the last answer waited: a fresh one
            self._answer_pace = Pace(self.limits.read_timeout, self.limits.min_rate)
        try:
            if lookup is None:
                answer = self._answer_itself(msg, head, refusal)
            elif lookup.kind == "app":
                answer = self._call_application(msg, head)
            else:
                head.handler = "static"
                answer = self._serve_static(msg, head, lookup)
        finally:
            response = self._response
            if self.server.access_log is not None and response is not None:
                self.server.access_log.write(head.log_variables(), response.status or 500, response.body_bytes,
                                             started, time.monotonic() - began)
        return answer and self._finish_body(msg) and not self._closing

    def _over_max_body(self, msg: _Message) -> tuple[int, str] | None:
        """A declared body over max_body is refused before any of it is read (a chunked one, once
        it grows past the limit: _receive_body)."""
        length = msg.content_length
        if length is not None and length > self.limits.max_body:
            return 413, self.limits.body_too_large(length)
        return None

    def _finish_body(self, msg: _Message) -> bool:
        """The body the application left: read and dropped if it is small, else the connection closes."""
        if msg.complete:
            return True
        length = msg.content_length
        if length is None or length - msg.body_received > _DRAIN_MAX or self._closing:
            return False
        deadline = time.monotonic() + self.limits.read_timeout
        while not msg.complete:
            msg.body.clear()
            try:
                self._receive(max(0.0, deadline - time.monotonic()), "of a body left unread")
            except TimeoutError:
                raise TimeoutError(f"client sent not all of a body left unread within {self.limits.read_timeout:g}s"
                                   ) from None
        msg.body.clear()
        return True

    def _will_close_after(self, msg: _Message) -> bool:
        """Known before the answer leaves: will the connection close after it? Also when the
        worker stops after it, or clients wait that no idle worker can take and its turn is over:
        it is told (Connection: close), not dropped later."""
        if self._closing or self.server.stopping() or (time.monotonic() >= self._turn_ends
                                                       and self.server.connections_waiting()):
            self._closing = True
            return True
        if not msg.complete:
            length = msg.content_length
            if length is None or length - msg.body_received > _DRAIN_MAX or _expects_continue(msg):
                self._closing = True
        return self._closing

    # ---- the application -------------------------------------------------------------------------

    def _call_application(self, msg: _Message, head: "_Head") -> bool:
        environ = head.environ()
        self.server.request_started(f"{head.method} {head.target}")
        response = self._response = _Response(self, msg, head.method)
        result = None
        try:
            try:
                result = self.server.wsgi_app(environ, response.start_response)
                response.send_result(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except RequestTimeout:  # (the worker logged it)
            self.server.timed_out = True
            self._closing = True
            if not response.head_sent:
                response.send_error(504, "The application took too long to answer.")
        except StreamError as exc:  # the body broke a limit or HTTP's rules on its way in
            log.warning("%s %s: %s", head.method, head.target, exc)
            self._closing = True
            if not response.head_sent:
                response.send_error(exc.status, str(exc))
        except RequestInputError as exc:
            log.warning("%s %s: request input ended early: %s", head.method, head.target, exc)
            self._closing = True
            return False
        except (OSError, BadRequest):
            raise
        except Exception:
            log.error("%s %s: the application failed", head.method, head.target, exc_info=True)
            self._closing = True
            if not response.head_sent:
                response.send_error(500, "The application failed while handling this request.",
                                    traceback.format_exc() if self.server.debug else "")
        return response.complete

    def _answer_itself(self, msg: _Message, head: "_Head", refusal: tuple[int, str] | None) -> bool:
        """A request the server answers without the site: one it refuses, or ``OPTIONS *`` (which
        asks about the server, as a proxy's health check does)."""
        head.handler = "server"
        self.server.request_started(f"{head.method} {head.target}")
        response = self._response = _Response(self, msg, head.method)
        if refusal is not None:
            log.info("%s %s from %s refused: %d: %s", head.method, head.target, head.remote_addr(), *refusal)
            return response.send_error(*refusal)
        return response.send_simple(200, [], b"")

    # ---- static files --------------------------------------------------------------------------------

    def _serve_static(self, msg: _Message, head: "_Head", lookup: static.Lookup) -> bool:
        self.server.request_started(f"{head.method} {head.target}")
        response = self._response = _Response(self, msg, head.method)
        if lookup.kind == "redirect":
            location = lookup.location + (f"?{head.query}" if head.query else "")
            return response.send_simple(301, [("Location", location)], b"")
        if lookup.kind == "forbidden":
            return response.send_error(403, "Folder listings are not served.")
        if lookup.kind == "hidden":
            return response.send_error(403, "Hidden files are not served.")
        if head.method not in ("GET", "HEAD"):
            return response.send_error(405, "", [("Allow", "GET, HEAD")])
        file = lookup.file
        headers = [("Last-Modified", file.last_modified), ("ETag", file.etag), ("Accept-Ranges", "bytes")]
        precondition = static.precondition_status(
            file, head.header_text(b"if-match"), head.header_text(b"if-unmodified-since"),
            head.header_text(b"if-none-match"), head.header_text(b"if-modified-since"), time.time())
        if precondition == 304:
            return response.send_simple(304, headers, b"")
        if precondition == 412:
            return response.send_error(412, "The file has changed since the version this request names.")
        try:
            span = static.byte_range(head.header_text(b"range"), file.size, head.header_text(b"if-range"), file)
        except static.RangeNotSatisfiable:
            return response.send_simple(416, [("Content-Range", f"bytes */{file.size}")], b"")
        status, first, count = (200, 0, file.size) if span is None else (206, span[0], span[1] - span[0] + 1)
        if span is not None:
            headers.append(("Content-Range", f"bytes {span[0]}-{span[1]}/{file.size}"))
        headers += [("Content-Type", file.content_type), ("Content-Length", str(count))]
        try:
            fd = os.open(file.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return response.send_error(404, "")
        try:
            return response.send_file(status, headers, fd, first, count)
        finally:
            os.close(fd)

    def _answer_error(self, status: int, detail: str, close: bool = False) -> None:
        self._closing = self._closing or close
        page = error_page(status, detail).encode()
        head = _format_head(status, [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))],
                            close=True)
        try:
            self.send_all([head, page])
        except OSError:
            pass

    # ---- writing ---------------------------------------------------------------------------------------

    def send_all(self, parts: list) -> None:
        """Send every byte of ``parts``; a client that takes none of it for read_timeout, or takes
        it too slowly (pace.py), is an error."""
        if self.tls:
            self._send_tls(b"".join(parts))
        else:
            send_all(self.sock, parts, self.limits.read_timeout, pace=self._answer_pace)

    def send_file(self, fd: int, offset: int, count: int) -> None:
        """``count`` bytes of ``fd`` from ``offset``: sendfile, or reads and writes under TLS."""
        if self.tls:
            os.lseek(fd, offset, os.SEEK_SET)
            while count:
                block = os.read(fd, min(count, _RECEIVE))
                if not block:
                    raise OSError(f"file ended {count} bytes short")
                self._send_tls(block)
                count -= len(block)
            return
        pace = self._answer_pace
        while count:
            try:
                sent = os.sendfile(self.sock.fileno(), fd, offset, count)
            except BlockingIOError:
                wait_paced(self.sock, select.POLLOUT, pace, "the client taking the file")
                continue
            if sent == 0:
                raise OSError(f"file ended {count} bytes short")
            pace.account(0.0, sent)
            offset += sent
            count -= sent

    def _send_tls(self, data: bytes) -> None:
        """``data`` over TLS, a record at a time when there is more: the ssl module waits inside
        each send (up to read_timeout), and the client's pace is checked between them."""
        if len(data) <= _TLS_PIECE:
            self.sock.sendall(data)
            return
        pace, view = self._answer_pace, memoryview(data)
        for start in range(0, len(data), _TLS_PIECE):
            began = time.monotonic()
            piece = view[start:start + _TLS_PIECE]
            self.sock.sendall(piece)
            pace.account(time.monotonic() - began, len(piece))
            if pace.too_slow:
                raise TimeoutError(pace.describe("the client taking the answer"))

    # ---- the request body, for wsgi.input ---------------------------------------------------------------

    def body_piece(self, msg: _Message) -> bytes:
        """The next piece of ``msg``'s body, b"" at its end."""
        while not msg.body:
            if msg.complete:
                return b""
            self._send_continue(msg)
            self._receive_body(msg)
        return msg.body.popleft()

    def _receive_body(self, msg: _Message) -> None:
        """More of ``msg``'s body, as fast as the client's pace asks (pace.py), with what can go
        wrong as the errors an application's read raises: the request cannot be answered
        (RequestInputError), or answered with a status."""
        if msg.pace is None:
            msg.pace = Pace(self.limits.read_timeout, self.limits.min_rate)
        pace, before, began = msg.pace, msg.body_received, time.monotonic()
        try:
            self._receive(max(0.0, pace.next_wait()), "of the request body")
        except BadRequest as exc:
            raise StreamError(exc.status, str(exc)) from None
        except (TimeoutError, ConnectionError) as exc:
            pace.account(time.monotonic() - began, 0)
            raise ConnectionClosed(pace.describe("the client sending the request body") if pace.too_slow
                                   else str(exc)) from None
        pace.account(time.monotonic() - began, msg.body_received - before)
        if msg.body_received > self.limits.max_body:  # (only a chunked body gets here past it)
            raise StreamError(413, self.limits.body_too_large())

    def feed_upload(self, msg: _Message, upload) -> None:
        """The rest of ``msg``'s body into a C multipart upload: what was received, then (a body
        of known length on a plain socket) the rest read by C from the socket, without Python."""
        self._send_continue(msg)
        while True:
            while msg.body:
                upload.feed(msg.body.popleft())
            if msg.complete:
                return
            length = msg.content_length
            if length is not None and not self.tls and not self._messages and length > msg.body_received:
                left = length - msg.body_received
                msg.body_received = length
                # The parser is in the middle of this body: the next request gets a fresh one.
                self._parser = httptools.HttpRequestParser(self)
                self._building = None
                pace = msg.pace or Pace(self.limits.read_timeout, self.limits.min_rate)
                try:  # a body rejected (413, 400) is not read on: the connection closes after the answer
                    upload.read_fd(self.sock.fileno(), left, pace)
                except BaseException:
                    self._closing = True  # (the message stays incomplete: its rest is read as the socket closes)
                    raise
                msg.complete = True
                return
            self._receive_body(msg)

    def _send_continue(self, msg: _Message) -> None:
        if _expects_continue(msg) and msg.body_received == 0 and not msg.complete:
            self.send_all([b"HTTP/1.1 100 Continue\r\n\r\n"])
            msg.headers = [(n, v) for n, v in msg.headers if n.lower() != b"expect"]


def _transfer_coding_refusal(codings: list[bytes], version: str) -> tuple[int, str] | None:
    """RFC 9112 6.1 and 6.3 on a request's transfer codings (``codings``, in order, lower case):
    chunked, and only chunked, is read here. (llhttp frames "gzip, chunked" as chunked, and the
    application was handed the gzip-coded bytes as the body.)"""
    if version == "1.0":  # its framing is to be taken as faulty (a proxy before may have read it otherwise)
        return 400, "Transfer-Encoding in an HTTP/1.0 request"
    if codings[-1] != b"chunked":
        return 400, "the body's length cannot be told: chunked is not its last transfer coding"
    others = [coding.decode("latin-1") for coding in codings[:-1] if coding]
    if others:
        return 501, f"the transfer coding {', '.join(others)} is not implemented here (only chunked is)"
    return None


class _Head:
    """A request's head as the application sees it."""

    def __init__(self, msg: _Message, conn: HTTPConnection) -> None:
        self.msg = msg
        self.conn = conn
        self.method = msg.method.decode("latin-1")
        target, self.target_host = _origin_form(msg.url)
        # (a fragment is no part of a request, RFC 9112 3.2: dropped, as Apache and gunicorn drop it)
        raw_path, _, query = target.partition(b"#")[0].partition(b"?")
        self.handler = "application"  # what the access log's %R names
        self._forwarded_client: str | None = None  # remote_addr's, behind a trusted proxy
        self.target = msg.url.decode("latin-1")
        self.raw_path = raw_path
        self.query = query.decode("latin-1")
        self.path_bytes = _without_dot_segments(unquote_to_bytes(raw_path))
        self.path = "" if self.path_bytes is None else self.path_bytes.decode("utf-8", "replace")

    def refusal(self) -> tuple[int, str] | None:
        """What RFC 9112 has a server refuse and llhttp lets through: (status, why), or None."""
        msg = self.msg
        if msg.version not in ("1.1", "1.0"):
            return 505, f"HTTP/{msg.version} is not served here: HTTP/1.1 and 1.0 are"
        if self.target_host is None and not msg.url.startswith(b"/") and msg.url != b"*":
            return 400, "the request target is neither a path nor an http URL"
        if msg.url == b"*" and msg.method != b"OPTIONS":
            return 400, "only OPTIONS asks about the server (*)"
        if self.path_bytes is None:
            return 400, "the path climbs above the root (..)"
        hosts, content_types, codings = [], 0, []
        for name, value in msg.headers:
            size = len(name)  # (the length first: no lower() for most names)
            if size == 4 and name.lower() == b"host":
                hosts.append(value)
            elif size == 12 and name.lower() == b"content-type":
                content_types += 1
            elif size == 17 and name.lower() == b"transfer-encoding":
                codings += (coding.partition(b";")[0].strip().lower() for coding in value.split(b","))
        if codings:
            refused = _transfer_coding_refusal(codings, msg.version)
            if refused is not None:
                return refused
        if len(hosts) > 1:
            return 400, "more than one Host header"
        if content_types > 1:  # a proxy in front may read the first, the application the last
            return 400, "more than one Content-Type header"
        if hosts and hosts[0] != self.conn.host_seen:  # (a client sends the same one request after request)
            if not _HOST_AND_PORT.fullmatch(hosts[0]):
                return 400, "the Host header is not a host name or address"
            self.conn.host_seen = hosts[0]
        if not hosts and msg.version == "1.1":
            return 400, "an HTTP/1.1 request needs a Host header"
        return None

    def remote_addr(self) -> str:
        """The client's address: the peer's, or from a trusted proxy the one it forwards (all its
        X-Forwarded-For fields, as one list)."""
        conn = self.conn
        if not conn.from_proxy:
            return conn.peer[0] if conn.peer else ""
        if self._forwarded_client is None:  # (the environ and the access log both ask)
            forwarded_for = [value.decode("latin-1") for name, value in self.msg.headers
                             if len(name) == 15 and name.lower() == b"x-forwarded-for"]
            self._forwarded_client = forwarded.client_address(conn.server.trusted_proxies, conn.peer[0],
                                                              ", ".join(forwarded_for))
        return self._forwarded_client

    def header(self, name: bytes) -> bytes | None:
        """The first field named ``name`` (lower case)."""
        length = len(name)
        for key, value in self.msg.headers:
            if len(key) == length and key.lower() == name:  # (the length first: no lower() for most)
                return value
        return None

    def header_text(self, name: bytes) -> str | None:
        value = self.header(name)
        return None if value is None else value.decode("latin-1")

    def log_variables(self) -> "_LogVariables":
        return _LogVariables(self)

    def environ(self) -> dict:
        conn = self.conn
        server = conn.server
        environ = {
            "REQUEST_METHOD": self.method, "SCRIPT_NAME": "", "PATH_INFO": self.path_bytes.decode("latin-1"),
            "QUERY_STRING": self.query, "REQUEST_URI": self.target, "SERVER_PROTOCOL": f"HTTP/{self.msg.version}",
            "SERVER_NAME": server.server_name, "SERVER_PORT": str(server.server_port),
            "REMOTE_ADDR": self.remote_addr(), "REMOTE_PORT": str(conn.peer[1]) if conn.peer else "",
            "SERVER_SOFTWARE": "fcgi_backend", "GATEWAY_INTERFACE": "CGI/1.1",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "https" if conn.tls else "http",
            "wsgi.input": HTTPInputStream(conn, self.msg), "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": not server.config.nofork, "wsgi.run_once": False,
            "wsgi.input_terminated": True, "wsgi.file_wrapper": FileWrapper,
        }
        for name, value in self.msg.headers:
            if b"_" in name:
                continue  # a field spelled with "_" would pass for one spelled with "-" (Apache and nginx drop them)
            key = name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
                environ[key] = text
                continue
            if key == "PROXY":
                continue  # HTTP_PROXY names a CGI program's outgoing proxy: never the client's to set ("httpoxy")
            key = "HTTP_" + key
            environ[key] = joined_lines(key, environ[key], text) if key in environ else text
        if self.target_host is not None:  # RFC 9112 §3.2.2: the URL's host, whatever Host says
            environ["HTTP_HOST"] = self.target_host.decode("latin-1")
        if conn.from_proxy and not conn.tls:
            scheme = forwarded.forwarded_scheme(environ.get("HTTP_X_FORWARDED_PROTO"))
            if scheme is not None:
                environ["wsgi.url_scheme"] = scheme
                if scheme == "https":
                    environ["HTTPS"] = "on"
        host = environ.get("HTTP_HOST")
        if host:
            name, sep, port = host.rpartition(":")  # "[::1]:8000" too; "[::1]" has no digits after ':'
            if sep and name and decimal(port) is not None:
                environ["SERVER_PORT"] = port
            else:
                name = host
            # as Apache has it: a host name is case-insensitive, and "example.org." is example.org
            environ["SERVER_NAME"] = name.lower().rstrip(".") or name
        if conn.tls_environ:
            environ.update(conn.tls_environ)
        return environ


class HTTPInputStream(io.RawIOBase):
    """``wsgi.input``: the request body as the application reads it."""

    def __init__(self, conn: HTTPConnection, msg: _Message) -> None:
        super().__init__()
        self._conn = conn
        self._msg = msg
        self._pending = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = [self._pending]
            self._pending = b""
            while piece := self._conn.body_piece(self._msg):
                chunks.append(piece)
            return b"".join(chunks)
        while len(self._pending) < size:
            piece = self._conn.body_piece(self._msg)
            if not piece:
                break
            self._pending += piece
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        while b"\n" not in self._pending and (size < 0 or len(self._pending) < size):
            piece = self._conn.body_piece(self._msg)
            if not piece:
                break
            self._pending += piece
        end = self._pending.find(b"\n") + 1 or len(self._pending)
        if size >= 0:
            end = min(end, size)
        line, self._pending = self._pending[:end], self._pending[end:]
        return line

    def feed_upload(self, upload) -> None:
        """See HTTPConnection.feed_upload (the C parser reads the body, uploads.parse_multipart)."""
        if self._pending:
            upload.feed(self._pending)
            self._pending = b""
        self._conn.feed_upload(self._msg, upload)


class _LogVariables:
    """The CGI variables the access log asks for, read from a request's head as asked (a static
    file's request has no environ made)."""

    def __init__(self, head: _Head) -> None:
        self.head = head

    def get(self, name: str, default=None):
        head = self.head
        if name == "REMOTE_ADDR":
            return head.remote_addr() or default
        if name == "REQUEST_METHOD":
            return head.method
        if name == "REQUEST_URI":
            return head.target
        if name == "QUERY_STRING":
            return head.query
        if name == "SERVER_PROTOCOL":
            return f"HTTP/{head.msg.version}"
        if name == HANDLER_KEY:
            return head.handler
        if name.startswith("HTTP_") or name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            value = head.header_text(name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1"))
            return default if value is None else value
        return default


class _Response:
    """What the application answers, on its way to the client."""

    def __init__(self, conn: HTTPConnection, msg: _Message, method: str) -> None:
        self.conn = conn
        self.msg = msg
        self.head_only = method == "HEAD"
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.length: int | None = None  # the Content-Length among them (one number), if any
        self.head_sent = False
        self.chunked = False
        self.body_allowed = True
        self.complete = False
        self._ended = False
        self.body_bytes = 0  # sent (for the access log)
        self.declared: int | None = None  # the application's Content-Length: not a byte more is sent

    def start_response(self, status: str, headers: list, exc_info=None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status:
            raise AssertionError("start_response called twice without exc_info")
        code = response_head.final_status(status)
        headers = [(str(k), str(v)) for k, v in headers]
        response_head.check(status, headers)
        self.status = code
        self.reason = status[4:]
        self.headers, self.length = response_head.passed_on(headers, self._describe, code)
        return self.write

    def _describe(self) -> str:
        """'METHOD target' for log lines."""
        return f"{self.msg.method.decode('latin-1')} {self.msg.url.decode('latin-1')}"

    def _head_bytes(self, body_length: int | None) -> bytes:
        """The status line and headers, with the framing this answer needs."""
        self.body_allowed = response_head.body_allowed(self.status, "GET")
        headers = list(self.headers)  # (framing headers are added below)
        if any(k.lower() == "connection" for k, _ in headers):  # (only "close" is left)
            self.conn._closing = True
        if self.length is not None and self.body_allowed and not self.head_only:
            self.declared = self.length
        if self.body_allowed and self.length is None:
            if body_length is not None:
                headers.append(("Content-Length", str(body_length)))
            elif self.head_only:  # no body follows, whatever the head says: the connection can stay
                if self.msg.version == "1.1":
                    headers.append(("Transfer-Encoding", "chunked"))  # (as a GET's, RFC 9110 9.3.2)
            elif self.msg.version == "1.1":
                headers.append(("Transfer-Encoding", "chunked"))
                self.chunked = True
            else:
                self.conn._closing = True  # the end of the connection ends the body (HTTP/1.0)
        close = self.conn._will_close_after(self.msg)
        # An HTTP/1.0 client keeps its connection only when the answer says so (RFC 9112 9.3):
        # ApacheBench's -k waited for the end of one kept open without a word.
        return _format_head(self.status, headers, close=close, reason=self.reason,
                            keep_alive=not close and self.msg.version == "1.0")

    def write(self, data: bytes) -> None:
        """start_response's write(), and each block of the result (a str as Latin-1, as the FastCGI
        flavour takes it from flup)."""
        if not self.status:
            raise AssertionError("write() before start_response()")
        if type(data) is not bytes:
            data = response_head.body_block(data)
        parts = []
        if not self.head_sent:
            parts.append(self._head_bytes(None))
            self.head_sent = True
        if data and self.body_allowed and not self.head_only:
            if self.declared is not None and self.body_bytes + len(data) > self.declared:
                data = self._cut_to_declared(data)
            parts += [b"%x\r\n" % len(data), data, b"\r\n"] if self.chunked else [data]
            self.body_bytes += len(data)
        if parts:
            self.conn.send_all(parts)

    def send_result(self, result: Iterable[bytes]) -> None:
        if isinstance(result, FileWrapper) and not self.head_sent:
            span = regular_file_span(result.filelike)
            if span is not None:
                self._send_wrapped_file(*span)
                return
        if isinstance(result, (list, tuple)) and not self.head_sent:
            if len(result) == 1 and type(result[0]) is bytes:  # (the usual page: one block, nothing to join)
                body = result[0]
            else:
                body = b"".join([block if type(block) is bytes else response_head.body_block(block) for block in result])
            if not self.status:
                raise AssertionError("the application returned without calling start_response()")
            self.conn.server.request_ended()
            head = self._head_bytes(len(body) if self.length is None else None)
            self.head_sent = True
            if self.declared is not None and len(body) > self.declared:
                body = self._cut_to_declared(body)
            send_body = body and self.body_allowed and not self.head_only
            self.body_bytes = len(body) if send_body else 0
            self.conn.send_all([head, body] if send_body else [head])
            self._check_declared_sent()
            self.complete = True
            return
        for block in result:
            if block:
                self.write(block)
        if not self.head_sent:
            self.write(b"")
        self.conn.server.request_ended()
        if self.chunked:
            self.conn.send_all([b"0\r\n\r\n"])
        self._check_declared_sent()
        self.complete = True

    def _cut_to_declared(self, data: bytes) -> bytes:
        """What of ``data`` fits the declared Content-Length: bytes past it would be read by the
        client as the start of the next answer on the connection."""
        if not self.conn._closing:
            log.warning(response_head.OVERRUN + "; the connection is closed", self.declared)
        self.conn._closing = True
        return data[:max(0, self.declared - self.body_bytes)]

    def _check_declared_sent(self) -> None:
        """A body that ended short of its Content-Length: the client would read the next answer's
        bytes as its rest, so the connection closes (the client sees the answer cut short)."""
        if self.declared is not None and self.body_bytes < self.declared:
            log.warning(response_head.SHORTFALL + "; the connection is closed", self.body_bytes, self.declared)
            self.conn._closing = True

    def _send_wrapped_file(self, fd: int, offset: int, to_end: int) -> None:
        # (a length past the file's end: send_file's error ends the connection, the answer cut short)
        count = to_end if self.length is None else self.length
        self.conn.server.request_ended()
        self.send_file(self.status, [], fd, offset, count, keep_headers=True)

    def send_simple(self, status: int, headers: list, body: bytes) -> bool:
        self.status, self.reason = status, reason_phrase(status)
        self.length = None if status in NO_BODY_STATUS else len(body)
        self.headers = headers + ([] if self.length is None else [("Content-Length", str(self.length))])
        self.conn.server.request_ended()
        head = self._head_bytes(None)
        self.head_sent = True
        self.body_bytes = len(body) if body and not self.head_only else 0
        self.conn.send_all([head, body] if body and not self.head_only else [head])
        self.complete = True
        return True

    def send_error(self, status: int, detail: str, headers: list | None = None, debug_text: str = "") -> bool:
        page = error_page(status, detail, debug_text).encode()
        return self.send_simple(status, [("Content-Type", "text/html; charset=utf-8"), *(headers or [])], page)

    def send_file(self, status: int, headers: list, fd: int, offset: int, count: int,
                  keep_headers: bool = False) -> bool:
        if not keep_headers:  # (``headers`` give the Content-Length: ``count``)
            self.status, self.reason = status, reason_phrase(status)
            self.headers = headers
        elif self.length is None:
            self.headers.append(("Content-Length", str(count)))
        self.length = count
        self.conn.server.request_ended()
        head = self._head_bytes(None)
        self.head_sent = True
        self.conn.send_all([head])
        if not self.head_only and self.body_allowed:
            self.conn.send_file(fd, offset, count)
            self.body_bytes = count
        self.complete = True
        return True


_date_cache = [0, b""]


def _http_date() -> bytes:
    """The Date header's value, formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, email.utils.formatdate(now, usegmt=True).encode()]
    return _date_cache[1]


def _format_head(status: int, headers: list, close: bool, reason: str | None = None, keep_alive: bool = False) -> bytes:
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, (reason or reason_phrase(status)).encode("latin-1")), b""]
    own_date = True  # Date is said once (RFC 9110 6.6.1): the application's if it gave one, as Apache and nginx do
    for name, value in headers:
        lname = name.lower()
        if lname == "connection":
            continue
        if lname == "date":
            own_date = False
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    if own_date:
        lines[1] = b"Date: %s\r\n" % _http_date()
    if close:
        lines.append(b"Connection: close\r\n")
    elif keep_alive:
        lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _origin_form(url: bytes) -> tuple[bytes, bytes | None]:
    """The request target as a path and query, and the host an absolute-form target names (a
    proxy's "http://host:port/path?query"), else None. A target that is neither gives "/" and None."""
    if url.startswith(b"/") or url == b"*":
        return (b"/" if url == b"*" else url), None
    scheme, sep, rest = url.partition(b"://")
    rest = rest.partition(b"#")[0]
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    host, origin = rest[:cut], rest[cut:]
    if not sep or scheme.lower() not in (b"http", b"https") or not host or not _HOST_AND_PORT.fullmatch(host):
        return b"/", None
    return (origin if origin.startswith(b"/") else b"/" + origin), host


def _without_dot_segments(path: bytes) -> bytes | None:
    """A decoded path as Apache and nginx hand it on: "." and ".." segments resolved (RFC 3986
    5.2.4) and repeated slashes merged, so /a/../b is /b for a route, a static file and the
    application alike; None when ".." climbs above the root (they answer 400)."""
    if b"/." not in path and b"//" not in path:
        return path  # (the usual path: nothing to do)
    segments: list[bytes] = []
    for segment in path.split(b"/")[1:]:
        if segment == b"..":
            if not segments:
                return None
            segments.pop()
        elif segment and segment != b".":
            segments.append(segment)
    trailing = b"/" if segments and segment in (b"", b".", b"..") else b""  # (the last segment named a folder)
    return b"/" + b"/".join(segments) + trailing


def _expects_continue(msg: _Message) -> bool:
    return any(n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in msg.headers)
