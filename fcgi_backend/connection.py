"""One FastCGI connection with the web server: flup's Connection and Request, strict, bounded and faster.

flup runs the request (its WSGI bridge writes the output, its Request ends it); this module decides
what happens with bytes on the wire:

* records are read through a buffer (:class:`~fcgi_backend.records.RecordParser`) and written in
  batches, a small answer in one ``sendmsg``;
* each record must fit the state of the request it belongs to (BEGIN_REQUEST, then PARAMS to their
  end, then STDIN or one FCGI_X_STDIN stream to its end); one that does not (PARAMS again while the
  application runs, STDIN after its end, X_STDIN before the params end) is a protocol error: that
  connection is closed with a log line, the worker goes on. Records of a request id that is not
  active are ignored, as the FastCGI spec says;
* what a peer can make the backend hold is bounded: PARAMS by ``Limits.max_params``, body bytes sent
  before the params end by ``Limits.max_memory``;
* every wait on the peer has a deadline: ``idle_timeout`` for the first record of a request,
  ``Limits.read_timeout`` for each further wait inside one (every read and write is non-blocking,
  MSG_DONTWAIT, and waits are polls; the C readers of upload bodies poll with the same deadline);
* an answer leaves with its END_REQUEST as soon as the application is done, even if the application
  did not read its body; the rest of that input is then read and dropped (for at most
  ``_DRAIN_SECONDS`` and ``_DRAIN_BYTES``) so the connection stays in step for the next request,
  or closed;
* FCGI_ABORT_REQUEST ends input to the request and drops its output, also when the application
  never reads its input (the connection is looked at before the answer leaves);
* a closing connection shuts down its sending side and is read until the web server hangs up (for
  at most a second, by the worker's event loop while it goes on), so no write of the web
  server's (an empty FCGI_DATA record, say) meets a closed socket;
* the upload extension: after an FCGI_X_STDIN record, N raw body bytes follow on the socket
  (docs/PROTOCOL.md). The request's input stream reads them in Python for any WSGI reader, or
  hands the socket to the C multipart parser (:meth:`FastCGIInputStream.feed_upload`).
"""

from __future__ import annotations

import logging
import re
import select
import socket
import struct
import time

from flup.server.fcgi_base import (
    FCGI_BEGIN_REQUEST,
    FCGI_CANT_MPX_CONN,
    FCGI_END_REQUEST,
    FCGI_GET_VALUES_RESULT,
    FCGI_KEEP_CONN,
    FCGI_REQUEST_COMPLETE,
    FCGI_RESPONDER,
    FCGI_STDERR,
    FCGI_STDOUT,
    FCGI_BeginRequestBody,
    FCGI_EndRequestBody,
    Connection,
    InputStream,
    OutputStream,
    Record,
    Request,
)

from .errors import RequestInputError, RequestTimeout
from .sockio import NOWAIT, close_gracefully, send_all, wait
from .health import MAX_HEAD, health_answer
from .records import (
    FCGI_ABORT_REQUEST,
    FCGI_DATA,
    FCGI_GET_VALUES,
    FCGI_PARAMS,
    FCGI_STDIN,
    FCGI_X_STDIN,
    ANSWER_RECORD_MAX,
    HEADER,
    X_STDIN_LENGTH,
    ConnectionClosed,
    ProtocolError,
    RecordParser,
    StreamError,
    decode_params,
    encode_params,
)
from .response_head import OVERRUN, SHORTFALL

log = logging.getLogger("fcgi_backend.connection")

RECEIVE_BUFFER_SIZE = 256 * 1024
_FLUSH_AT = 256 * 1024  # queued output bytes that are sent without waiting for a flush
_MAX_PARTS = 512  # stay under the kernel's limit of buffers in one sendmsg
_DRAIN_SECONDS = 10.0  # after an answer, longest time spent reading and dropping the rest of its input
# ... and the most of it read so: past this a new connection costs less than the bytes (and a client
# sending a rejected upload learns of it when the web server closes, not after sending it all).
_DRAIN_BYTES = 1024 * 1024
_NULL_REQUEST_ID = 0
_END_REQUEST_BODY = struct.Struct(FCGI_EndRequestBody)
ABORT_LOOK_AFTER = 0.01  # seconds an application runs before its connection is looked at for an ABORT


class InputTimeout(ConnectionClosed):
    """The web server sent nothing for longer than the deadline of that wait."""


class FastCGIInputStream(InputStream):
    """A request's FCGI_STDIN, plus the raw FCGI_X_STDIN stream when the web server sends one."""

    def __init__(self, conn: "FastCGIConnection") -> None:
        super().__init__(conn)
        self.request_id = 0         # set when BEGIN_REQUEST is read
        self.records_received = 0   # body bytes that came in STDIN records
        self.discard = False        # the request has been answered: read what is left and drop it
        self.raw_length = None      # N of the X_STDIN record, once it arrived
        self.raw_remaining = 0      # raw bytes still on the socket

    def add_data(self, data: bytes) -> None:
        self.records_received += len(data)
        if self.discard and data:
            return
        super().add_data(data)

    @property
    def ended(self) -> bool:
        """The whole input has arrived (the empty STDIN record was read, or the request was aborted)."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read by the application."""
        return self._avail - self._pos

    def start_raw(self, length: int) -> None:
        self.raw_length = self.raw_remaining = length

    def _waitForData(self) -> None:
        if self.raw_remaining:
            data = self._conn.read_raw(self.raw_remaining)
            self.raw_remaining -= len(data)
            super().add_data(data)
        else:
            self._conn.process_input()

    def readline(self, size: int | None = -1) -> bytes:
        """io's readline: up to and with the next newline, at most ``size`` bytes (None or
        negative: no limit). flup's gave a whole line whatever the size once its newline had come,
        and nothing for -1; this one looks at each byte once, however long the line."""
        limit = -1 if size is None or size < 0 else size
        parts, taken = [], 0
        while taken != limit:
            if self._pos == len(self._buf):  # this piece is read: on to the next one received
                if self._bufList:
                    self._avail -= self._pos
                    self._buf, self._pos = self._bufList.pop(0), 0
                    continue
                if self._eof:
                    break
                self._waitForData()
                continue
            scan_end = len(self._buf) if limit < 0 else min(len(self._buf), self._pos + limit - taken)
            newline = self._buf.find(b"\n", self._pos, scan_end)
            end = scan_end if newline < 0 else newline + 1
            parts.append(self._buf[self._pos:end])
            taken += end - self._pos
            self._pos = end
            if newline >= 0:
                break
        self._shrinkBuffer()
        return b"".join(parts)

    def _take_buffered(self) -> bytes:
        """Every byte received and not yet read (flup keeps them in _buf[_pos:] and _bufList)."""
        parts = [self._buf[self._pos:]] if self._pos < len(self._buf) else []
        parts += self._bufList
        self._buf, self._bufList, self._pos, self._avail = b"", [], 0, 0
        return b"".join(parts)

    def feed_upload(self, upload) -> None:
        """Feed the rest of the body to a C multipart upload, the fastest way this input allows.

        STDIN records and an X_STDIN stream alike are read from the socket by C, with the GIL
        released; any other record that turns up meanwhile goes through the usual dispatch.
        """
        while True:
            data = self._take_buffered()
            if data:
                upload.feed(data)
            elif self.raw_remaining:
                prefix = self._conn.take_parsed_bytes(self.raw_remaining)
                self.raw_remaining -= len(prefix)
                if prefix:
                    upload.feed(prefix)
                if self.raw_remaining:
                    try:  # a body refused part way stops the read: the drain drops a little of the rest, or closes
                        upload.read_fd(self._conn.fileno(), self.raw_remaining)
                    finally:
                        self.raw_remaining = upload.fd_unread
            elif self._eof:
                return
            elif self.raw_length is None and self._conn.feed_stdin_records(self, upload):
                self._eof = True
            else:
                self._conn.process_input()  # one record that is not this request's STDIN


def cut_off(describe: str, why: str, exc_info: bool = False) -> None:
    """Log an answer that cannot end as it should (the application failed part way, or its body
    ended short of its Content-Length). It goes without END_REQUEST, its connection closed: a web
    server passes that on as an answer broken off (a chunked answer without its last chunk, a
    connection closed short of its Content-Length), where END_REQUEST would have made the part
    sent look like the whole answer to its client, and to any cache on the way."""
    log.log(logging.ERROR if exc_info else logging.WARNING, "%s: %s; the answer is cut off (no END_REQUEST, "
            "so the client sees it incomplete)", describe, why, exc_info=exc_info)


_STATUS = re.compile(rb"(?:^|\r\n)Status:[ \t]*(\d{3})", re.IGNORECASE)


class FastCGIOutputStream(OutputStream):
    """FCGI_STDOUT / FCGI_STDERR that drops what is written once the web server aborted the request,
    and sends its records when flushed (flup's WSGI bridge flushes after each write).

    With ``hold`` set (the application returned a list: every block already exists) flushes only
    turn data into records; they go out with END_REQUEST, in one system call for a small page.
    """

    hold = False
    _held: list       # written since the last flush, not yet framed
    _held_size = 0
    counting = False  # the access log wants the answer's status and size (set per request)
    status = 0        # of the answer, once its header block is written
    body_bytes = 0    # written after the header block
    _head = b""       # the header block so far, while it is incomplete
    declared: int | None = None  # the application's Content-Length (a body allowed): not a byte more is sent
    declared_written = 0  # body bytes the application wrote while it holds (those past it dropped)
    cut_off = False   # the answer cannot end as it should: it goes without END_REQUEST (cut_off())

    def __init__(self, conn, req, type, buffered=False) -> None:
        super().__init__(conn, req, type, buffered)
        self._held = []

    def write(self, data) -> None:
        if self.declared is not None and self.dataWritten and data:  # (the first write is flup's header block)
            data = self._within_declared(data)
        if self.counting and data:
            self._account(data)
        super().write(data)

    def write_own(self, answer: bytes) -> None:
        """An answer of the server's own (an error page, header block and all), instead of the
        application's."""
        self.declared = None
        self.write(answer)

    def _within_declared(self, data) -> bytes:
        """What of ``data`` fits the application's Content-Length (a web server that passes the
        length on would pass the rest too, for the client to take as the start of the next answer)."""
        before, self.declared_written = self.declared_written, self.declared_written + len(data)
        if self.declared_written <= self.declared:
            return data
        if before <= self.declared:  # the write that goes past it: logged once
            log.warning("%s: " + OVERRUN, self._req.describe(), self.declared)
        return data[:max(0, self.declared - before)]

    def short_of_declared(self) -> bool:
        return self.declared is not None and self.declared_written < self.declared

    def _account(self, data) -> None:
        """Status and body size of the answer, read from what the application's bridge writes."""
        if self.status:
            self.body_bytes += len(data)
            return
        self._head += bytes(data)
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > 65536:  # no header block: not a CGI answer
                self.status, self._head = 500, b""
            return
        match = _STATUS.search(self._head, 0, end)
        self.status = int(match.group(1)) if match else 200  # CGI: no Status header means 200
        self.body_bytes = len(self._head) - end - 4
        self._head = b""

    def _write(self, data: bytes) -> None:
        """Keep ``data`` until the next flush, which frames everything written since as one record
        (flup's bridge writes a page's header block and its first block apart, then flushes: a web
        server reads each record with a poll and two or three reads)."""
        if self._req.aborted:
            return
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size >= ANSWER_RECORD_MAX:
            self._frame_held()

    def _frame_held(self) -> None:
        """What was written since the last flush, as records straight into the connection's queue
        (flup builds a Record object for each)."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held, self._held_size = [], 0
        if self._req.aborted:
            return
        queue, request_id = self._conn.queue_record, self._req.requestId
        if len(data) <= ANSWER_RECORD_MAX:
            queue(self._type, request_id, data)
            return
        view = memoryview(data)
        for start in range(0, len(data), ANSWER_RECORD_MAX):
            queue(self._type, request_id, view[start:start + ANSWER_RECORD_MAX])

    def close(self) -> None:
        """The stream's last records. No empty record ends it: END_REQUEST, which follows, ends the
        answer for every web server, as php-fpm has it (Apache polls and reads for each record)."""
        if not self.closed and self.dataWritten:
            self.flush()
            self.closed = True

    def flush(self) -> None:
        super().flush()  # (a buffered stream, FCGI_STDERR: its buffer to _write)
        self._frame_held()
        if not self.hold:
            self._conn.flush_output(self._req)


class HeadOutputStream(FastCGIOutputStream):
    """FCGI_STDOUT of a HEAD request: only the first write, flup's header block, is kept."""

    def write(self, data) -> None:
        if not self.dataWritten:
            super().write(data)


class FastCGIRequest(Request):
    """flup's Request plus the state this server keeps: params so far, started, aborted, answered."""

    def __init__(self, conn: "FastCGIConnection", inputStreamClass, timeout) -> None:
        # flup's Request.__init__ would make four streams, two of which this class replaces and
        # one (FCGI_DATA, the Filter role's) a responder never reads: its attributes are set here.
        self._conn = conn
        self._timeout = timeout
        self.server = conn.server
        self.params = {}
        self.stdin = inputStreamClass(conn)
        self.stdout = FastCGIOutputStream(conn, self, FCGI_STDOUT)
        self.stderr = FastCGIOutputStream(conn, self, FCGI_STDERR, buffered=True)
        self.data = None
        self.params_bytes = bytearray()
        self.started = False     # the params ended and the application was called
        self.started_at = 0.0    # when (monotonic)
        self.aborted = False
        self.answered = False    # END_REQUEST was sent
        self.output_checked = False  # the connection was looked at for an ABORT before output left
        self.after_answer = None  # the application result's close(), run once END_REQUEST is out

    def run(self) -> None:
        """flup's run (the application, then END_REQUEST), then the result's close()."""
        try:
            super().run()
        finally:
            after_answer, self.after_answer = self.after_answer, None
            if after_answer is not None:
                after_answer()

    def release(self) -> None:
        """Once answered: drop the references that make the request, its streams and its environ
        a cycle, so they are freed as soon as they are done with, not by the cyclic collector
        (which ran every fifty requests or so, walking every object of the request in hand)."""
        self.params = {}
        self.stdout._req = self.stderr._req = None

    @property
    def keep_conn(self) -> bool:
        return bool(self.flags & FCGI_KEEP_CONN)

    def describe(self) -> str:
        """'METHOD URI' for log lines."""
        return f"{self.params.get('REQUEST_METHOD', '-')} {self.params.get('REQUEST_URI', '-')}"


class FastCGIConnection(Connection):
    """A connection with the web server, serving one request at a time (no multiplexing).

    The worker calls :meth:`serve_request` once per request; it returns whether the connection may
    serve another (the web server asked for FCGI_KEEP_CONN and the input is in step).
    """

    _inputStreamClass = FastCGIInputStream
    _HANDLERS = {
        FCGI_GET_VALUES: "_do_get_values",
        FCGI_BEGIN_REQUEST: "_do_begin_request",
        FCGI_ABORT_REQUEST: "_do_abort_request",
        FCGI_PARAMS: "_do_params",
        FCGI_STDIN: "_do_stdin",
        FCGI_DATA: "_do_data",
        FCGI_X_STDIN: "_do_x_stdin",
    }

    def __init__(self, sock: socket.socket, addr, server, linger=None, received: bytes = b"") -> None:
        super().__init__(sock, addr, server, None)
        self.limits = server.limits
        self._linger = linger  # takes a shut-down socket and reads it until the peer hangs up
        self._parser = RecordParser()
        if received:  # read already, by the whole-request lane, which left this connection's input to us
            self._parser.feed(received)
        self._closed = False
        self._pending: list[bytes] = []  # records written and not yet sent
        self._pending_size = 0
        # The worker's receive buffer (one connection at a time): a fresh 256 KiB per recv costs an
        # mmap, mremap and munmap, and zeroing one per connection a tenth of a small request.
        self._recv_buffer = server.receive_buffer
        self.request: FastCGIRequest | None = None  # from BEGIN_REQUEST until its input is drained
        self._drain_deadline = 0.0  # while draining an answered request's input: when to give up
        self.close_after_request = False  # the input is out of step, or the worker stops: no next request

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the request cycle ---------------------------------------------------------------------

    def serve_request(self) -> bool:
        """Read records until one request has been answered and its input drained; True if the
        connection can serve another request. Bad input or a peer that goes away ends it here."""
        self._keepGoing = True
        try:
            self._run_whole_request()
            while True:
                req = self.request
                if req is not None and req.answered:
                    self.request = None
                    req.release()
                    if req.keep_conn and not self.close_after_request and req.stdin.ended:
                        return True
                    self.close()
                    return False
                if not self._keepGoing:
                    break
                self.process_input()
        except InputTimeout as exc:
            log.warning("closing connection: %s", exc)
        except ConnectionClosed as exc:
            if str(exc):
                log.warning("closing connection: %s", exc)
        except ProtocolError as exc:
            if self._answered_health_check():
                return False
            log.warning("closing connection after malformed FastCGI input: %s", exc)
        except OSError as exc:
            during = f" during {self.request.describe()}" if self.request is not None else ""
            log.info("connection ended%s: %s", during, exc)
        except RequestTimeout:  # the alarm rang between the application's end and END_REQUEST
            self.server.timed_out = True
        self.close(graceful=False)
        return False

    def _run_whole_request(self) -> None:
        """The usual request, all of whose records are already here, taken in one C call
        (records.WholeRequestScanner) and run: the same request object, in the same state, as the
        record-by-record path makes of it, without building a Record per record. Any other input
        is left to that path."""
        if self.request is not None or not self.server.scan_whole_requests:
            return
        scanner = self.server.whole_request_scanner
        if self._parser.pending:  # (the next request on a kept connection, received with the last)
            whole = self._parser.take_whole_request(scanner)
        else:
            whole = self._parser.take_whole_received(scanner, self._receive_into_buffer())
        if whole is None:
            return
        req = self._new_request(whole.request_id, FCGI_RESPONDER, whole.flags)
        if whole.body:
            req.stdin.add_data(whole.body)
        req.stdin.add_data(b"")  # the empty STDIN record: the input is complete
        req.params = whole.params
        req.started = True
        req.started_at = time.monotonic()
        self._start_request(req)

    def _new_request(self, request_id: int, role: int, flags: int) -> "FastCGIRequest":
        req = self.server.request_class(self, self._inputStreamClass, None)
        req.requestId, req.role, req.flags = request_id, role, flags
        req.stdin.request_id = request_id
        self._requests = {request_id: req}
        self.request = req
        return req

    def _answered_health_check(self) -> bool:
        """The connection's first bytes were an HTTP request (mod_proxy_hcheck's hcmethod=GET):
        answered and closed (health.py)."""
        if self._parser.records_returned:
            return False
        answer = health_answer(self._parser.head(MAX_HEAD), self.server.ping_path)
        if answer is None:
            return False
        try:
            send_all(self._sock, [answer], self.limits.read_timeout)
        except OSError:
            pass
        self.close()
        return True

    def has_buffered_record(self) -> bool:
        """A whole record is already received: the next request needs no wait on the socket."""
        return self._parser.has_record()

    def run(self) -> None:
        """Serve requests until the connection closes (flup's entry point; the worker uses serve_request)."""
        while self.serve_request():
            pass

    def process_input(self) -> None:
        """Read and act on exactly one record (flup's InputStream calls this while the app reads)."""
        rec = self._parser.next_record()
        while rec is None:
            self._receive()
            rec = self._parser.next_record()
        handler = self._HANDLERS.get(rec.type)
        if handler is None:
            self._do_unknown_type(rec)
            self.flush_output()
        else:
            getattr(self, handler)(rec)

    def _receive(self) -> None:
        """One recv into the parser, waiting up to the deadline that fits the state."""
        received = self._receive_into_buffer()
        self._parser.feed(self._recv_buffer[:received])

    def _receive_into_buffer(self) -> int:
        """One recv into the worker's receive buffer (its length returned), waiting up to the
        deadline that fits the state; the peer's hang-up is ConnectionClosed."""
        while True:
            try:
                received = self._sock.recv_into(self._recv_buffer, 0, NOWAIT)
                break
            except BlockingIOError:
                self._wait_readable()
        if not received:
            if self._parser.pending:
                raise ConnectionClosed(f"web server closed the connection inside a record "
                                       f"({self._parser.pending} bytes of it received)")
            if self.request is not None and not self.request.answered:
                raise ConnectionClosed(f"web server closed the connection during {self.request.describe()}")
            raise ConnectionClosed()
        return received

    def _wait_readable(self) -> None:
        in_request = self.request is not None or self._parser.pending
        timeout = self._within_drain(self.limits.read_timeout if in_request else self.server.idle_timeout)
        if not wait(self._sock, select.POLLIN, timeout):
            what = f"during {self.request.describe()}" if self.request and self.request.started else \
                "for the next record" if in_request else "for a request"
            raise InputTimeout(f"web server sent nothing {what} for {timeout:g}s")

    def _within_drain(self, timeout: float) -> float:
        """A wait's timeout, shortened to what is left of the drain's time while draining."""
        if self._drain_deadline:
            return max(0.0, min(timeout, self._drain_deadline - time.monotonic()))
        return timeout

    # -- records -------------------------------------------------------------------------------

    def _active(self, inrec: Record) -> FastCGIRequest | None:
        """The request a record belongs to, or None if its id is not active (the record is ignored)."""
        req = self.request
        return req if req is not None and req.requestId == inrec.requestId else None

    def _do_begin_request(self, inrec: Record) -> None:
        if inrec.contentLength != struct.calcsize(FCGI_BeginRequestBody):
            raise ProtocolError(f"BEGIN_REQUEST body is {inrec.contentLength} bytes, expected 8")
        if inrec.requestId == _NULL_REQUEST_ID:
            raise ProtocolError("BEGIN_REQUEST with request id 0")
        if self.request is not None:
            if self.request.requestId == inrec.requestId:
                raise ProtocolError(f"BEGIN_REQUEST for request {inrec.requestId}, which is already active")
            # One request at a time, as FCGI_MPXS_CONNS=0 told: refuse the other, as the spec says.
            self._write_end_request(inrec.requestId, 0, FCGI_CANT_MPX_CONN)
            self.flush_output()
            return
        role, flags = struct.unpack(FCGI_BeginRequestBody, inrec.contentData)
        self._new_request(inrec.requestId, role, flags)

    def _do_params(self, inrec: Record) -> None:
        req = self._active(inrec)
        if req is None:
            return
        if req.started:
            raise ProtocolError(f"PARAMS for request {inrec.requestId} after its params ended")
        if inrec.contentLength:
            req.params_bytes += inrec.contentData
            if len(req.params_bytes) > self.limits.max_params:
                raise ProtocolError(f"PARAMS exceed the limit of {self.limits.max_params} bytes")
            return
        req.params = decode_params(bytes(req.params_bytes))
        req.params_bytes = bytearray()
        req.started = True
        req.started_at = time.monotonic()
        self._start_request(req)

    def _do_stdin(self, inrec: Record) -> None:
        req = self._active(inrec)
        if req is None:
            return
        if req.stdin.ended and not req.aborted:
            raise ProtocolError(f"STDIN for request {inrec.requestId} after the end of its input")
        if inrec.contentLength and req.stdin.raw_length is not None:
            raise StreamError(400, "FCGI_STDIN data after the FCGI_X_STDIN stream (only an empty STDIN may follow)")
        if not req.started and req.stdin.buffered + inrec.contentLength > self.limits.max_memory:
            raise ProtocolError(f"more than {self.limits.max_memory} bytes of STDIN before the params ended")
        if req.stdin.records_received + inrec.contentLength > self.limits.max_body and not req.stdin.discard:
            raise StreamError(413, self.limits.body_too_large())
        req.stdin.add_data(inrec.contentData)

    def _do_data(self, inrec: Record) -> None:
        """FCGI_DATA is for the Filter role, which this responder does not play: its content is dropped."""

    def _do_x_stdin(self, inrec: Record) -> None:
        """The upload extension: N raw body bytes follow this record on the socket."""
        if inrec.contentLength != X_STDIN_LENGTH.size:
            raise StreamError(400, f"FCGI_X_STDIN record content is {inrec.contentLength} bytes, expected 4")
        (length,) = X_STDIN_LENGTH.unpack(inrec.contentData)
        req = self._active(inrec)
        if req is None:
            self._skip_raw(length)  # a request that is not active: its raw bytes are skipped
            return
        if not req.started:
            raise ProtocolError("FCGI_X_STDIN before the params ended")
        if req.stdin.raw_length is not None or req.stdin.records_received:
            raise StreamError(400, "FCGI_X_STDIN after body data was already sent for this request")
        if req.answered:  # answered without reading its body: the drain drops the bytes, or closes
            req.stdin.start_raw(length)
            return
        if length > self.limits.max_body:
            raise StreamError(413, self.limits.body_too_large(length))
        req.stdin.start_raw(length)

    def _do_abort_request(self, inrec: Record) -> None:
        req = self._active(inrec)
        if req is None or req.answered:
            return
        log.info("%s aborted by the web server", req.describe() if req.started else f"request {req.requestId}")
        req.aborted = True
        self._pending, self._pending_size = [], 0  # its output not yet sent is dropped too
        req.stdin.add_data(b"")  # input ends: the application's next read sees end of file
        if not req.started:
            self.end_request(req, 0, FCGI_REQUEST_COMPLETE)

    def _do_get_values(self, inrec: Record) -> None:
        answer = []
        for name in decode_params(inrec.contentData):
            cap = self.server.capability.get(name)
            if cap is not None:
                answer.append((name, str(cap)))
        outrec = Record(FCGI_GET_VALUES_RESULT)
        outrec.contentData = encode_params(answer)
        outrec.contentLength = len(outrec.contentData)
        self.writeRecord(outrec)
        self.flush_output()

    # -- reading the upload extension and the C fast paths --------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def take_parsed_bytes(self, limit: int) -> bytes:
        """Bytes received past the last record, up to ``limit`` (the start of a raw stream)."""
        return self._parser.take(limit)

    def feed_stdin_records(self, stdin: FastCGIInputStream, upload) -> bool:
        """Let C read ``stdin``'s STDIN records from the socket into ``upload``; True once the body
        is complete. Whatever C read past them goes back to the record parser."""
        if self._parser.pending > upload.STDIN_HANDOVER_MAX:
            return False  # rare: let the Python path work through the backlog first
        before = upload.bytes_in
        ended, rest = upload.read_stdin_records(self.fileno(), stdin.request_id, self._parser.take(self._parser.pending))
        self._parser.feed(rest)
        stdin.records_received += upload.bytes_in - before
        upload.check()  # a body refused part way: its 413 goes out now, and the rest is not read on
        return ended

    def read_raw(self, limit: int) -> bytes:
        """Up to ``limit`` raw stream bytes: buffered ones first, else one recv (with the read deadline)."""
        data = self._parser.take(limit)
        if data:
            return data
        while True:
            try:
                data = self._sock.recv(min(limit, RECEIVE_BUFFER_SIZE), NOWAIT)
                break
            except BlockingIOError:
                timeout = self._within_drain(self.limits.read_timeout)
                if not wait(self._sock, select.POLLIN, timeout):
                    raise InputTimeout(f"web server sent nothing of the FCGI_X_STDIN stream for "
                                       f"{timeout:g}s ({limit} bytes still to come)") from None
        if not data:
            raise ConnectionClosed(f"web server closed the connection with {limit} bytes of the "
                                   f"FCGI_X_STDIN stream still to come")
        return data

    def _skip_raw(self, length: int) -> None:
        while length:
            length -= len(self.read_raw(length))

    # -- ending a request ----------------------------------------------------------------------

    def end_request(self, req, appStatus=0, protocolStatus=FCGI_REQUEST_COMPLETE, remove=True) -> None:
        """The answer is complete: send it with END_REQUEST now, then read and drop what is left of
        the request's input, so the next request on this connection starts in step."""
        self.server.request_ended()  # first: the answer's last bytes leave below
        req.stdin.discard = True  # the application is done with its input: what comes is dropped, not checked
        self._check_for_abort(req)
        stdout = req.stdout
        if stdout.short_of_declared() and not req.aborted:
            stdout.cut_off = True
            cut_off(req.describe(), SHORTFALL % (stdout.declared_written, stdout.declared))
        if stdout.cut_off and not req.aborted:
            self.close_after_request = True
        else:
            self._write_end_request(req.requestId, appStatus, protocolStatus)
        self.flush_output()
        req.answered = True
        self._requests = {}
        self._keepGoing = False  # serve_request returns once the input is drained
        if not req.stdin.ended and not self.close_after_request:
            self._drain_input(req)

    def _write_end_request(self, request_id: int, app_status: int, protocol_status: int) -> None:
        self.queue_record(FCGI_END_REQUEST, request_id, _END_REQUEST_BODY.pack(app_status, protocol_status))

    def _drain_input(self, req: FastCGIRequest) -> None:
        """Read and drop the request's remaining input (up to its empty STDIN), so that the next
        request on the connection starts in step; past _DRAIN_SECONDS or _DRAIN_BYTES the
        connection closes instead (its lingering close still reads what the web server writes
        meanwhile: a write that met a closed socket could fail a request already answered)."""
        stdin = req.stdin  # (discarding since end_request)
        self._drain_deadline = time.monotonic() + _DRAIN_SECONDS
        dropped = 0
        try:
            while not stdin.ended:
                if dropped + stdin.raw_remaining > _DRAIN_BYTES:
                    log.info("%s: answered; more than %d bytes of its input are left: closing instead of "
                             "reading them", req.describe(), _DRAIN_BYTES)
                    self.close_after_request = True
                    return
                if stdin.raw_remaining:
                    received = len(self.read_raw(stdin.raw_remaining))
                    stdin.raw_remaining -= received
                else:
                    before = stdin.records_received
                    self.process_input()
                    received = stdin.records_received - before
                dropped += received
        except InputTimeout:
            log.info("%s: answered; the rest of its input did not arrive within %gs, closing", req.describe(),
                     _DRAIN_SECONDS)
            self.close_after_request = True
        except ProtocolError:
            self.close_after_request = True
            raise  # serve_request logs it and closes
        except (OSError, RequestInputError):
            self.close_after_request = True  # the web server went away or broke off: nothing to keep in step
        finally:
            self._drain_deadline = 0.0

    def _check_for_abort(self, req: FastCGIRequest) -> None:
        """Before an answer first leaves: act on the records that already arrived (an ABORT_REQUEST
        drops the output), after one look at the socket that does not wait, if the application
        ran long enough for a web server to give up on it (the look costs a system call a fast
        request does without). What is taken is bounded by what one read brings; a raw X_STDIN
        stream is left for the drain."""
        if req.output_checked or self._closed:
            return
        req.output_checked = True
        if not req.stdin.ended and self._parser.take_end_of_stream(FCGI_STDIN, req.requestId):
            req.stdin.add_data(b"")  # the usual case, taken without the general dispatch
        self._act_on_received_records(req)
        if time.monotonic() - req.started_at >= ABORT_LOOK_AFTER and not self._parser.has_record():
            try:
                received = self._sock.recv_into(self._recv_buffer, 0, NOWAIT)
            except OSError:  # BlockingIOError: nothing came
                return
            if not received:
                return  # the web server hung up; sending the answer will show it
            self._parser.feed(self._recv_buffer[:received])
            self._act_on_received_records(req)

    def _act_on_received_records(self, req: FastCGIRequest) -> None:
        """Dispatch the whole records already received, up to a raw X_STDIN stream (left for the
        drain) or the next request's BEGIN_REQUEST."""
        while (self._parser.has_record() and not req.aborted and not req.stdin.raw_remaining
               and self._parser.peek_type() not in (FCGI_X_STDIN, FCGI_BEGIN_REQUEST)):
            self.process_input()

    # -- writing -------------------------------------------------------------------------------

    def writeRecord(self, rec: Record) -> None:
        """Queue a record (header, content, padding); :meth:`flush_output` sends the queue."""
        self.queue_record(rec.type, rec.requestId, rec.contentData)

    def queue_record(self, rec_type: int, request_id: int, content) -> None:
        """Queue a record of at most 64 KiB of ``content``; :meth:`flush_output` sends the queue."""
        length = len(content)
        # No padding: the spec recommends it for alignment, and Apache reads it with a call of its own.
        self._pending.append(HEADER.pack(1, rec_type, request_id, length, 0))
        if length:
            self._pending.append(content)
        self._pending_size += 8 + length
        if self._pending_size >= _FLUSH_AT or len(self._pending) >= _MAX_PARTS:
            self.flush_output()

    def flush_output(self, req: FastCGIRequest | None = None) -> None:
        """Send every queued record with one system call where the kernel allows."""
        if req is not None:
            self._check_for_abort(req)
            if req.aborted:
                self._pending, self._pending_size = [], 0
                return
        if self._pending:
            parts, size, self._pending, self._pending_size = self._pending, self._pending_size, [], 0
            send_all(self._sock, parts, self.limits.read_timeout, size)

    def close(self, graceful: bool = True) -> None:
        """Send what is queued and close; ``graceful``: as sockio.close_gracefully, lingering in
        the worker's event loop (``linger``) when the web server has not hung up yet."""
        if self._closed:
            return
        self._closed = True
        self._keepGoing = False
        if graceful:
            try:
                self.flush_output()
            except OSError:
                graceful = False
        if graceful:
            close_gracefully(self._sock, self._recv_buffer, self._linger)
        else:
            self._sock.close()

    _cleanupSocket = close  # what flup calls
