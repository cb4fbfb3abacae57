"""FastCGI streams that break the rules, peers that stall, and clients we did not write.

Each case once hung a worker, grew it without bound, or lost an answer; each must now end with a
log line, the connection closed where the stream cannot be trusted, and the worker alive.
"""

import json
import os
import socket
import threading
import time

import pytest

from apache_harness import Backend, wait_for
from fcgi_client import FastCGIClient, begin_request, cgi_params, request_bytes, x_stdin_record
from fcgi_backend.records import (
    FCGI_ABORT_REQUEST,
    FCGI_DATA,
    FCGI_PARAMS,
    FCGI_STDIN,
    FCGI_STDOUT,
    encode_params,
    encode_record,
    encode_stream,
)
from test_pool import in_threads
from test_protocol import still_serving

MiB = 1024 * 1024


@pytest.fixture
def strict_backend(site, workdir):
    """Two workers at most, short deadlines: a stuck worker shows at once."""
    backend = Backend(site, workdir / "run", ["--prefork", "2", "--maxfork", "2", "--read-timeout", "2",
                                              "--idle-timeout", "2", "--status-path", "/fcgi-status"]).start()
    yield backend
    backend.stop()


def params_stream(params: dict, request_id: int = 1) -> bytes:
    return encode_stream(FCGI_PARAMS, request_id, encode_params(params))


def worker_pids(backend) -> set[int]:
    with open(f"/proc/{backend.proc.pid}/task/{backend.proc.pid}/children") as f:
        return {int(p) for p in f.read().split()}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


# ---- records that do not fit the request's state (item 6) ------------------------------------------

@pytest.mark.parametrize("method", ["POST", "GET"])
def test_params_again_during_a_request_closes_only_that_connection(strict_backend, method):
    """PARAMS after the params ended used to start the request a second time inside flup: the
    worker blocked on flup's lock (POST) or died in end_request (GET). 16 such connections were a
    permanent outage."""
    body = b"x" * 5000
    params = cgi_params(method, "/raw-sha256" if method == "POST" else "/sleep?s=0.2", len(body),
                        "application/octet-stream")
    for _ in range(16):
        with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
            client.send(begin_request(1) + params_stream(params) + encode_record(FCGI_STDIN, 1, body[:1000])
                        + params_stream(params) + encode_record(FCGI_STDIN, 1, body[1000:])
                        + encode_record(FCGI_STDIN, 1))
            client.read_reply()
            assert client.closed_by_server()
    strict_backend.wait_for_log("PARAMS for request 1 after its params ended")
    assert still_serving(strict_backend)


def test_stdin_after_the_end_of_input_is_a_protocol_error(strict_backend):
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        client.send(begin_request(1, keep_conn=True) + params_stream(cgi_params("POST", "/raw-sha256", 3))
                    + encode_stream(FCGI_STDIN, 1, b"abc"))
        assert client.read_reply().status == 200
        client.send(encode_record(FCGI_STDIN, 9, b"stray"))  # a request id that is not active: ignored
        client.send(request_bytes(cgi_params("GET", "/api/time"), request_id=2, keep_conn=True))
        assert client.read_reply().status == 200
    assert still_serving(strict_backend)


def test_a_second_request_while_one_runs_gets_cant_mpx_conn(strict_backend):
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        client.send(begin_request(1) + params_stream(cgi_params("GET", "/sleep?s=0.3")) + begin_request(2)
                    + encode_record(FCGI_STDIN, 1))
        ends = {}
        while len(ends) < 2 and (rec := client.read_record()) is not None:
            if rec[0] == 3:  # END_REQUEST: protocol status in byte 4
                ends[rec[1]] = rec[2][4]
    assert ends == {1: 0, 2: 1}  # request 1 complete, request 2 FCGI_CANT_MPX_CONN


def test_x_stdin_before_the_params_end_is_a_protocol_error(strict_backend):
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        client.send(begin_request(1) + encode_record(FCGI_PARAMS, 1, encode_params(cgi_params()))
                    + x_stdin_record(10) + b"0123456789")
        assert not client.read_reply().ended
        assert client.closed_by_server()
    strict_backend.wait_for_log("FCGI_X_STDIN before the params ended")
    assert still_serving(strict_backend)


# ---- what a peer can make a worker hold (item 7) --------------------------------------------------

def test_params_beyond_the_limit_close_the_connection_and_grow_nothing(strict_backend):
    pid_before = worker_pids(strict_backend)
    rss_before = {pid: rss_kib(pid) for pid in pid_before}
    chunk = encode_record(FCGI_PARAMS, 1, b"\x7f" * 65528)
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        client.send(begin_request(1))
        try:
            for _ in range(200 * MiB // len(chunk)):  # 200 MiB of params, never ended
                client.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the backend hung up: what we are checking
    strict_backend.wait_for_log("PARAMS exceed the limit of 1048576 bytes")
    assert still_serving(strict_backend)
    for pid in pid_before & worker_pids(strict_backend):
        assert rss_kib(pid) - rss_before[pid] < 16 * 1024, "a worker kept what it was sent"


def test_body_sent_before_the_params_end_is_bounded_by_max_memory(site, workdir):
    backend = Backend(site, workdir / "run", ["--max-memory", "64K"]).start()
    try:
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            client.send(begin_request(1) + encode_record(FCGI_PARAMS, 1, encode_params(cgi_params("POST", "/echo"))))
            try:
                for _ in range(64):
                    client.send(encode_record(FCGI_STDIN, 1, b"y" * 60000))
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert client.closed_by_server()
        backend.wait_for_log("bytes of STDIN before the params ended")
        assert still_serving(backend)
    finally:
        backend.stop()


# ---- deadlines (item 8) -------------------------------------------------------------------------

def test_connections_that_send_nothing_are_closed_after_idle_timeout(strict_backend):
    """Connections that connect and send nothing, as many as there are workers: a normal request
    is answered within the idle timeout (2 s here), not held off for as long as they stay open."""
    idle = [socket.socket(socket.AF_UNIX) for _ in range(2)]
    for s in idle:
        s.connect(str(strict_backend.socket_path))
    time.sleep(0.2)  # both workers hold one
    started = time.monotonic()
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        assert client.request(cgi_params("GET", "/api/time")).status == 200
    assert time.monotonic() - started < 4
    for s in idle:
        s.settimeout(5)
        assert s.recv(1) == b""  # closed by the backend
        s.close()
    strict_backend.wait_for_log("web server sent nothing for a request for 2s")


@pytest.mark.parametrize("how", ["records", "x_stdin"])
def test_a_stalled_upload_is_dropped_after_read_timeout_leaving_no_file(strict_backend, site, how):
    boundary = "Bd"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n'.encode()
            + b"z" * 200_000)
    params = cgi_params("POST", "/upload", 1_000_000, f"multipart/form-data; boundary={boundary}")
    with FastCGIClient(strict_backend.socket_path, timeout=15) as client:
        start = begin_request(1) + params_stream(params)
        if how == "records":
            client.send(start + encode_stream(FCGI_STDIN, 1, head)[:-8])  # no end, then silence
        else:
            client.send(start + x_stdin_record(1_000_000) + head)
        started = time.monotonic()
        client.read_reply()
        assert client.closed_by_server()
        assert 1.5 < time.monotonic() - started < 8
    uploads = [n for n in os.listdir("/tmp") if n.startswith("fcgi-upload-")
               and int(n.split("-")[2]) in worker_pids(strict_backend)]
    assert uploads == []
    assert still_serving(strict_backend)


def test_request_timeout_answers_504_and_replaces_the_worker(site, workdir):
    backend = Backend(site, workdir / "run", ["--prefork", "1", "--maxfork", "1", "--request-timeout", "1"]).start()
    try:
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            started = time.monotonic()
            reply = client.request(cgi_params("GET", "/sleep?s=30"))
        assert reply.status == 504 and time.monotonic() - started < 5
        backend.wait_for_log("GET /sleep?s=30 stopped after 1.0s (request_timeout 1s)")
        assert still_serving(backend)
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            assert client.request(cgi_params("GET", "/sleep?s=0.1")).status == 200
    finally:
        backend.stop()


# ---- answers before the body is read (item 9) ------------------------------------------------------

def test_an_answer_that_reads_no_body_leaves_before_the_body_is_sent(strict_backend):
    """END_REQUEST used to wait until the rest of the body came (or 10 s passed)."""
    params = cgi_params("PUT", "/hello/x", 5 * MiB, "application/octet-stream")  # a route that refuses PUT
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        client.send(begin_request(1) + params_stream(params) + encode_record(FCGI_STDIN, 1, b"b" * 1000))
        started = time.monotonic()
        reply = client.read_reply()
        assert reply.ended and reply.status == 405 and time.monotonic() - started < 1
        for _ in range(20):  # the rest of the body is still read and dropped
            client.send(encode_record(FCGI_STDIN, 1, b"b" * 60000))
        client.send(encode_record(FCGI_STDIN, 1))
        assert client.closed_by_server()


def test_a_kept_connection_stays_in_step_after_an_early_answer(strict_backend):
    params = cgi_params("PUT", "/hello/x", 300_000, "application/octet-stream")
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        client.send(begin_request(1, keep_conn=True) + params_stream(params))
        assert client.read_reply().status == 405
        client.send(encode_stream(FCGI_STDIN, 1, b"c" * 300_000))
        client.send(request_bytes(cgi_params("GET", "/hello/again"), request_id=2, keep_conn=True))
        reply = client.read_reply()
        assert reply.status == 200 and b"Hello, again!" in reply.body


def test_a_kept_connection_closes_rather_than_take_in_a_large_unread_body(strict_backend):
    """Past 1 MiB of an answered request's unread body the connection closes instead of reading it
    to its end (for up to 10 s) to stay in step: a new connection costs less, and a web server
    relaying a rejected upload stops sending it."""
    params = cgi_params("PUT", "/hello/x", 8 * MiB, "application/octet-stream")
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        client.send(begin_request(1, keep_conn=True) + params_stream(params))
        assert client.read_reply().status == 405
        try:
            for _ in range(8 * MiB // 60000):
                client.send(encode_record(FCGI_STDIN, 1, b"d" * 60000))
        except (BrokenPipeError, ConnectionResetError):
            pass  # (closed while the body was still coming)
        assert client.closed_by_server()
    strict_backend.wait_for_log("PUT /hello/x: answered; more than 1048576 bytes of its input are left")
    assert still_serving(strict_backend)


# ---- flup's client, an empty FCGI_DATA record, ABORT and HEAD (items 14, 15) ----------------------

def test_flups_own_client_never_meets_a_broken_pipe(strict_backend):
    """flup's client sends an empty FCGI_DATA record after the body; the backend used to close
    before reading it, and the client's write failed in 1 to 5 of 10 requests."""
    import types

    from flup.client.fcgi_app import FCGIApp

    types.StringTypes = (str,)  # flup's client still asks for this Python 2 name
    app = FCGIApp(connect=str(strict_backend.socket_path))
    failures = []
    for i in range(40):
        environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": f"/hello/flup{i}",
                   "QUERY_STRING": "", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
                   "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.input": __import__("io").BytesIO(b""),
                   "wsgi.errors": __import__("sys").stderr}
        statuses = []
        try:
            body = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
            if statuses[:1] != [b"200 OK"] or f"flup{i}".encode() not in body:
                failures.append((i, statuses, body[:80]))
        except OSError as exc:
            failures.append((i, repr(exc)))
    assert failures == []


def test_empty_data_records_after_the_body_are_read_before_closing(strict_backend):
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        client.send(request_bytes(cgi_params("GET", "/api/time")))
        assert client.read_reply().status == 200
        time.sleep(0.1)  # the backend has had time to close, if it were going to
        client.send(encode_record(FCGI_DATA, 1))  # after the answer: still read, no broken pipe
        assert client.closed_by_server()


def open_sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # closed between the listing and the look
            pass
    return count


def test_back_to_back_connections_are_read_until_the_client_hangs_up_then_closed(site, workdir):
    """One worker, eight clients: the worker mostly finds the next connection waiting and takes it
    without a wait. A client that writes after the answer still meets an open socket, and every
    socket is closed once its client hangs up."""
    backend = Backend(site, workdir / "run", ["--prefork", "-1"]).start()
    try:
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            assert client.request(cgi_params("GET", "/hello/warm")).status == 200
        (worker,) = worker_pids(backend)
        time.sleep(0.3)
        sockets_idle = open_sockets(worker)

        def client_writing_late(i: int) -> list:
            failures = []
            for n in range(40):
                try:
                    with FastCGIClient(backend.socket_path, timeout=10) as client:
                        client.send(request_bytes(cgi_params("GET", f"/hello/c{i}n{n}")))
                        reply = client.read_reply()
                        if reply.status != 200 or f"c{i}n{n}".encode() not in reply.body:
                            failures.append((i, n, reply.status))
                        if n % 2:  # every other one writes after the answer, as flup's client does
                            client.send(encode_record(FCGI_DATA, 1))
                        if not client.closed_by_server():
                            failures.append((i, n, "not closed"))
                except OSError as exc:
                    failures.append((i, n, repr(exc)))
            return failures

        threads, results = in_threads(client_writing_late, 8)
        for thread in threads:
            thread.join(60)
        assert results == [[]] * 8
        deadline = time.monotonic() + 3
        while open_sockets(worker) > sockets_idle and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_sockets(worker) == sockets_idle
        assert worker_pids(backend) == {worker}
    finally:
        backend.stop()


def test_an_idle_worker_closes_its_last_socket_soon_after_the_client_hangs_up(site, workdir):
    """No next connection comes: the socket of the last answer stays open while its client may
    still write, and is closed within the lingering second once the client hangs up (not at the
    worker's next wake-up, which is accept_wait away)."""
    backend = Backend(site, workdir / "run", ["--prefork", "-1"]).start()
    try:
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            assert client.request(cgi_params("GET", "/hello/warm")).status == 200
        (worker,) = worker_pids(backend)
        time.sleep(1.2)  # the warm-up's socket is closed by now
        sockets_idle = open_sockets(worker)
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            assert client.request(cgi_params("GET", "/hello/last")).status == 200
            time.sleep(0.3)
            client.send(encode_record(FCGI_DATA, 1))  # a late write: no broken pipe
            assert open_sockets(worker) == sockets_idle + 1
            assert client.closed_by_server()
        wait_for(lambda: open_sockets(worker) == sockets_idle, 1.0, "the last socket closed within a second")
    finally:
        backend.stop()


def test_abort_while_a_handler_runs_without_reading_drops_its_output(strict_backend):
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        client.send(request_bytes(cgi_params("GET", "/sleep?s=0.5")))
        time.sleep(0.1)
        client.send(encode_record(FCGI_ABORT_REQUEST, 1))
        reply = client.read_reply()
    assert reply.ended and reply.stdout == b""
    strict_backend.wait_for_log("GET /sleep?s=0.5 aborted by the web server")


def test_head_answers_carry_headers_only(strict_backend):
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        get = client.request(cgi_params("GET", "/hello/head"))
    with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
        head = client.request(cgi_params("HEAD", "/hello/head"))
    assert head.status == 200 and head.body == b""
    length = [line for line in head.stdout.split(b"\r\n") if line.lower().startswith(b"content-length")]
    assert length == [b"Content-Length: %d" % len(get.body)]
    assert not [rec for rec in head.records if rec[0] == FCGI_STDOUT and len(rec[2]) > 1000]


def test_wsgi_input_is_marked_terminated(site, workdir):
    """Frameworks (werkzeug) read a body without Content-Length only when the server says it ends it."""
    backend = Backend(site, workdir / "run", ["--app", f"{os.path.dirname(__file__)}/wsgi_apps.py:environ_flags"]).start()
    try:
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            reply = client.request(cgi_params("GET", "/"))
        assert b"wsgi.input_terminated=True" in reply.body
    finally:
        backend.stop()


def test_many_slow_clients_at_once_do_not_stop_service(strict_backend):
    """Twice as many silent connections as workers, opened again and again for a while: normal
    requests in between are all answered, each within the idle timeout."""
    stop = threading.Event()

    def pester():
        while not stop.is_set():
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(strict_backend.socket_path))
                s.settimeout(8)  # longer than a request may wait
                s.recv(1)
            except OSError:
                pass
            finally:
                s.close()
    threads = [threading.Thread(target=pester) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            started = time.monotonic()
            with FastCGIClient(strict_backend.socket_path, timeout=10) as client:
                assert client.request(cgi_params("GET", "/api/time")).status == 200
            assert time.monotonic() - started < 4.5
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_a_small_body_over_max_body_sent_in_one_write_is_answered_413(site, workdir):
    """Apache sends a small request's PARAMS and STDIN in one write: the STDIN records already
    received were checked against the limit again after the 413 was written, and the connection
    closed before it left (Apache answered 503)."""
    backend = Backend(site, workdir / "run", ["--prefork", "1", "--max-body", "2K"]).start()
    try:
        body = b"a=" + b"x" * 4094
        params = cgi_params("POST", "/echo", body_length=len(body), content_type="application/x-www-form-urlencoded")
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            reply = client.request(params, body)
        assert reply.ended and reply.status == 413 and b"exceeds the body size limit" in reply.stdout
        assert still_serving(backend)
    finally:
        backend.stop()


def test_a_request_that_arrives_whole_is_seen_as_one_that_arrives_record_by_record(site, workdir):
    """The usual request, found whole in one read, takes the C scanner's way in; one that arrives
    in pieces goes record by record. The application must not tell them apart. (Two requests in
    one write on a kept connection: the second's BEGIN_REQUEST, read while the first was still
    being answered, used to close the connection as a BEGIN_REQUEST for an active request.)"""
    backend = Backend(site, workdir / "run", ["--app", f"{os.path.dirname(__file__)}/wsgi_apps.py:environ_dump"]).start()
    params = cgi_params("POST", "/a/b?x=1&y=%C3%A9", 9, "application/x-www-form-urlencoded",
                        HTTP_COOKIE="k=v", HTTP_X_LONG="v" * 300, SCRIPT_FILENAME="proxy:fcgi://localhost/a/b")
    data = request_bytes(params, b"x=1&y=two")
    try:
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            client.send(data)
            whole = client.read_reply()
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            for start in range(0, len(data), 8):  # a record header, then the rest, in pieces
                client.send(data[start:start + 8])
                time.sleep(0.002)
            pieces = client.read_reply()
        with FastCGIClient(backend.socket_path, timeout=10) as client:  # two in one write, on a kept connection
            client.send(request_bytes(params, b"x=1&y=two", keep_conn=True) + data)
            kept = client.read_reply()
            second = client.read_reply()
    finally:
        backend.stop()
    assert whole.status == pieces.status == kept.status == second.status == 200
    assert json.loads(whole.body) == json.loads(pieces.body) == json.loads(kept.body) == json.loads(second.body)
    seen = json.loads(whole.body)
    assert seen["body"] == "x=1&y=two" and seen["HTTP_X_LONG"] == "v" * 300 and seen["PATH_INFO"] == "/a/b"


def test_a_served_request_leaves_nothing_for_the_cyclic_collector():
    """A request, its streams, its environ and its connection are freed when they are done with:
    each used to be a reference cycle, and the collector ran every fifty requests or so (a pause that
    walked every object of the request in hand)."""
    import gc

    from fcgi_backend.gateway import FastCGIGateway
    from wsgi_apps import hello

    gateway = FastCGIGateway(hello, multiprocess=True, max_conns=4)
    requests = [request_bytes(cgi_params("GET", "/hello")),  # taken whole
                request_bytes(cgi_params("POST", "/hello", 5), b"12345", keep_conn=True)]

    def serve(data: bytes) -> bytes:
        ours, theirs = socket.socketpair()
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        gateway.connection(ours, None).serve_request()
        answer = theirs.recv(65536)
        theirs.close()
        ours.close()
        return answer

    for data in requests:
        serve(data)  # (first use: imports, caches)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        answers = [serve(data) for data in requests * 10]
        gc.collect()
        # (only the server's own objects: another thread of the test process may leave garbage of its own)
        garbage = [type(obj).__name__ for obj in gc.garbage if type(obj).__module__.startswith("fcgi_backend")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert all(b"Hello" in answer for answer in answers)
    assert garbage == []
