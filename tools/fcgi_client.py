"""A small FastCGI client speaking raw records, for tests and benchmarks.

It can send well-formed requests and deliberately broken byte streams, and reads back every record
the server sends until END_REQUEST or until the server closes the connection.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from fcgi_backend.records import (
    FCGI_BEGIN_REQUEST,
    FCGI_END_REQUEST,
    FCGI_KEEP_CONN,
    FCGI_PARAMS,
    FCGI_RESPONDER,
    FCGI_STDERR,
    FCGI_STDIN,
    FCGI_STDOUT,
    FCGI_X_STDIN,
    HEADER,
    X_STDIN_LENGTH,
    encode_params,
    encode_record,
    encode_stream,
)


@dataclass
class Reply:
    """What the server sent for one request."""

    records: list[tuple[int, int, bytes]] = field(default_factory=list)  # (type, request id, content)
    ended: bool = False
    app_status: int | None = None
    protocol_status: int | None = None

    @property
    def stdout(self) -> bytes:
        return b"".join(c for t, _, c in self.records if t == FCGI_STDOUT)

    @property
    def stderr(self) -> bytes:
        return b"".join(c for t, _, c in self.records if t == FCGI_STDERR)

    @property
    def status(self) -> int:
        """The answer's status: 200 for a head without Status (CGI's rule), 0 for no answer at all."""
        if not self.stdout:
            return 0
        head = self.stdout.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"status:"):
                return int(line.split()[1])
        return 200

    @property
    def body(self) -> bytes:
        return self.stdout.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.stdout else b""


def cgi_params(method: str = "GET", uri: str = "/", body_length: int | None = None,
               content_type: str = "", **extra: str) -> dict[str, str]:
    """The params a web server sends for ``method uri``."""
    path, _, query = uri.partition("?")
    params = {
        "REQUEST_METHOD": method, "REQUEST_URI": uri, "SCRIPT_NAME": path, "QUERY_STRING": query,
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "GATEWAY_INTERFACE": "CGI/1.1",
    }
    if body_length is not None:
        params["CONTENT_LENGTH"] = str(body_length)
    if content_type:
        params["CONTENT_TYPE"] = content_type
    params.update(extra)
    return params


def begin_request(request_id: int = 1, keep_conn: bool = False, role: int = FCGI_RESPONDER) -> bytes:
    return encode_record(FCGI_BEGIN_REQUEST, request_id,
                         struct.pack("!HB5x", role, FCGI_KEEP_CONN if keep_conn else 0))


def request_bytes(params: dict[str, str], body: bytes = b"", request_id: int = 1,
                  keep_conn: bool = False) -> bytes:
    """A whole standard request: BEGIN_REQUEST, PARAMS stream, STDIN stream."""
    return (begin_request(request_id, keep_conn)
            + encode_stream(FCGI_PARAMS, request_id, encode_params(params))
            + encode_stream(FCGI_STDIN, request_id, body))


def x_stdin_record(length: int, request_id: int = 1) -> bytes:
    """The upload extension's record: the raw body of ``length`` bytes follows it."""
    return encode_record(FCGI_X_STDIN, request_id, X_STDIN_LENGTH.pack(length))


def x_stdin_request_bytes(params: dict[str, str], body: bytes, request_id: int = 1) -> bytes:
    """A whole request whose body travels as one FCGI_X_STDIN raw stream, closed by an empty STDIN."""
    return (begin_request(request_id)
            + encode_stream(FCGI_PARAMS, request_id, encode_params(params))
            + x_stdin_record(len(body), request_id) + body
            + encode_record(FCGI_STDIN, request_id))


class FastCGIClient:
    """One connection to a FastCGI server on a unix socket path or a (host, port) pair."""

    def __init__(self, address, timeout: float = 10.0) -> None:
        family = socket.AF_UNIX if isinstance(address, (str, bytes)) or hasattr(address, "__fspath__") else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(address) if family == socket.AF_UNIX else address)
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "FastCGIClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_record(self) -> tuple[int, int, bytes] | None:
        """The next record as (type, request id, content), or None if the server closed."""
        header = self._recv_exact(8)
        if header is None:
            return None
        _, rec_type, request_id, clen, plen = HEADER.unpack(header)
        content = self._recv_exact(clen + plen)
        if content is None:
            return None
        return rec_type, request_id, content[:clen]

    def read_reply(self) -> Reply:
        """Records until END_REQUEST (``ended``) or until the server closes the connection."""
        reply = Reply()
        while (rec := self.read_record()) is not None:
            rec_type, request_id, content = rec
            if rec_type == FCGI_END_REQUEST:
                reply.ended = True
                reply.app_status, reply.protocol_status = struct.unpack("!LB3x", content)
                break
            reply.records.append(rec)
        return reply

    def closed_by_server(self) -> bool:
        """True once the server has closed its end (reads give EOF)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def request(self, params: dict[str, str], body: bytes = b"", request_id: int = 1,
                keep_conn: bool = False) -> Reply:
        self.send(request_bytes(params, body, request_id, keep_conn))
        return self.read_reply()
