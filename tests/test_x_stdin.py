"""The upload extension (FCGI_X_STDIN) against a real backend, with correct and broken streams."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from apache_harness import Backend, wait_for
from fcgi_backend.records import FCGI_PARAMS, FCGI_STDIN, FCGI_X_STDIN, encode_params, encode_record, encode_stream
from fcgi_client import FastCGIClient, begin_request, cgi_params, x_stdin_record, x_stdin_request_bytes

TESTS = Path(__file__).resolve().parent
BOUNDARY = "----fcgiBoundary7MA4YWxkTrZu0gW"


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> bytes:
    out = bytearray()
    for name, value in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, data) in files.items():
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def upload_params(body: bytes, uri="/upload?hash=1"):
    return cgi_params("POST", uri, len(body), f"multipart/form-data; boundary={BOUNDARY}")


@pytest.fixture
def upload_dir(workdir):
    path = workdir / "uploads"
    path.mkdir()
    return path


@pytest.fixture
def server(site, workdir, upload_dir):
    backend = Backend(site, workdir / "run", ["--upload-dir", upload_dir, "--max-body", "64M"]).start()
    yield backend
    backend.stop()


@pytest.fixture
def plain_wsgi(site, workdir):
    backend = Backend(site, workdir / "run", ["--app", f"{TESTS / 'wsgi_apps.py'}:body_digest"]).start()
    yield backend
    backend.stop()


def still_serving(backend):
    with FastCGIClient(backend.socket_path) as client:
        assert client.request(cgi_params("GET", "/api/time")).status == 200
    return backend.proc.poll() is None


BINARY = bytes(range(256)) * 300 + b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n-"


def expected_report():
    return {"fields": {"title": ["two files"]}, "files": [
        {"name": "a", "filename": "a.bin", "content_type": "application/octet-stream", "size": len(BINARY),
         "sha256": hashlib.sha256(BINARY).hexdigest()},
        {"name": "b", "filename": "empty.txt", "content_type": "application/octet-stream", "size": 0,
         "sha256": hashlib.sha256(b"").hexdigest()},
    ]}


def test_multipart_upload_over_x_stdin_and_over_stdin_records_agree(server, upload_dir):
    body = multipart({"title": "two files"}, {"a": ("a.bin", BINARY), "b": ("empty.txt", b"")})
    with FastCGIClient(server.socket_path) as client:
        client.send(x_stdin_request_bytes(upload_params(body), body))
        via_x_stdin = client.read_reply()
    with FastCGIClient(server.socket_path) as client:
        via_records = client.request(upload_params(body), body)
    assert via_x_stdin.status == via_records.status == 200
    assert json.loads(via_x_stdin.body) == json.loads(via_records.body) == expected_report()
    # The temporary files are removed once the answer is out (after END_REQUEST).
    wait_for(lambda: os.listdir(upload_dir) == [], 10, "removal of the temporary files")


def test_small_x_stdin_body_that_arrives_with_its_record(server):
    """The whole raw stream sits in the first read, behind the X_STDIN record."""
    body = multipart({"k": "v"}, {})
    with FastCGIClient(server.socket_path) as client:
        client.send(x_stdin_request_bytes(upload_params(body, "/upload"), body))
        reply = client.read_reply()
    assert json.loads(reply.body) == {"fields": {"k": ["v"]}, "files": []}


@pytest.mark.parametrize("content_type, body, key, expected", [
    ("application/x-www-form-urlencoded", b"a=1&b=%C3%A9", "form", {"a": ["1"], "b": ["é"]}),
    ("application/octet-stream", os.urandom(200_000), "body_length", 200_000),
])
def test_other_bodies_over_x_stdin(server, content_type, body, key, expected):
    with FastCGIClient(server.socket_path) as client:
        client.send(x_stdin_request_bytes(cgi_params("POST", "/echo", len(body), content_type), body))
        reply = client.read_reply()
    assert json.loads(reply.body)[key] == expected


def test_a_plain_wsgi_app_reads_the_same_body_on_both_paths(plain_wsgi):
    body = os.urandom(1_000_003)
    expected = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    with FastCGIClient(plain_wsgi.socket_path) as client:
        client.send(x_stdin_request_bytes(cgi_params("POST", "/", len(body)), body))
        assert client.read_reply().body == expected
    with FastCGIClient(plain_wsgi.socket_path) as client:
        assert client.request(cgi_params("POST", "/", len(body)), body).body == expected


def test_x_stdin_for_a_request_that_ignores_its_body_keeps_the_connection_in_step(server):
    body = b"z" * 300_000
    with FastCGIClient(server.socket_path) as client:
        client.send(begin_request(1, keep_conn=True) + encode_stream(FCGI_PARAMS, 1, encode_params(
            cgi_params("POST", "/hello/first", len(body)))) + x_stdin_record(len(body)) + body
            + encode_record(FCGI_STDIN, 1))
        assert client.read_reply().status == 405  # answered without reading the body
        second = client.request(cgi_params("GET", "/hello/second"), request_id=2)
        assert b"Hello, second!" in second.body


# ---- broken streams -------------------------------------------------------------------------------

def test_connection_closed_during_the_raw_stream(server, upload_dir):
    body = multipart({}, {"big": ("big.bin", os.urandom(2_000_000))})
    with FastCGIClient(server.socket_path) as client:
        client.send(begin_request(1) + encode_stream(FCGI_PARAMS, 1, encode_params(upload_params(body)))
                    + x_stdin_record(len(body)) + body[:1_000_000])
    assert still_serving(server)
    server.wait_for_log("connection closed after")
    server.wait_for_log("of the upload stream")
    assert os.listdir(upload_dir) == []


def test_connection_closed_during_the_raw_stream_read_by_python(plain_wsgi):
    with FastCGIClient(plain_wsgi.socket_path) as client:
        client.send(begin_request(1) + encode_stream(FCGI_PARAMS, 1, encode_params(cgi_params("POST", "/", 5000)))
                    + x_stdin_record(5000) + b"x" * 1000)
    assert still_serving(plain_wsgi)
    plain_wsgi.wait_for_log("bytes of the FCGI_X_STDIN stream still to come")


def _send_and_read(backend, data):
    with FastCGIClient(backend.socket_path) as client:
        client.send(data)
        reply = client.read_reply()
        closed = client.closed_by_server()
    return reply, closed


def test_x_stdin_record_content_not_four_bytes_is_400(server):
    body = multipart({"a": "b"}, {})
    head = begin_request(1) + encode_stream(FCGI_PARAMS, 1, encode_params(upload_params(body)))
    reply, closed = _send_and_read(server, head + encode_record(FCGI_X_STDIN, 1, b"\x00\x00\x01"))
    assert reply.status == 400 and b"is 3 bytes, expected 4" in reply.body and closed
    server.wait_for_log("bad request input")
    assert still_serving(server)


def test_x_stdin_after_stdin_data_is_400(server, upload_dir):
    body = multipart({}, {"f": ("f.bin", b"data" * 1000)})
    head = begin_request(1) + encode_stream(FCGI_PARAMS, 1, encode_params(upload_params(body)))
    reply, closed = _send_and_read(server, head + encode_record(FCGI_STDIN, 1, body[:100])
                                   + x_stdin_record(len(body) - 100) + body[100:] + encode_record(FCGI_STDIN, 1))
    assert reply.status == 400 and b"after body data" in reply.body and closed
    assert os.listdir(upload_dir) == []
    assert still_serving(server)


def test_x_stdin_over_the_body_limit_is_413_before_reading_it(server, upload_dir):
    head = begin_request(1) + encode_stream(FCGI_PARAMS, 1, encode_params(upload_params(b"x" * 100)))
    reply, closed = _send_and_read(server, head + x_stdin_record(100 * 1024 * 1024))  # --max-body is 64M
    assert reply.status == 413 and b"exceeds the body size limit" in reply.body and closed
    assert still_serving(server)


def test_stdin_data_instead_of_the_closing_empty_stdin_is_400(server, upload_dir):
    body = multipart({}, {"f": ("f.bin", b"data" * 1000)})
    head = begin_request(1) + encode_stream(FCGI_PARAMS, 1, encode_params(upload_params(body)))
    reply, closed = _send_and_read(server, head + x_stdin_record(len(body)) + body
                                   + encode_record(FCGI_STDIN, 1, b"extra") + encode_record(FCGI_STDIN, 1))
    assert reply.status == 400 and b"after the FCGI_X_STDIN stream" in reply.body and closed
    assert os.listdir(upload_dir) == []
    assert still_serving(server)


def test_no_closing_stdin_then_hang_up_leaves_nothing(server, upload_dir):
    body = multipart({}, {"f": ("f.bin", b"data" * 1000)})
    with FastCGIClient(server.socket_path) as client:
        client.send(begin_request(1) + encode_stream(FCGI_PARAMS, 1, encode_params(upload_params(body)))
                    + x_stdin_record(len(body)) + body)
        client.sock.shutdown(1)  # no closing STDIN record: end of stream instead
        reply = client.read_reply()
    assert reply.stdout == b""  # the request was dropped, not answered
    server.wait_for_log("request input ended early")
    assert os.listdir(upload_dir) == []
    assert still_serving(server)


def test_a_standard_client_still_works_unchanged(server):
    with FastCGIClient(server.socket_path) as client:
        reply = client.request(cgi_params("POST", "/echo", 3, "application/octet-stream"), b"abc")
    assert json.loads(reply.body)["body_length"] == 3
