"""One FastCGI connection with the web server: flup's Connection and Request, hardened and faster.

flup does the dispatching, the request streams and END_REQUEST; this module changes what it does
with bytes on the wire:

* records are read through a buffer (:class:`~fcgi_backend.records.RecordParser`) instead of three
  recv calls each, and written in batches: what a WSGI write() produces goes out in one sendmsg,
  and the end of the output with END_REQUEST in another;
* malformed input (bad version, truncated record, bad name-value lengths, a short BEGIN_REQUEST)
  closes this connection with a log line; the process lives;
* PARAMS are decoded once the stream ends, so a pair split across two records is read correctly;
* FCGI_ABORT_REQUEST ends a request that has not started, and stops input to and output from one
  that has;
* every record type the server does not know is answered with FCGI_UNKNOWN_TYPE;
* closing never blocks for long on a peer that keeps the socket open;
* the upload extension: after an FCGI_X_STDIN record, N raw body bytes follow on the socket
  (docs/PROTOCOL.md). The request's input stream reads them in Python for any WSGI reader, or
  hands the socket to the C multipart parser (:meth:`FastCGIInputStream.feed_upload`).
"""

from __future__ import annotations

import logging
import socket
import struct
import time

from flup.server.fcgi_base import (
    FCGI_BEGIN_REQUEST,
    FCGI_BeginRequestBody,
    FCGI_GET_VALUES_RESULT,
    FCGI_REQUEST_COMPLETE,
    Connection,
    InputStream,
    OutputStream,
    Record,
    Request,
)

from .records import (
    FCGI_ABORT_REQUEST,
    FCGI_DATA,
    FCGI_GET_VALUES,
    FCGI_PARAMS,
    FCGI_STDIN,
    FCGI_X_STDIN,
    HEADER,
    X_STDIN_LENGTH,
    ConnectionClosed,
    ProtocolError,
    RecordParser,
    StreamError,
    decode_params,
    encode_params,
    padding_for,
)
from .errors import RequestInputError

log = logging.getLogger("fcgi_backend.connection")

RECEIVE_BUFFER_SIZE = 256 * 1024
_PADDING = bytes(8)
_FLUSH_AT = 256 * 1024  # queued output bytes that are sent without waiting for a flush
_MAX_PARTS = 512  # stay under the kernel's limit of buffers in one sendmsg
_INPUT_REST_SECONDS = 10.0  # longest wait for the rest of a request's input after it was answered
# How long a closing connection waits for the web server to hang up before closing anyway.
_CLOSE_DRAIN_SECONDS = 1.0


class FastCGIInputStream(InputStream):
    """A request's FCGI_STDIN, plus the raw FCGI_X_STDIN stream when the web server sends one."""

    def __init__(self, conn: "FastCGIConnection") -> None:
        super().__init__(conn)
        self.request_id = 0         # set when BEGIN_REQUEST is read
        self.records_received = 0   # body bytes that came in STDIN records
        self.discard = False        # the request has ended: read what is left and drop it
        self.raw_length = None      # N of the X_STDIN record, once it arrived
        self.raw_remaining = 0      # raw bytes still on the socket

    def add_data(self, data: bytes) -> None:
        self.records_received += len(data)
        if self.discard and data:
            return
        super().add_data(data)

    @property
    def ended(self) -> bool:
        """The whole input has arrived (the empty STDIN record was read)."""
        return self._eof

    def start_raw(self, length: int) -> None:
        self.raw_length = self.raw_remaining = length

    def _waitForData(self) -> None:
        if self.raw_remaining:
            data = self._conn.read_raw(self.raw_remaining)
            self.raw_remaining -= len(data)
            super().add_data(data)
        else:
            self._conn.process_input()

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
                    left, self.raw_remaining = self.raw_remaining, 0
                    upload.read_fd(self._conn.fileno(), left)
            elif self._eof:
                return
            elif self.raw_length is None and self._conn.feed_stdin_records(self, upload):
                self._eof = True
            else:
                self._conn.process_input()  # one record that is not this request's STDIN


class AbortableOutputStream(OutputStream):
    """FCGI_STDOUT / FCGI_STDERR that drops what is written once the web server aborted the request,
    and sends its records when flushed (flup's WSGI bridge flushes after each write).

    With ``hold`` set (the application returned a list: every block already exists) flushes only
    turn data into records; they go out with END_REQUEST, in one system call for a small page.
    """

    hold = False

    def _write(self, data: bytes) -> None:
        if not self._req.aborted:
            super()._write(data)

    def flush(self) -> None:
        super().flush()
        if not self.hold:
            self._conn.flush_output()


class FastCGIRequest(Request):
    """flup's Request plus the state this server needs: params bytes so far, started, aborted."""

    def __init__(self, conn: "FastCGIConnection", inputStreamClass, timeout) -> None:
        super().__init__(conn, inputStreamClass, timeout)
        self.stdout = AbortableOutputStream(conn, self, self.stdout._type)
        self.stderr = AbortableOutputStream(conn, self, self.stderr._type, buffered=True)
        self.params_bytes = bytearray()
        self.started = False
        self.aborted = False


class FastCGIConnection(Connection):
    """A connection with the web server, serving one request at a time (no multiplexing)."""

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

    def __init__(self, sock: socket.socket, addr, server, timeout=None, before_close=None) -> None:
        super().__init__(sock, addr, server, timeout)
        self._parser = RecordParser()
        self._closed = False
        self._before_close = before_close
        self._pending: list[bytes] = []  # records written and not yet sent
        self._pending_size = 0
        # The worker's receive buffer (one connection at a time): a fresh 256 KiB per recv costs an
        # mmap, mremap and munmap, and zeroing one per connection a tenth of a small request.
        self._recv_buffer = server.receive_buffer
        self.close_after_request = False  # the input is out of step: no further request on it

    # -- reading -------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve records until the web server hangs up, a request ends without KEEP_CONN, or bad input."""
        self._keepGoing = True
        try:
            while self._keepGoing:
                self.process_input()
        except ConnectionClosed as exc:
            if str(exc):
                log.warning("closing connection: %s", exc)
        except ProtocolError as exc:
            log.warning("closing connection after malformed FastCGI input: %s", exc)
        except OSError as exc:
            log.info("connection ended: %s", exc)
        finally:
            self._cleanupSocket()

    def process_input(self) -> None:
        """Read and act on exactly one record (flup's InputStream calls this while the app reads)."""
        rec = self._parser.next_record()
        while rec is None:
            received = self._sock.recv_into(self._recv_buffer)
            if not received:
                if self._parser.pending:
                    raise ConnectionClosed(
                        f"web server closed the connection inside a record "
                        f"({self._parser.pending} bytes of it received)")
                raise ConnectionClosed()
            self._parser.feed(self._recv_buffer[:received])
            rec = self._parser.next_record()
        handler = self._HANDLERS.get(rec.type)
        if handler is None:
            self._do_unknown_type(rec)
            self.flush_output()
        else:
            getattr(self, handler)(rec)

    def _do_begin_request(self, inrec: Record) -> None:
        if inrec.contentLength != struct.calcsize(FCGI_BeginRequestBody):
            raise ProtocolError(f"BEGIN_REQUEST body is {inrec.contentLength} bytes, expected 8")
        super()._do_begin_request(inrec)
        req = self._requests.get(inrec.requestId)
        if req is not None:
            req.stdin.request_id = inrec.requestId

    def _do_params(self, inrec: Record) -> None:
        req = self._requests.get(inrec.requestId)
        if req is None:
            return
        if inrec.contentLength:
            req.params_bytes += inrec.contentData
            return
        req.params = decode_params(bytes(req.params_bytes))
        req.params_bytes = bytearray()
        req.started = True
        self._start_request(req)

    def _do_stdin(self, inrec: Record) -> None:
        req = self._requests.get(inrec.requestId)
        if req is not None and inrec.contentLength and req.stdin.raw_length is not None:
            raise StreamError(400, "FCGI_STDIN data after the FCGI_X_STDIN stream (only an empty STDIN may follow)")
        super()._do_stdin(inrec)

    def _do_x_stdin(self, inrec: Record) -> None:
        """The upload extension: N raw body bytes follow this record on the socket."""
        if inrec.contentLength != X_STDIN_LENGTH.size:
            raise StreamError(400, f"FCGI_X_STDIN record content is {inrec.contentLength} bytes, expected 4")
        (length,) = X_STDIN_LENGTH.unpack(inrec.contentData)
        req = self._requests.get(inrec.requestId)
        if req is None:
            self._skip_raw(length)  # the request already ended without reading its body
            return
        if req.stdin.raw_length is not None or req.stdin.records_received:
            raise StreamError(400, "FCGI_X_STDIN after body data was already sent for this request")
        limit = self.server.limits.max_body
        if length > limit:
            raise StreamError(413, f"upload of {length} bytes exceeds the body size limit of {limit} bytes")
        req.stdin.start_raw(length)

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
        return ended

    def read_raw(self, limit: int) -> bytes:
        """Up to ``limit`` raw stream bytes: buffered ones first, else one recv."""
        data = self._parser.take(limit)
        if data:
            return data
        data = self._sock.recv(min(limit, RECEIVE_BUFFER_SIZE))
        if not data:
            raise ConnectionClosed(f"web server closed the connection with {limit} bytes of the "
                                   f"FCGI_X_STDIN stream still to come")
        return data

    def _skip_raw(self, length: int) -> None:
        while length:
            length -= len(self.read_raw(length))

    def end_request(self, req, appStatus=0, protocolStatus=FCGI_REQUEST_COMPLETE, remove=True) -> None:
        self.server.request_ended()  # first: flup's end_request sends the last records and may close
        if req.started and not req.stdin.ended and not self.close_after_request:
            self._read_rest_of_input(req)
        super().end_request(req, appStatus, protocolStatus, remove)
        self.flush_output()
        if self.close_after_request and self._keepGoing:
            self._keepGoing = False
            self._cleanupSocket()

    def _read_rest_of_input(self, req: FastCGIRequest) -> None:
        """Read and drop the input the application left, up to its end: the web server may still be
        writing it, and a write that meets a closed socket fails the whole request."""
        req.stdin.discard = True
        timeout_set = False
        try:
            while not req.stdin.ended and not self.close_after_request:
                may_wait = req.stdin.raw_remaining or not self._parser.has_record()
                if may_wait and not timeout_set:
                    # Only when a read may wait: mostly the rest (the empty STDIN record) came with
                    # the params, and a timeout costs two system calls to set and clear. The answer
                    # goes out first, whatever the rest of the input takes.
                    self.flush_output()
                    self._sock.settimeout(_INPUT_REST_SECONDS)
                    timeout_set = True
                if req.stdin.raw_remaining:
                    req.stdin.raw_remaining -= len(self.read_raw(req.stdin.raw_remaining))
                else:
                    self.process_input()
        except (OSError, RequestInputError):
            self.close_after_request = True  # the input is not in step any more
        finally:
            if timeout_set and not self._closed:
                self._sock.settimeout(None)

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

    def _do_abort_request(self, inrec: Record) -> None:
        req = self._requests.get(inrec.requestId)
        if req is None:
            return
        log.info("request %d aborted by the web server", inrec.requestId)
        req.aborted = True
        if req.started:
            req.stdin.add_data(b"")  # the application's next read sees end of input
        else:
            self.end_request(req, 0, FCGI_REQUEST_COMPLETE)

    # -- writing -------------------------------------------------------------------------------

    def writeRecord(self, rec: Record) -> None:
        """Queue a record (header, content, padding); :meth:`flush_output` sends the queue."""
        pad = padding_for(rec.contentLength)
        self._pending.append(HEADER.pack(rec.version, rec.type, rec.requestId, rec.contentLength, pad))
        if rec.contentLength:
            self._pending.append(rec.contentData)
        if pad:
            self._pending.append(_PADDING[:pad])
        self._pending_size += 8 + rec.contentLength + pad
        if self._pending_size >= _FLUSH_AT or len(self._pending) >= _MAX_PARTS:
            self.flush_output()

    def flush_output(self) -> None:
        """Send every queued record with one system call where the kernel allows."""
        if self._pending:
            parts, self._pending, self._pending_size = self._pending, [], 0
            _sendmsg_all(self._sock, parts)

    def _cleanupSocket(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._before_close is not None:
            self._before_close(self._sock)
        try:
            self.flush_output()
            if self._sock.family == socket.AF_UNIX:
                return  # no reset on a unix socket: what we sent is read even after we close
            self._sock.shutdown(socket.SHUT_WR)
            # TCP: read until the web server hangs up, so our last records are not lost to a reset.
            deadline = time.monotonic() + _CLOSE_DRAIN_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                self._sock.settimeout(left)
                if not self._sock.recv_into(self._recv_buffer):
                    break
        except OSError:
            pass
        finally:
            self._sock.close()


def _sendmsg_all(sock: socket.socket, parts: list[bytes]) -> None:
    total = sum(len(p) for p in parts)
    sent = sock.sendmsg(parts)
    if sent == total:
        return
    # A partial send is rare (full socket buffer); finish the rest with sendall.
    rest = memoryview(b"".join(parts))[sent:]
    sock.sendall(rest)
