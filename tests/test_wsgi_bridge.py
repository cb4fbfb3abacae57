"""The two ways a request reaches the application give the same answer, byte for byte.

A request found whole in one read is taken by the C scanner (records.WholeRequestScanner), its
request built in one step; any other goes record by record through the record parser and flup's
dispatch, which stay the reference. Both end in flup's WSGI bridge. Each application below
exercises one rule of PEP 3333 or of flup's bridge; each is served both ways, in-process over a
socket pair, and the records that come back must be the same (STDERR records aside, whose
tracebacks name different frames: both ways must send them or neither).
"""

import socket
import sys

import pytest

from fcgi_client import cgi_params, request_bytes
from fcgi_backend.gateway import FastCGIGateway
from fcgi_backend.records import FCGI_STDERR, RecordParser

closed = []


def listed(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def one_block_without_length(environ, start_response):
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"made"]  # flup adds the Content-Length of a one-block answer


def two_blocks_without_length(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"one ", b"two"]


def generated(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Many", "a"), ("X-Many", "b")])
    yield b""
    yield b"first "
    yield b""
    yield b"second"


def bytes_status_and_headers(environ, start_response):
    start_response(b"404 Not Found", [(b"Content-Type", b"text/plain")])
    return [b"gone"]


def uses_write(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write("as str")
    return []


def empty_body(environ, start_response):
    start_response("204 No Content", [])
    return []


class _Closing:
    def __init__(self, blocks):
        self.blocks = blocks

    def __iter__(self):
        return iter(self.blocks)

    def close(self):
        closed.append(True)


def with_close(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _Closing([b"closed after"])


def raises_before_start(environ, start_response):
    raise RuntimeError("before start_response")


def raises_after_start(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError("after start_response")


def raises_midway(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"part one"
    raise RuntimeError("midway")


def error_after_headers_sent(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"sent"
    try:
        raise ValueError("late")
    except ValueError:
        start_response("500 Internal Server Error", [], sys.exc_info())  # re-raises: too late
    yield b"never"


def error_before_headers_sent(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("early")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced"]


def start_response_twice(environ, start_response):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b"x"]


def not_latin1_header(environ, start_response):
    start_response("200 OK", [("X-Name", "\u20ac")])
    return [b"x"]


def writes_errors(environ, start_response):
    environ["wsgi.errors"].write("a line for the web server's log\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"logged"]


def echoes(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body, environ["wsgi.input"].read()]


def dumps_environ(environ, start_response):
    shown = sorted(f"{key}={value!r}" for key, value in environ.items() if key not in ("wsgi.input", "wsgi.errors"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["\n".join(shown).encode()]


APPS = [listed, one_block_without_length, two_blocks_without_length, generated, bytes_status_and_headers,
        uses_write, empty_body, with_close, raises_before_start, raises_after_start, raises_midway,
        error_after_headers_sent, error_before_headers_sent, start_response_twice, not_latin1_header,
        writes_errors, echoes, dumps_environ]


def serve(app, data: bytes, whole: bool) -> list:
    """The records answering ``data``, served by a gateway that takes whole requests or not."""
    gateway = FastCGIGateway(app, multiprocess=True, max_conns=4)
    gateway.scan_whole_requests = whole
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        gateway.connection(ours, None).serve_request()
        answer = b""
        while chunk := theirs.recv(65536):
            answer += chunk
    finally:
        theirs.close()
        ours.close()
    parser = RecordParser()
    parser.feed(answer)
    records = []
    while (record := parser.next_record()) is not None:
        records.append((record.type, record.requestId, bytes(record.contentData)))
    assert parser.pending == 0
    return records


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize("app", APPS, ids=lambda app: app.__name__)
def test_an_answer_is_the_same_whole_or_record_by_record(app, method, capsys):
    body = b"name=value&x=\xff" if method == "POST" else b""
    params = cgi_params(method, "/path/to?q=1", len(body) if body else None,
                        "application/x-www-form-urlencoded" if body else "",
                        HTTP_COOKIE="k=v", HTTPS="on", SCRIPT_FILENAME="proxy:fcgi://localhost/path/to")
    data = request_bytes(params, body)
    closed.clear()
    whole = serve(app, data, whole=True)
    closes_whole = len(closed)
    by_record = serve(app, data, whole=False)
    assert closes_whole == len(closed) - closes_whole  # a close() is called on both ways, or on neither
    assert [r for r in whole if r[0] != FCGI_STDERR] == [r for r in by_record if r[0] != FCGI_STDERR]
    assert any(r[0] == FCGI_STDERR for r in whole) == any(r[0] == FCGI_STDERR for r in by_record)
    assert whole[-1][0] == 3  # END_REQUEST
    capsys.readouterr()  # (wsgi.errors also goes to the process's stderr)


def test_the_bridge_answers_what_the_rules_say():
    """The cases above compare the two ways; these pin what both must say."""
    data = request_bytes(cgi_params("GET", "/"))
    stdout = lambda records: b"".join(r[2] for r in records if r[0] == 6)  # noqa: E731  (FCGI_STDOUT)
    assert stdout(serve(one_block_without_length, data, True)).startswith(
        b"Status: 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nmade")
    assert b"Content-Length" not in stdout(serve(two_blocks_without_length, data, True))
    assert stdout(serve(empty_body, data, True)) == b"Status: 204 No Content\r\n\r\n"
    assert stdout(serve(error_before_headers_sent, data, True)).startswith(b"Status: 503 Service Unavailable\r\n")
    late = stdout(serve(error_after_headers_sent, data, True))
    assert late.endswith(b"sent") and b"never" not in late
    assert stdout(serve(raises_before_start, data, True)).startswith(b"Status: 500 Internal Server Error")
    head = stdout(serve(listed, request_bytes(cgi_params("HEAD", "/")), True))
    assert head.endswith(b"\r\n\r\n") and b"hello" not in head
    closed.clear()
    serve(with_close, data, True)
    assert closed == [True]
