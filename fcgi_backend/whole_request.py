"""The whole-request lane: the usual request, all its records read before anything else, answered
in one pass, without the connection, request and stream objects of the record-by-record path.

A web server mostly sends a request in one go: BEGIN_REQUEST, the PARAMS, a small body and the
empty STDIN record. For such a request the objects of connection.py and flup's WSGI bridge cost
more Python than a small application does (bench/profile_bench.py). This lane takes it from the C
scanner (records.WholeRequestScanner), calls the application with the environ flup's bridge
builds, and answers as that bridge does: a record per write, the header block with the first
block, Content-Length added to a one-block answer, the blocks of a list sent with END_REQUEST in
one system call. The framing and the send are C's (sockio.send_answer). tests/test_wsgi_bridge.py
holds the ways to the same records.

The lane reads until the request is whole (a web server may write it in parts), with the
reference path's deadlines, but once the params are whole it waits for the body no longer than
BODY_GAP: the reference path starts the application then, and an application may answer before
the body comes (a refused upload). Anything else it declines, handing what it read to the reference
path (FastCGIConnection): records of another shape, a HEAD, a body that is not its
CONTENT_LENGTH, bytes after the request. FCGI_BACKEND_RECORD_BY_RECORD in the environment turns
the lane off.
"""

from __future__ import annotations

import io
import logging
import select
import socket
import sys
import time
import traceback

from . import response_head
from .connection import ABORT_LOOK_AFTER, cut_off
from .errors import RequestInputError, RequestTimeout
from .gateway import (APPLICATION_FAILED, TIMED_OUT, FastCGIGateway, detach_close, error_answer, log_application_error,
                      log_input_error)
from .records import (FCGI_ABORT_REQUEST, FCGI_KEEP_CONN, FCGI_STDERR, FCGI_STDOUT, ProtocolError, RecordParser,
                      WholeRequest, frame_answer)
from .response_head import HOP_BY_HOP_LENGTHS, NO_BODY_STATUS, check_name, final_status, names_checked
from .sockio import NOWAIT, close_gracefully, send_all, send_answer, wait

log = logging.getLogger("fcgi_backend.whole_request")

DECLINED, KEEP, CLOSED = "declined", "keep", "closed"  # what serve() did with the connection

BODY_GAP = 0.01  # seconds: a web server writes the params and the body apart, this close together


class WholeRequestLane:
    """Serves the requests of one worker that arrive whole. ``serve`` per request."""

    def __init__(self, gateway: FastCGIGateway) -> None:
        self.gateway = gateway
        self.scanner = gateway.whole_request_scanner
        self.buffer = gateway.receive_buffer
        self.read_timeout = gateway.limits.read_timeout
        self.idle_timeout = gateway.idle_timeout
        self.taken = b""  # what a declined serve() read from the socket, for the reference path
        # What every environ holds besides the params (flup's bridge sets the same).
        self.environ = dict(gateway.environ, **{
            "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": gateway.multiprocess,
            "wsgi.run_once": False})

    def serve(self, sock: socket.socket, linger=None) -> str:
        """Read what the web server sent; if it is a whole request of the usual kind, answer it
        and return KEEP (the web server asked to keep the connection, which stays open) or CLOSED
        (closed, gracefully: ``linger`` as for FastCGIConnection). Else DECLINED, with the bytes
        read in ``taken``: the reference path serves the connection from there."""
        received, whole = self._receive_whole(sock)
        if whole is None:
            if received < 0:  # the web server sent nothing within the deadline
                sock.close()
                return CLOSED
            self.taken = bytes(self.buffer[:received])
            return DECLINED
        answer = _Answer(self, sock, whole)
        keep = answer.run() and whole.flags & FCGI_KEEP_CONN
        if not keep:
            if answer.gone is None:
                close_gracefully(sock, self.buffer, linger)
            else:
                sock.close()
        return KEEP if keep else CLOSED

    def _receive_whole(self, sock: socket.socket) -> tuple[int, WholeRequest | None]:
        """(bytes received, the request) once a whole request of the usual kind has arrived,
        else (bytes received, None) as soon as the input is anything else, ends, or fills the
        buffer; (-1, None) after a wait past its deadline (logged). The web server may send a
        request in more than one write, and may connect before it sends."""
        buffer, scanner = self.buffer, self.scanner
        received = 0
        while True:
            try:
                got = sock.recv_into(buffer[received:] if received else buffer, 0, NOWAIT)
            except BlockingIOError:
                if received and scanner.params_whole:
                    # The reference path would start the application now, and it may answer before
                    # the body comes (a refused PUT): wait no more than the gap between two writes.
                    if not wait(sock, select.POLLIN, BODY_GAP):
                        return received, None
                    continue
                timeout = self.read_timeout if received else self.idle_timeout
                if not wait(sock, select.POLLIN, timeout):
                    log.warning("closing connection: web server sent nothing %s for %gs",
                                "for the next record" if received else "for a request", timeout)
                    return -1, None
                continue
            except OSError:  # the reference path meets it again and reports it
                return received, None
            if not got:
                return received, None
            received += got
            consumed, whole = scanner.scan_received(received)
            if whole is not None:
                return (received, whole) if consumed == received and _usual(whole) else (received, None)
            if not scanner.incomplete or received == len(buffer):
                return received, None

    def close(self, sock: socket.socket, linger=None) -> None:
        """Close a kept connection that serves no more requests."""
        close_gracefully(sock, self.buffer, linger)


def _head_of_bytes(status, response_headers) -> tuple[bytes, bool]:
    """The header block of an answer given (partly) as bytes, which flup's bridge takes too, and
    whether it has a Content-Length."""
    if type(status) is str:
        status = status.encode("latin-1")
    assert type(status) is bytes, "Status must be a string"
    lines = [b"Status: ", status, b"\r\n"]
    has_length = False
    for name, value in response_headers:
        if type(name) is str:
            name = name.encode("latin-1")
        if type(value) is str:
            value = value.encode("latin-1")
        assert type(name) is bytes, f'Header name "{name}" must be bytes'
        assert type(value) is bytes, f'Value of header "{name}" must be bytes'
        lines += (name, b": ", value, b"\r\n")
        if len(name) == 14 and name.lower() == b"content-length":
            has_length = True
    return b"".join(lines), has_length


def _usual(whole: WholeRequest) -> bool:
    """Not a HEAD (its answer is cut to the header block: the reference path does that), and the
    body is what CONTENT_LENGTH says (else the reference path answers 413 or reports it short)."""
    params = whole.params
    if params.get("REQUEST_METHOD") == "HEAD":
        return False
    length = params.get("CONTENT_LENGTH", "")
    if whole.body or length not in ("", "0"):
        return length == str(len(whole.body))
    return True


class _Body(io.BytesIO):
    """wsgi.input: the body, already here; a multipart form feeds the C parser from it at once."""

    def feed_upload(self, upload) -> None:
        data = self.read()
        if data:
            upload.feed(data)


class _Errors:
    """wsgi.errors: to the process's stderr and, as FCGI_STDERR records, to the web server's log."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data) -> None:
        sys.stderr.write(data)
        if data:
            self.written.append(data.encode() if isinstance(data, str) else data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        sys.stderr.flush()


class _Answer:
    """One request through the lane: the application called, its answer framed and sent."""

    __slots__ = ("lane", "sock", "environ", "request_id", "describe", "started_at", "pending", "hold", "head",
                 "has_length", "declared", "overran", "headers_sent", "result", "written", "status", "body_bytes", "looked",
                 "aborted", "close_after", "cut_off", "gone", "errors", "after_answer")

    def __init__(self, lane: WholeRequestLane, sock: socket.socket, whole: WholeRequest) -> None:
        self.lane = lane
        self.sock = sock
        self.request_id = whole.request_id
        environ = self.environ = whole.params
        self.describe = f"{environ.get('REQUEST_METHOD', '-')} {environ.get('REQUEST_URI', '-')}"
        environ.update(lane.environ)
        environ["wsgi.input"] = _Body(whole.body)
        environ["wsgi.errors"] = self.errors = _Errors()
        environ["wsgi.url_scheme"] = "https" if environ.get("HTTPS", "off") in ("on", "1") else "http"
        self.pending: list = []  # writes not yet sent: (record type, head, body); head + body is a record's content
        self.hold = False        # the result is a list: everything goes with END_REQUEST
        self.head: bytes | None = None  # the header block but its empty line, from start_response
        self.has_length = False  # ... which include Content-Length
        self.declared: int | None = None  # its value, when a body is allowed: not a byte more is sent
        self.overran = False     # the application wrote past it (logged once)
        self.headers_sent = False
        self.result = None
        self.after_answer = None  # the result's close(), run once END_REQUEST is out (detach_close)
        self.written = False     # the header block was written (flup's stdout.dataWritten)
        self.status = 0          # for the access log
        self.body_bytes = 0
        self.looked = False      # the connection was looked at for an ABORT before output left
        self.aborted = False     # the web server aborted the request: its output is dropped
        self.close_after = False  # the connection is out of step, or the worker must go
        self.cut_off = False     # the answer cannot end well: it goes without END_REQUEST (gateway.cut_off)
        self.gone: OSError | None = None  # the web server went away while the answer was sent
        self.started_at = 0.0

    def run(self) -> bool:
        """Call the application and send its answer with END_REQUEST; False if the connection
        cannot serve another request."""
        gateway = self.lane.gateway
        if gateway.on_request_start is not None:
            gateway.on_request_start(self.describe)
        ended = False
        try:
            self.started_at = time.monotonic()
            started_wall = time.time() if gateway.access_log is not None else 0.0
            try:
                self._call_application(gateway)
            finally:
                if gateway.access_log is not None:
                    gateway.access_log.write(self.environ, self.status or 500, self.body_bytes, started_wall,
                                             time.monotonic() - self.started_at)
            ended = True
            gateway.request_ended()  # first: the answer's last bytes leave below
            if self.errors.written:
                self.pending.append((FCGI_STDERR, b"".join(self.errors.written), b""))
            self._send(ending=not self.cut_off)
        except RequestTimeout:  # the alarm rang between the application's end and END_REQUEST
            gateway.timed_out = True
            return False
        finally:
            if not ended:
                gateway.request_ended()
            if self.after_answer is not None:
                self.after_answer()
        if self.gone is not None:
            log.info("connection ended during %s: %s", self.describe, self.gone)
            return False
        return not (self.close_after or self.cut_off)

    def _call_application(self, gateway: FastCGIGateway) -> None:
        """flup's BaseFCGIServer.handler and Request.run, for a request that is all here."""
        environ = self.environ
        try:
            gateway._sanitizeEnv(environ)
            result, self.after_answer = detach_close(gateway.wsgi_app(environ, self.start_response))
            self.result = result
            self.hold = isinstance(result, (list, tuple))
            for data in result:
                if data:
                    self.write(data)
            if not self.headers_sent:
                self.write(b"")  # in case the body was empty
            if self.declared is not None and self.body_bytes < self.declared:
                self.cut_off = True
                cut_off(self.describe, response_head.SHORTFALL % (self.body_bytes, self.declared))
        except RequestTimeout:
            self.close_after = True
            gateway.timed_out = True  # (the worker logged it)
            if not self.written:
                self._write_own(error_answer(504, TIMED_OUT))
            elif not self.aborted:
                self.cut_off = True
        except RequestInputError as exc:
            status = log_input_error(environ, exc)
            self.close_after = True  # what is left of the input cannot be trusted
            if status and not self.written:
                self._write_own(error_answer(status, str(exc)))
            else:
                self.aborted = True
        except BaseException:  # (flup's Request.run takes everything the application raises)
            if self.gone is not None:
                return  # the web server went away: nobody to answer
            self.errors.written.append(traceback.format_exc().encode())
            if not self.written:
                log_application_error()
                self._write_own(APPLICATION_FAILED)
            elif not self.aborted:
                self.cut_off = True
                cut_off(self.describe, "the application failed after its answer began", exc_info=True)

    def start_response(self, status, response_headers, exc_info=None):
        """PEP 3333's start_response, with the checks of flup's; the header block (but for the
        Content-Length the first write may add) is made here."""
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])  # too late to change the answer
            finally:
                exc_info = None
        else:
            assert self.head is None, "Headers already set!"
        assert type(response_headers) is list, "Headers must be a list"
        has_length = hop = False
        length = None  # its value, if there is one Content-Length
        lines = ["Status: ", status, "\r\n"]
        try:  # the usual answer: str throughout, joined and encoded once, Content-Length seen on the way
            for name, value in response_headers:
                if name not in names_checked:
                    check_name(name)
                lines += (name, ": ", value, "\r\n")
                size = len(name)
                if size == 14 and name.lower() == "content-length":
                    length = None if has_length else value
                    has_length = True
                elif size in HOP_BY_HOP_LENGTHS and response_head.hop_by_hop(name, value):
                    hop = True
            head = "".join(lines).encode("latin-1")
        except TypeError:  # (a bytes name is no str Content-Length: its own pass finds it)
            response_head.check(status, response_headers)  # (each name too)
            head, has_length = _head_of_bytes(status, response_headers)
            hop = any(response_head.hop_by_hop(name, value) for name, value in response_headers)
        # Each line ends in the CRLF put there: any other control character is the application's.
        if len(head.translate(None, response_head.CONTROLS)) != len(head) - 2 * (len(response_headers) + 1):
            response_head.check(status, response_headers)
        code = final_status(status)
        self.declared = declared = None
        length_is_digits = length is not None and length.isascii() and length.isdigit()  # (digits.decimal, inline)
        if hop or has_length and (not length_is_digits or code == 204):  # headers the server drops: made again
            response_headers, declared = response_head.passed_on(response_headers, self._describe, code)
            head, has_length = _head_of_bytes(status, response_headers)
        elif length_is_digits:
            declared = int(length)
        if declared is not None and code >= 200 and code not in NO_BODY_STATUS:  # (the lane takes no HEAD)
            self.declared = declared
        if len(head) > response_head.APACHE_LINE_LIMIT:
            response_head.warn_of_lines_apache_refuses(response_headers, self._describe)
        self.head = head
        self.has_length = has_length
        return self.write

    def write(self, data) -> None:
        """WSGI's write: the header block before the first block; each write is one record."""
        if type(data) is not bytes:
            data = response_head.body_block(data)
        assert self.head is not None, "write() before start_response()"
        if self.declared is not None and self.body_bytes + len(data) > self.declared:
            data = self._cut_to_declared(data)
        if self.headers_sent:
            if not data:
                return
            self.body_bytes += len(data)
            head = b""
        else:
            self.headers_sent = True
            head = self.head
            if self.result is not None and not self.has_length:
                try:
                    if len(self.result) == 1:
                        head += b"Content-Length: %d\r\n" % len(data)
                except TypeError:  # a result without a length: it streams
                    pass
            head += b"\r\n"
            self.status = int(head[8:11])  # (after "Status: ")
            self.body_bytes = len(data)
        self.written = True
        self.pending.append((FCGI_STDOUT, head, data))
        if not self.hold:
            self._send()
            if self.gone is not None:
                raise self.gone  # (as a socket does: the application stops writing)

    def _describe(self) -> str:
        return self.describe

    def _cut_to_declared(self, data: bytes) -> bytes:
        """What of ``data`` fits the application's Content-Length (the web server would pass the
        rest on, where a client takes it for the start of the next answer)."""
        if not self.overran:
            self.overran = True
            log.warning("%s: " + response_head.OVERRUN, self.describe, self.declared)
        return data[:max(0, self.declared - self.body_bytes)]

    def _write_own(self, answer: bytes) -> None:
        """An answer of the server's own (an error page): header block and page in one write."""
        self.declared = None
        self.written = True
        self.status = int(answer[8:11])
        self.body_bytes = len(answer) - answer.index(b"\r\n\r\n") - 4
        self.pending.append((FCGI_STDOUT, answer, b""))

    def _send(self, ending: bool = False) -> None:
        """Send the writes pending (``ending``: END_REQUEST after them); the first time, after an
        application that ran long enough for a web server to give up on it, one look for an ABORT
        first. One write goes through C (sockio.send_answer), several as one list of records. A
        web server gone is kept in ``gone``, and raised to a writing application."""
        if not self.looked:
            self.looked = True
            if time.monotonic() - self.started_at >= ABORT_LOOK_AFTER and self._aborted_meanwhile():
                self.aborted = True
        pending, self.pending = self.pending, []
        if self.aborted:  # its output is dropped; END_REQUEST still ends it
            pending = []
        if self.gone is not None or not (pending or ending):
            return
        try:
            if len(pending) <= 1:
                record_type, head, body = pending[0] if pending else (FCGI_STDOUT, b"", b"")
                send_answer(self.sock, self.request_id, head, body, self.lane.read_timeout, ending, record_type)
            else:
                records: list = []
                for number, (record_type, head, body) in enumerate(pending, 1):
                    records += frame_answer(record_type, self.request_id, head + body,
                                            ending and number == len(pending))
                send_all(self.sock, records, self.lane.read_timeout)
        except OSError as exc:
            self.gone = exc

    def _aborted_meanwhile(self) -> bool:
        """One read that does not wait: did the web server abort this request? Anything else it
        sent after a whole request puts the connection out of step: it closes after the answer."""
        buffer = self.lane.buffer
        try:
            received = self.sock.recv_into(buffer, 0, NOWAIT)
        except OSError:  # BlockingIOError: nothing came
            return False
        if not received:
            return False  # the web server hung up; sending the answer shows it
        parser = RecordParser()
        parser.feed(buffer[:received])
        aborted = False
        try:
            while (record := parser.next_record()) is not None:
                if record.type == FCGI_ABORT_REQUEST and record.requestId == self.request_id:
                    aborted = True
                else:
                    self.close_after = True
        except ProtocolError:
            self.close_after = True
        if parser.pending:
            self.close_after = True
        if aborted:
            log.info("%s aborted by the web server", self.describe)
        return aborted
