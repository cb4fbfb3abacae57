"""FastCGI record framing as pure functions over bytes: no sockets in this module.

The server side cuts incoming bytes into flup ``Record`` objects with :class:`RecordParser`;
clients (tests, benchmarks) build records with :func:`encode_record` and :func:`encode_params`.
"""

from __future__ import annotations

import struct
from typing import Iterable, NamedTuple

from ._multipart import ffi, lib
from .errors import RequestInputError
from flup.server.fcgi_base import (
    FCGI_ABORT_REQUEST,
    FCGI_BEGIN_REQUEST,
    FCGI_DATA,
    FCGI_END_REQUEST,
    FCGI_GET_VALUES,
    FCGI_GET_VALUES_RESULT,
    FCGI_HEADER_LEN,
    FCGI_KEEP_CONN,
    FCGI_PARAMS,
    FCGI_RESPONDER,
    FCGI_STDERR,
    FCGI_STDIN,
    FCGI_STDOUT,
    FCGI_UNKNOWN_TYPE,
    FCGI_VERSION_1,
    Record,
)

__all__ = [
    "FCGI_ABORT_REQUEST", "FCGI_BEGIN_REQUEST", "FCGI_DATA", "FCGI_END_REQUEST", "FCGI_GET_VALUES",
    "FCGI_GET_VALUES_RESULT", "FCGI_KEEP_CONN", "FCGI_PARAMS", "FCGI_RESPONDER", "FCGI_STDERR",
    "FCGI_STDIN", "FCGI_STDOUT", "FCGI_UNKNOWN_TYPE", "FCGI_X_STDIN", "MAX_CONTENT", "X_STDIN_LENGTH",
    "ProtocolError", "StreamError", "ConnectionClosed", "RecordParser", "WholeRequest", "WholeRequestScanner",
    "decode_params", "encode_params", "encode_record", "frame_answer", "padding_for",
]

# The upload extension: content is the body length N (u32, big-endian); N raw bytes follow.
FCGI_X_STDIN = 50
X_STDIN_LENGTH = struct.Struct("!L")

HEADER = struct.Struct("!BBHHBx")
MAX_CONTENT = 0xFFFF
_LONG_LENGTH = struct.Struct("!L")
# Once this many consumed bytes sit at the front of the buffer, drop them.
_COMPACT_AT = 1 << 16


class ProtocolError(RequestInputError):
    """The peer sent bytes that are not valid FastCGI; the connection must be closed."""


class StreamError(ProtocolError):
    """A well-framed record that breaks the rules of a request's input: the request can still be
    answered with ``status`` (400 or 413), then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConnectionClosed(RequestInputError, EOFError):
    """The web server closed the connection (at a record boundary or inside a record)."""


def padding_for(content_length: int) -> int:
    """Padding that brings a record's content to a multiple of 8 bytes."""
    return -content_length & 7


def encode_record(rec_type: int, request_id: int, content: bytes = b"") -> bytes:
    """One complete record (header, content, padding). Content over 64 KiB is refused."""
    if len(content) > MAX_CONTENT:
        raise ValueError(f"record content of {len(content)} bytes exceeds {MAX_CONTENT}")
    pad = padding_for(len(content))
    return HEADER.pack(FCGI_VERSION_1, rec_type, request_id, len(content), pad) + content + b"\0" * pad


def encode_stream(rec_type: int, request_id: int, data: bytes, chunk: int = 65528) -> bytes:
    """A whole stream (PARAMS, STDIN ...) as records of at most ``chunk`` bytes, then its empty end record."""
    out = [encode_record(rec_type, request_id, data[i:i + chunk]) for i in range(0, len(data), chunk)]
    out.append(encode_record(rec_type, request_id))
    return b"".join(out)


ANSWER_RECORD_MAX = 65528  # the largest multiple of 8 a record holds: an answer's records need no padding
_END_REQUEST_BODY = bytes(8)  # application status 0, REQUEST_COMPLETE


def frame_answer(record_type: int, request_id: int, content: bytes, end: bool = False) -> list:
    """An answer's records as connector_c/fcgi_answer.c frames them: ``content`` (none if empty) in
    records of at most ANSWER_RECORD_MAX bytes, then END_REQUEST if ``end``. The parts, for
    sendmsg or a join."""
    parts: list = []
    if len(content) <= ANSWER_RECORD_MAX:
        if content:
            parts += (HEADER.pack(FCGI_VERSION_1, record_type, request_id, len(content), 0), content)
    else:
        view = memoryview(content)
        for start in range(0, len(content), ANSWER_RECORD_MAX):
            piece = view[start:start + ANSWER_RECORD_MAX]
            parts += (HEADER.pack(FCGI_VERSION_1, record_type, request_id, len(piece), 0), piece)
    if end:
        parts += (HEADER.pack(FCGI_VERSION_1, FCGI_END_REQUEST, request_id, 8, 0), _END_REQUEST_BODY)
    return parts


def _encode_length(n: int) -> bytes:
    return bytes([n]) if n < 128 else _LONG_LENGTH.pack(n | 0x80000000)


def encode_params(pairs: dict[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """Name-value pairs in FastCGI's length-prefixed encoding (names and values as latin-1)."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    out = bytearray()
    for name, value in items:
        n, v = name.encode("latin-1"), value.encode("latin-1")
        out += _encode_length(len(n)) + _encode_length(len(v)) + n + v
    return bytes(out)


def decode_params(data: bytes) -> dict[str, str]:
    """Decode a whole PARAMS (or GET_VALUES) stream into a dict of strings, as latin-1 (a name sent
    twice: :func:`params_with_lines_joined`).

    Lengths that run past the data are a ProtocolError. Latin-1 maps byte n to character n, so
    the block is decoded once and names and values are sliced from it at their byte offsets. The
    two length decodings are written out in place: as a function they cost a fifth of a request.
    """
    text = data.decode("latin-1")
    names, values = [], []
    pos = 0
    end = len(data)
    while pos < end:
        name_len = data[pos]
        if name_len < 128:
            pos += 1
        elif pos + 4 <= end:
            name_len = int.from_bytes(data[pos:pos + 4], "big") & 0x7FFFFFFF
            pos += 4
        else:
            raise ProtocolError("name-value pair truncated: 4-byte length cut short")
        if pos >= end:
            raise ProtocolError("name-value pair truncated: length byte missing")
        value_len = data[pos]
        if value_len < 128:
            pos += 1
        elif pos + 4 <= end:
            value_len = int.from_bytes(data[pos:pos + 4], "big") & 0x7FFFFFFF
            pos += 4
        else:
            raise ProtocolError("name-value pair truncated: 4-byte length cut short")
        value_at = pos + name_len
        pos = value_at + value_len
        if pos > end:
            raise ProtocolError(f"name-value pair claims {name_len}+{value_len} bytes "
                                f"but only {end - value_at + name_len} remain")
        names.append(text[value_at - name_len:value_at])
        values.append(text[value_at:pos])
    params = dict(zip(names, values))
    return params if len(params) == len(names) else params_with_lines_joined(names, values)


def joined_lines(name: str, first: str, then: str) -> str:
    """A header field sent on several lines, as one (RFC 9110 5.3: in order, with commas; cookies
    with "; ", RFC 6265 5.4)."""
    return first + ("; " if name == "HTTP_COOKIE" else ", ") + then


def params_with_lines_joined(names: list[str], values: list[str]) -> dict[str, str]:
    """Params where a name comes more than once: it keeps its last value, but an HTTP_ one is a
    header field sent on several lines (nginx before 1.23 passes each line as a param of its
    own), its lines joined. Not HTTP_HOST: a request has one Host (nginx refuses a second), so
    a second is the configuration's (Debian's fastcgi_params set it, a site's fastcgi_param
    after them), and the last one counts, as for any param."""
    params: dict[str, str] = {}
    for name, value in zip(names, values):
        if name in params and name.startswith("HTTP_") and name != "HTTP_HOST":
            value = joined_lines(name, params[name], value)
        params[name] = value
    return params


class WholeRequest(NamedTuple):
    """A request whose records all arrived: what BEGIN_REQUEST, PARAMS and STDIN said."""
    request_id: int
    flags: int
    params: dict[str, str]
    body: bytes


class WholeRequestScanner:
    """The C scanner of connector_c/fcgi_request.c, with the worker's receive buffer and its own
    output buffer (C memory, made once per worker, lent to each connection in turn).

    It recognises the usual request (BEGIN_REQUEST as responder, PARAMS, STDIN, each to its empty
    record, one request id, nothing between) whole at the start of received bytes, in one call,
    where they were received. Anything else it leaves to the record-by-record path, which stays
    the reference.
    """

    def __init__(self, max_params: int, max_body: int, receive_size: int) -> None:
        self.max_params = max_params
        self.max_body = max_body
        self._received = ffi.new("unsigned char[]", receive_size)
        self.receive_buffer = memoryview(ffi.buffer(self._received))  # for recv_into
        self._out_size = 2 * max_params + max_body  # (the C scanner gathers the params at its end)
        self._out = ffi.new("unsigned char[]", self._out_size)  # (untouched pages take no memory)
        self._out_view = memoryview(ffi.buffer(self._out))
        self._scanned = ffi.new("fcgi_scanned_request *")
        # The last names the scanner decoded, as bytes and split: a web server sends the same names,
        # in the same order, request after request, and the environ's keys are then the same strings.
        self._names_bytes = b""
        self._names: list[str] = []
        self._lines_to_join = False  # an HTTP_ name comes twice in them (nginx's SCRIPT_NAME twice does not count)
        self.incomplete = False  # the last scan found the start of such a request: more bytes may complete it
        self.params_whole = False  # ... and its params were whole: an application could start on it

    def scan_received(self, length: int) -> tuple[int, WholeRequest | None]:
        """(bytes the request takes, the request) for the first ``length`` bytes of the receive
        buffer, or (0, None) when no whole request of the usual shape starts there."""
        return self._scan(self._received, length)

    def scan(self, data, start: int) -> tuple[int, WholeRequest | None]:
        """The same for data[start:], bytes held elsewhere (a bytearray)."""
        with ffi.from_buffer(data) as view:  # (released at once: the bytearray may grow later)
            return self._scan(view + start, len(data) - start)

    def _scan(self, pointer, length: int) -> tuple[int, WholeRequest | None]:
        scanned = self._scanned
        outcome = lib.fcgi_scan_request(pointer, length, self.max_params, self.max_body, self._out, self._out_size,
                                        scanned)
        if outcome != _SCAN_WHOLE:
            self.incomplete = outcome == _SCAN_PART
            self.params_whole = bool(scanned.params_whole)
            return 0, None
        params_len, names_len, body_len = scanned.params_len, scanned.names_len, scanned.body_len
        # "name\0name\0...value\0value\0...": the names split again only when they differ from the
        # last request's; the values in one decode and one split (zip leaves the empty string after
        # the last NUL unpaired; a name sent twice: params_with_lines_joined)
        out = self._out_view
        names_bytes = bytes(out[:names_len])  # (a memoryview compares byte by byte: slower than this copy)
        if names_bytes != self._names_bytes:
            self._names_bytes = names_bytes
            self._names = names = str(names_bytes, "latin-1").split("\0")[:-1]
            headers = [name for name in names if name.startswith("HTTP_")]
            self._lines_to_join = len(set(headers)) < len(headers)
        values = str(out[names_len:params_len], "latin-1").split("\0")
        body = bytes(out[params_len:params_len + body_len]) if body_len else b""
        params = params_with_lines_joined(self._names, values) if self._lines_to_join else dict(zip(self._names, values))
        return scanned.consumed, WholeRequest(scanned.request_id, scanned.flags, params, body)


_SCAN_WHOLE, _SCAN_PART = lib.FCGI_SCAN_WHOLE, lib.FCGI_SCAN_PART


class RecordParser:
    """Accumulates bytes from the peer and cuts them into flup Records, one at a time.

    A bad version byte raises ProtocolError; an incomplete record stays buffered until more bytes
    arrive, and :attr:`pending` tells how many bytes of an unfinished record are held.
    """

    def __init__(self) -> None:
        self.records_returned = 0  # none yet: the stream's first bytes are still the first record's
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._buf += data

    def head(self, size: int) -> bytes:
        """Up to ``size`` of the bytes not yet returned as records (to look at a stream that is
        not FastCGI)."""
        return bytes(self._buf[self._pos:self._pos + size])

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as part of a record."""
        return len(self._buf) - self._pos

    def has_record(self) -> bool:
        """A whole record is buffered: :meth:`next_record` returns it without more bytes."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < FCGI_HEADER_LEN:
            return False
        _, _, _, content_len, padding_len = HEADER.unpack_from(buf, pos)
        return len(buf) - pos >= FCGI_HEADER_LEN + content_len + padding_len

    def take_end_of_stream(self, rec_type: int, request_id: int) -> bool:
        """Consume the next record if it is the empty record that ends stream ``rec_type`` of
        ``request_id`` (the usual last record of a request, read here without building a Record)."""
        pos = self._pos
        if len(self._buf) - pos < FCGI_HEADER_LEN or self._buf[pos + 1] != rec_type:
            return False
        version, _, rid, content_len, padding_len = HEADER.unpack_from(self._buf, pos)
        if version != FCGI_VERSION_1 or rid != request_id or content_len or len(self._buf) - pos < 8 + padding_len:
            return False
        self._consumed_to(pos + 8 + padding_len)
        return True

    def take_whole_request(self, scanner: WholeRequestScanner) -> WholeRequest | None:
        """The next request, if all its records are buffered and of the usual shape (consumed);
        else None, and the records stay for :meth:`next_record`."""
        if self._pos == len(self._buf):
            return None
        taken, request = scanner.scan(self._buf, self._pos)
        if request is not None:
            self.records_returned += 1
            self._consumed_to(self._pos + taken)
        return request

    def take_whole_received(self, scanner: WholeRequestScanner, received: int) -> WholeRequest | None:
        """The same for ``received`` bytes just read into the scanner's receive buffer while none
        were pending here: scanned where they are, and only what the request leaves is fed."""
        taken, request = scanner.scan_received(received)
        if taken < received:
            self.feed(scanner.receive_buffer[taken:received])
        if request is not None:
            self.records_returned += 1
        return request

    def peek_type(self) -> int | None:
        """The type of the next record, once its header has arrived."""
        if len(self._buf) - self._pos < FCGI_HEADER_LEN:
            return None
        return self._buf[self._pos + 1]

    def take(self, limit: int) -> bytes:
        """Hand over up to ``limit`` buffered bytes not yet parsed (a raw stream after a record)."""
        end = min(len(self._buf), self._pos + limit)
        data = bytes(self._buf[self._pos:end])
        self._consumed_to(end)
        return data

    def _consumed_to(self, end: int) -> None:
        """Bytes up to ``end`` are used; once all are, the buffer starts afresh."""
        if end == len(self._buf):
            self._buf.clear()
            self._pos = 0
        else:
            self._pos = end

    def next_record(self) -> Record | None:
        """The next complete record, or None until more bytes are fed."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < FCGI_HEADER_LEN:
            return None
        version, rec_type, request_id, content_len, padding_len = HEADER.unpack_from(buf, pos)
        if version != FCGI_VERSION_1:
            raise ProtocolError(f"unsupported FastCGI version {version} (expected 1)")
        end = pos + FCGI_HEADER_LEN + content_len + padding_len
        if len(buf) < end:
            return None
        self.records_returned += 1
        rec = Record(rec_type, request_id)
        rec.contentLength = content_len
        rec.paddingLength = padding_len
        start = pos + FCGI_HEADER_LEN
        rec.contentData = bytes(buf[start:start + content_len])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        elif end >= _COMPACT_AT:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return rec
