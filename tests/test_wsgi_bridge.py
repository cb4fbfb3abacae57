"""The three ways a request reaches the application give the same answer, byte for byte.

A request found whole in a connection's first read is answered by the whole-request lane
(whole_request.py: its own bridge, no connection or request objects); found whole later, by the
connection, its request built in one step by the C scanner; any other goes record by record
through the record parser and flup's dispatch. The last two end in flup's WSGI bridge, the
reference. Each application below exercises one rule of PEP 3333 or of flup's bridge; each is
served all three ways, in-process over a socket pair, and the records that come back must be the
same (STDERR records aside, whose tracebacks name different frames: every way must send them or
none).
"""

import io
import socket
import sys
import threading
import time

import pytest

from fcgi_client import cgi_params, request_bytes
from flup.server.fcgi_base import BaseFCGIServer

from fcgi_backend.gateway import FastCGIGateway, wsgi_paths
from fcgi_backend.records import FCGI_STDERR, RecordParser
from fcgi_backend.whole_request import DECLINED, WholeRequestLane

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


def bytes_headers_with_length(environ, start_response):
    start_response("200 OK", [("Content-Type", b"text/plain"), (b"content-length", b"4")])
    return [b"gone"]  # its own Content-Length, in bytes and lower case: none is added


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


class _ClosingList(list):
    def close(self):
        closed.append(True)


def listed_with_close(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _ClosingList([b"a list that closes"])  # (what a site answers when a request had uploads)


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


def large_listed(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [bytes(range(256)) * 1200]  # 300 KiB: five records, one with the header block


def large_generated(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    yield b"a" * 65528  # a record's content, whole, once the header block is in front of it
    yield b"b" * 200_000


def longer_than_its_length(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return iter([b"hello ", b"world"])


def shorter_than_its_length(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "30")])
    return iter([b"hello ", b"world"])


def length_not_a_number(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "-11")])
    return [b"hello world"]


def not_modified_with_length(environ, start_response):
    start_response("304 Not Modified", [("ETag", '"v1"'), ("Content-Length", "100")])  # the entity's length
    return []


def hop_by_hop_headers(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked"),
                              ("Connection", "keep-alive"), ("Keep-Alive", "timeout=99"), (b"Upgrade", b"h2c")])
    return [b"hello world"]


def asks_to_close(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
    return [b"bye"]


def header_name_not_a_token(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X Bad", "v")])  # (a space: no field name)
    return [b"never"]


def bytes_header_name_not_a_token(environ, start_response):
    start_response("200 OK", [(b"Content-Type", b"text/plain"), (b"X:Bad", b"v")])
    return [b"never"]


def control_in_header_value(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Note", "bell\x07")])
    return [b"never"]


def informational_status(environ, start_response):
    start_response("103 Early Hints", [("Link", "</style.css>; rel=preload")])  # no final answer
    return [b""]


def dumps_environ(environ, start_response):
    shown = sorted(f"{key}={value!r}" for key, value in environ.items() if key not in ("wsgi.input", "wsgi.errors"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["\n".join(shown).encode()]


APPS = [listed, one_block_without_length, two_blocks_without_length, generated, bytes_status_and_headers,
        bytes_headers_with_length, uses_write, empty_body, with_close, listed_with_close, raises_before_start,
        raises_after_start, raises_midway, error_after_headers_sent, error_before_headers_sent, start_response_twice,
        not_latin1_header, writes_errors, echoes, large_listed, large_generated, longer_than_its_length,
        shorter_than_its_length, length_not_a_number, not_modified_with_length, hop_by_hop_headers, asks_to_close,
        header_name_not_a_token, bytes_header_name_not_a_token, control_in_header_value, informational_status,
        dumps_environ]
CUT_OFF = (raises_midway, error_after_headers_sent, shorter_than_its_length)  # answers that cannot end well


def serve(app, data: bytes, way: str, on_connect=lambda web_server_side: None, read_while_serving=True) -> list:
    """The records answering ``data``, served the ``way`` named: "lane", "whole" or "record". The
    web server's side is read while the request is served (a large answer does not fit in a
    socket's buffer), or with ``read_while_serving`` False once it has been."""
    gateway = FastCGIGateway(app, multiprocess=True, max_conns=4)
    gateway.scan_whole_requests = way != "record"
    ours, theirs = socket.socketpair()
    on_connect(theirs)
    received = []
    reader = threading.Thread(target=lambda: received.extend(iter(lambda: theirs.recv(65536), b"")))
    try:
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        if read_while_serving:
            reader.start()
        if way == "lane":
            lane = WholeRequestLane(gateway)
            if lane.serve(ours) == DECLINED:
                assert b"HEAD" in data, "the lane declined a request it should answer"
                gateway.connection(ours, None, received=lane.taken).serve_request()
        else:
            gateway.connection(ours, None).serve_request()
        if not read_while_serving:
            reader.start()  # (the connection is closed: the reader meets its end)
        reader.join(10)
        assert not reader.is_alive()
        answer = b"".join(received)
    finally:
        theirs.close()
        ours.close()
    records, pending = records_in(answer)
    assert pending == 0
    return records


def records_in(data: bytes) -> tuple[list, int]:
    """The whole records in ``data`` as (type, request id, content), and how many bytes are left."""
    parser = RecordParser()
    parser.feed(data)
    records = []
    while (record := parser.next_record()) is not None:
        records.append((record.type, record.requestId, bytes(record.contentData)))
    return records, parser.pending


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize("app", APPS, ids=lambda app: app.__name__)
def test_an_answer_is_the_same_whole_or_record_by_record(app, method, capsys):
    body = b"name=value&x=\xff" if method == "POST" else b""
    params = cgi_params(method, "/path/to?q=1", len(body) if body else None,
                        "application/x-www-form-urlencoded" if body else "",
                        HTTP_COOKIE="k=v", HTTPS="on", SCRIPT_FILENAME="proxy:fcgi://localhost/path/to")
    data = request_bytes(params, body)
    answers = {}
    for way in ("lane", "whole", "record"):
        closed.clear()
        answers[way] = serve(app, data, way)
        assert len(closed) == (app in (with_close, listed_with_close))  # close() is called once, when there is one
    reference = answers["record"]
    for way in ("lane", "whole"):
        assert [r for r in answers[way] if r[0] != FCGI_STDERR] == [r for r in reference if r[0] != FCGI_STDERR]
        assert any(r[0] == FCGI_STDERR for r in answers[way]) == any(r[0] == FCGI_STDERR for r in reference)
    if app in CUT_OFF and method != "HEAD":
        assert 3 not in [r[0] for r in reference]  # cut off: no END_REQUEST, so the client sees the answer incomplete
    else:
        assert reference[-1][0] == 3  # END_REQUEST
    capsys.readouterr()  # (wsgi.errors also goes to the process's stderr)


@pytest.mark.parametrize("way", ["lane", "record"])
def test_the_bridge_answers_what_the_rules_say(way):
    """The cases above compare the ways; these pin what they must say."""
    data = request_bytes(cgi_params("GET", "/"))
    stdout = lambda records: b"".join(r[2] for r in records if r[0] == 6)  # noqa: E731  (FCGI_STDOUT)
    assert stdout(serve(one_block_without_length, data, way)).startswith(
        b"Status: 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nmade")
    assert b"Content-Length" not in stdout(serve(two_blocks_without_length, data, way))
    assert stdout(serve(empty_body, data, way)) == b"Status: 204 No Content\r\n\r\n"
    assert stdout(serve(error_before_headers_sent, data, way)).startswith(b"Status: 503 Service Unavailable\r\n")
    late = stdout(serve(error_after_headers_sent, data, way))
    assert late.endswith(b"sent") and b"never" not in late
    assert stdout(serve(raises_before_start, data, way)).startswith(b"Status: 500 Internal Server Error")
    # The application's Content-Length holds: not a byte more, and a body short of it is cut off
    # (no END_REQUEST); one that is not a number is not passed on.
    longer = serve(longer_than_its_length, data, way)
    assert stdout(longer).endswith(b"Content-Length: 3\r\n\r\nhel") and longer[-1][0] == 3
    shorter = serve(shorter_than_its_length, data, way)
    assert stdout(shorter).endswith(b"\r\n\r\nhello world") and 3 not in [r[0] for r in shorter]
    assert stdout(serve(length_not_a_number, data, way)) == (b"Status: 200 OK\r\nContent-Type: text/plain\r\n"
                                                             b"Content-Length: 11\r\n\r\nhello world")
    assert serve(not_modified_with_length, data, way)[-1][0] == 3
    # Hop-by-hop headers are the web server's (PEP 3333), but "Connection: close", which it can honour.
    assert stdout(serve(hop_by_hop_headers, data, way)) == (b"Status: 200 OK\r\nContent-Type: text/plain\r\n"
                                                            b"Content-Length: 11\r\n\r\nhello world")
    assert b"Connection: close\r\n" in stdout(serve(asks_to_close, data, way))
    # A header name that is not a token, or a 1xx status, cannot make an answer: a 500 (the log names it).
    for app in (header_name_not_a_token, bytes_header_name_not_a_token, control_in_header_value, informational_status):
        assert stdout(serve(app, data, way)).startswith(b"Status: 500 Internal Server Error"), app.__name__
    head = stdout(serve(listed, request_bytes(cgi_params("HEAD", "/")), way))
    assert head.endswith(b"\r\n\r\n") and b"hello" not in head
    closed.clear()
    serve(with_close, data, way)
    assert closed == [True]


@pytest.mark.parametrize("way", ["lane", "whole", "record"])
@pytest.mark.parametrize("shape", [_Closing, _ClosingList], ids=["iterable", "list"])
def test_close_runs_once_the_web_server_has_the_whole_answer(way, shape):
    """A close() may be slow (a site removing a large upload), and the web server passes the
    answer on only after END_REQUEST: so END_REQUEST is out before close() runs."""
    seen_by_web_server = []

    class Peeking(shape):
        def close(self):
            received, _ = records_in(web_server[0].recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            seen_by_web_server.append([r[0] for r in received])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Peeking([b"answer"])

    web_server = []
    records = serve(app, request_bytes(cgi_params("GET", "/")), way, on_connect=web_server.append,
                    read_while_serving=False)  # (close() peeks at what the web server has)
    assert records[-1][0] == 3 and b"answer" in records[0][2]  # STDOUT ... END_REQUEST
    assert seen_by_web_server == [[r[0] for r in records]]  # every record was out when close() ran


@pytest.mark.parametrize("pause, lane_answers", [(0.001, True), (0.05, False)], ids=["quick", "body-late"])
def test_a_request_written_in_pieces_is_answered_as_if_whole(pause, lane_answers):
    """A web server may write a request in parts. The lane waits for them with its deadlines, but
    for the body, once the params are whole, no longer than BODY_GAP (10 ms): a body later than
    that goes to the reference path, which answers the same."""
    body = b"x=" + b"y" * 3000
    data = request_bytes(cgi_params("POST", "/echo", len(body), "application/x-www-form-urlencoded"), body)
    params_end = data.index(b"\x01\x04\x00\x01\x00\x00")  # the empty PARAMS record
    pieces = [data[:20], data[20:params_end + 8], data[params_end + 8:]]
    gateway = FastCGIGateway(echoes, multiprocess=True, max_conns=4)
    ours, theirs = socket.socketpair()

    def write():
        for number, piece in enumerate(pieces):
            time.sleep(pause if number == 2 else 0.001)
            theirs.sendall(piece)
        theirs.shutdown(socket.SHUT_WR)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        lane = WholeRequestLane(gateway)
        outcome = lane.serve(ours)
        assert (outcome != DECLINED) == lane_answers
        if outcome == DECLINED:
            gateway.connection(ours, None, received=lane.taken).serve_request()
        writer.join(10)
        answer = b"".join(iter(lambda: theirs.recv(65536), b""))
    finally:
        theirs.close()
        ours.close()
    records, pending = records_in(answer)
    assert pending == 0 and records == serve(echoes, data, "record")
    assert records[0][2].endswith(body)


APACHE = {"REQUEST_METHOD": "GET", "SERVER_NAME": "example.org", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1"}


@pytest.mark.parametrize("params", [
    dict(APACHE, SCRIPT_FILENAME="proxy:fcgi://localhost/hello", SCRIPT_NAME="/hello", REQUEST_URI="/hello?x=1",
         QUERY_STRING="x=1"),
    dict(APACHE, SCRIPT_FILENAME="proxy:fcgi://localhost/hello", SCRIPT_NAME="/hello", REQUEST_URI="/hello?x=1"),
    dict(APACHE, SCRIPT_FILENAME="proxy:fcgi://localhost", SCRIPT_NAME="/app", REQUEST_URI="/app?q"),
    dict(APACHE, SCRIPT_FILENAME="proxy:fcgi://localhost/", SCRIPT_NAME="/app/", REQUEST_URI="/app/?"),
    dict(APACHE, SCRIPT_NAME="/index.py", PATH_INFO="", REQUEST_URI="/elsewhere/x?y=2"),
    dict(APACHE, SCRIPT_NAME="/index.py", PATH_INFO="/x", QUERY_STRING="", REQUEST_URI="/index.py/x?y=2"),
    dict(APACHE, SCRIPT_NAME="/a"),
    dict(APACHE, REQUEST_URI="/caf%C3%A9?z"),
    {"REQUEST_URI": "/no-server-params"},
    {},
], ids=["apache", "apache-no-query-string", "mount-root", "mount-root-slash", "path-info-empty-mismatch",
        "nginx-split", "no-request-uri", "uri-only", "server-params-missing", "nothing"])
def test_the_environ_gets_what_flup_gives_it_after_the_paths(params):
    """gateway._sanitizeEnv writes flup's BaseFCGIServer._sanitizeEnv out in one pass: after
    wsgi_paths, both must leave the same environ and the same warnings."""
    gateway = FastCGIGateway(listed, multiprocess=True, max_conns=4)
    ours = dict(params, **{"wsgi.errors": io.StringIO()})
    gateway._sanitizeEnv(ours)
    flups = dict(params, **{"wsgi.errors": io.StringIO()})
    flups["SCRIPT_NAME"], flups["PATH_INFO"] = wsgi_paths(flups)
    BaseFCGIServer._sanitizeEnv(gateway, flups)
    assert ours.pop("wsgi.errors").getvalue() == flups.pop("wsgi.errors").getvalue()
    assert ours == flups


def test_a_stored_file_goes_in_large_records_whatever_block_size_the_application_asks():
    """Django's FileResponse asks wsgi.file_wrapper for 4 KiB blocks: each was a STDOUT record and
    a write to the web server (256 of them a MiB); a file on disk or in memory is read in whole
    records' worth."""
    import tempfile
    data = bytes(range(256)) * 4096  # 1 MiB

    def download(environ, start_response):
        file = tempfile.TemporaryFile()
        file.write(data)
        file.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](file, 4096)

    for way in ("lane", "record"):
        records = serve(download, request_bytes(cgi_params("GET", "/")), way)
        stdout = [r[2] for r in records if r[0] == 6]  # (FCGI_STDOUT)
        assert b"".join(stdout).partition(b"\r\n\r\n")[2] == data
        assert len(stdout) <= len(data) // 65528 + 2, (way, len(stdout))  # (65528: a record's most)
