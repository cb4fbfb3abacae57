"""FastCGI on the wire, against a real backend process on its unix socket."""

import json
import os
import shutil
import subprocess

import pytest

from fcgi_backend.records import (
    FCGI_ABORT_REQUEST,
    FCGI_GET_VALUES,
    FCGI_GET_VALUES_RESULT,
    FCGI_PARAMS,
    FCGI_STDIN,
    FCGI_UNKNOWN_TYPE,
    HEADER,
    decode_params,
    encode_params,
    encode_record,
    encode_stream,
)
from apache_harness import Backend
from fcgi_client import FastCGIClient, begin_request, cgi_params, request_bytes

CGI_FCGI = shutil.which("cgi-fcgi")


def still_serving(backend):
    """The backend process is alive and answers a fresh request."""
    assert backend.proc.poll() is None
    with FastCGIClient(backend.socket_path) as client:
        reply = client.request(cgi_params("GET", "/api/time"))
    assert reply.ended and reply.status == 200
    return True


def cgi_fcgi(socket_path, env, body=b""):
    """Run Debian's cgi-fcgi (libfcgi) against the socket: a FastCGI client that is not ours."""
    full_env = {"PATH": os.environ["PATH"], **env}
    out = subprocess.run([CGI_FCGI, "-bind", "-connect", str(socket_path)], input=body,
                         env=full_env, capture_output=True, timeout=20)
    head, _, payload = out.stdout.partition(b"\r\n\r\n")
    return head.decode(), payload


@pytest.mark.skipif(CGI_FCGI is None, reason="cgi-fcgi (Debian libfcgi-bin) not installed")
def test_libfcgi_client_gets_a_rendered_page(backend):
    head, body = cgi_fcgi(backend.socket_path, cgi_params("GET", "/?name=libfcgi"))
    assert "Status: 200 OK" in head and "text/html" in head
    assert b"Welcome, libfcgi" in body


@pytest.mark.skipif(CGI_FCGI is None, reason="cgi-fcgi (Debian libfcgi-bin) not installed")
def test_libfcgi_client_posts_a_form(backend):
    form = b"a=1&b=two&b=three"
    head, body = cgi_fcgi(backend.socket_path, cgi_params(
        "POST", "/echo", len(form), "application/x-www-form-urlencoded"), form)
    assert json.loads(body)["form"] == {"a": ["1"], "b": ["two", "three"]}


@pytest.mark.parametrize("args, max_conns", [(["--prefork", "2", "--maxfork", "5"], "5"), (["--nofork"], "1")])
def test_get_values_reports_capabilities(site, workdir, args, max_conns):
    backend = Backend(site, workdir / "run", args).start()
    try:
        with FastCGIClient(backend.socket_path) as client:
            query = encode_params({"FCGI_MAX_CONNS": "", "FCGI_MPXS_CONNS": "", "NOT_A_VALUE": ""})
            client.send(encode_record(FCGI_GET_VALUES, 0, query))
            rec_type, request_id, content = client.read_record()
    finally:
        backend.stop()
    assert rec_type == FCGI_GET_VALUES_RESULT and request_id == 0
    values = dict(decode_params(content))
    assert values == {"FCGI_MAX_CONNS": max_conns, "FCGI_MPXS_CONNS": "0"}


def test_keep_conn_serves_several_requests_on_one_connection(backend):
    with FastCGIClient(backend.socket_path) as client:
        for i in range(1, 4):
            reply = client.request(cgi_params("GET", f"/hello/n{i}"), request_id=i, keep_conn=True)
            assert reply.ended and reply.status == 200 and f"Hello, n{i}!".encode() in reply.body
        last = client.request(cgi_params("GET", "/api/time"), request_id=9, keep_conn=False)
        assert last.ended
        assert client.closed_by_server()


def test_without_keep_conn_the_server_closes_after_the_request(backend):
    with FastCGIClient(backend.socket_path) as client:
        assert client.request(cgi_params("GET", "/api/time")).ended
        assert client.closed_by_server()


def test_params_pair_split_across_two_records(backend):
    params = encode_params(cgi_params("GET", "/hello/split", HTTP_X_CUSTOM="v" * 500))
    cut = len(params) - 250  # inside the long value
    data = (begin_request(1) + encode_record(FCGI_PARAMS, 1, params[:cut])
            + encode_record(FCGI_PARAMS, 1, params[cut:]) + encode_record(FCGI_PARAMS, 1)
            + encode_stream(FCGI_STDIN, 1, b""))
    with FastCGIClient(backend.socket_path) as client:
        client.send(data)
        reply = client.read_reply()
    assert reply.status == 200 and b"Hello, split!" in reply.body


def test_abort_before_the_request_starts_ends_it(backend):
    with FastCGIClient(backend.socket_path) as client:
        client.send(begin_request(5) + encode_record(FCGI_PARAMS, 5, encode_params({"A": "b"}))
                    + encode_record(FCGI_ABORT_REQUEST, 5))
        reply = client.read_reply()
    assert reply.ended and reply.stdout == b""
    assert still_serving(backend)


def test_abort_while_the_body_is_read_stops_the_request(backend):
    params = cgi_params("POST", "/echo", 1000, "application/octet-stream")
    with FastCGIClient(backend.socket_path) as client:
        client.send(begin_request(2) + encode_stream(FCGI_PARAMS, 2, encode_params(params))
                    + encode_record(FCGI_STDIN, 2, b"x" * 100) + encode_record(FCGI_ABORT_REQUEST, 2))
        reply = client.read_reply()
    assert reply.ended and reply.stdout == b""  # nothing after the abort reaches the web server
    backend.wait_for_log("aborted by the web server")
    assert still_serving(backend)


@pytest.mark.parametrize("request_id", [0, 1])
def test_unknown_record_types_get_unknown_type(backend, request_id):
    with FastCGIClient(backend.socket_path) as client:
        client.send(encode_record(42, request_id, b"whatever"))
        rec_type, _, content = client.read_record()
    assert rec_type == FCGI_UNKNOWN_TYPE and content[0] == 42
    assert still_serving(backend)


def test_unknown_role_is_refused(backend):
    with FastCGIClient(backend.socket_path) as client:
        client.send(begin_request(1, role=2) + encode_stream(FCGI_PARAMS, 1, encode_params(cgi_params()))
                    + encode_stream(FCGI_STDIN, 1, b""))
        reply = client.read_reply()
    assert reply.ended and reply.protocol_status == 3  # FCGI_UNKNOWN_ROLE


def _bad_version():
    rec = bytearray(request_bytes(cgi_params()))
    rec[0] = 9
    return bytes(rec), "unsupported FastCGI version 9"


def _bad_pair_lengths():
    return begin_request(1) + encode_record(FCGI_PARAMS, 1, b"\x7f\x7fshort") + encode_record(FCGI_PARAMS, 1), \
        "name-value pair claims"


def _short_begin_request():
    return HEADER.pack(1, 1, 1, 3, 5) + b"abc" + bytes(5), "BEGIN_REQUEST body is 3 bytes"


@pytest.mark.parametrize("make", [_bad_version, _bad_pair_lengths, _short_begin_request])
def test_malformed_input_closes_the_connection_with_a_log_line(backend, make):
    data, logged = make()
    with FastCGIClient(backend.socket_path) as client:
        client.send(data)
        reply = client.read_reply()
        assert not reply.ended
        assert client.closed_by_server()
    backend.wait_for_log(logged)
    assert still_serving(backend)


def test_hang_up_inside_a_record_is_logged_and_the_server_lives(backend):
    head = begin_request(1) + encode_record(FCGI_PARAMS, 1, encode_params(cgi_params()))
    with FastCGIClient(backend.socket_path) as client:
        client.send(head[:-5])  # the params record is cut short
    assert still_serving(backend)
    backend.wait_for_log("closed the connection inside a record")


def test_hang_up_while_the_body_is_read_is_logged_and_the_server_lives(backend):
    params = cgi_params("POST", "/echo", 1000, "application/octet-stream")
    with FastCGIClient(backend.socket_path) as client:
        client.send(begin_request(1) + encode_stream(FCGI_PARAMS, 1, encode_params(params))
                    + encode_record(FCGI_STDIN, 1, b"x" * 100))
    assert still_serving(backend)
    backend.wait_for_log("request input ended early")


@pytest.mark.parametrize("uri", [
    "/../handlers/pages.py", "/%2e%2e/handlers/pages", "/..%2fhandlers%2fpages",
    "/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/../../../../etc/passwd", "/webroot/../../handlers/pages",
])
def test_the_backend_itself_never_serves_outside_the_webroot(backend, uri):
    """Even a web server that passes dot-segments through gets no file from outside the webroot."""
    with FastCGIClient(backend.socket_path) as client:
        reply = client.request(cgi_params("GET", uri))
    assert reply.status == 404
    assert b"init_module" not in reply.body and b"root:x:0" not in reply.body


def test_a_path_cannot_forge_a_line_or_send_escapes_into_the_server_log(backend):
    """A FastCGI peer may pass control characters in a path (mod_proxy_fcgi refuses them, not every
    web server does): the 404's log line writes them as \\xHH."""
    forged = "2026-01-01 00:00:00,000 [1] CRITICAL fcgi_backend: forged"
    with FastCGIClient(backend.socket_path) as client:
        reply = client.request(cgi_params("GET", f"/nothing\n{forged}\r\x1b[31mred"))
    assert reply.status == 404
    backend.wait_for_log("Nothing is at /nothing\\x0a2026-01-01")
    log = backend.log_text()
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())
    assert "\x1b" not in log and "\r" not in log and "\\x0d\\x1b[31mred" in log


@pytest.mark.parametrize("next_url", ["/x\r\nSet-Cookie: evil=1", "/x\nX-Injected: 1", "/x\x00y"])
def test_a_header_that_would_break_its_line_is_a_500_on_the_wire(backend, next_url):
    """Checked on both paths a request takes (a whole request, and record by record: make test
    runs this file again with FCGI_BACKEND_RECORD_BY_RECORD=1)."""
    from urllib.parse import quote
    with FastCGIClient(backend.socket_path) as client:
        reply = client.request(cgi_params("GET", "/redirect-to?next=" + quote(next_url)))
    assert reply.status == 500
    assert b"evil" not in reply.stdout and b"X-Injected" not in reply.stdout and b"\x00" not in reply.stdout
    backend.wait_for_log("has a line break, NUL or other control character in it")
    assert still_serving(backend)


@pytest.mark.parametrize("length", ["\u00b2", "1\u00b3"])  # Latin-1's superscripts: str.isdigit() says yes, int() no
def test_a_content_length_of_other_digits_is_no_length_not_a_500(backend, length):
    params = cgi_params("POST", "/echo", content_type="application/x-www-form-urlencoded")
    params["CONTENT_LENGTH"] = length
    with FastCGIClient(backend.socket_path) as client:
        reply = client.request(params, b"f=v")
    assert reply.status == 200 and json.loads(reply.body)["form"] == {"f": ["v"]}
    assert "invalid literal for int()" not in backend.log_text()
