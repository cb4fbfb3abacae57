"""The Apache connector module (mod_fcgi_backend) in a real Apache, in front of the real backend."""

import gzip
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from apache_harness import MODULE_DIR, Apache, Backend, wait_for
from conftest import Stack, build_test_site, post_form, stack_fixture
from fcgi_backend.records import FCGI_STDIN, FCGI_STDOUT, RecordParser, frame_answer
from test_uploads_apache import MiB, StreamedFile, multipart_stream, post_streamed, sha256_file, upload_then_vanish

TESTS = Path(__file__).resolve().parent


class ConnectorStack(Stack):
    """The test site's backend with two Apaches in front: the connector and mod_proxy_fcgi."""

    def __init__(self, root: Path, backend_args=None) -> None:
        super().__init__(root, backend_args)
        self.proxy = self.apache
        try:
            self.apache = Apache(self.site, root / "run-connector", connector=True).start()
        except BaseException:
            self.proxy.stop()
            self.backend.stop()
            raise

    def stop(self) -> None:
        self.proxy.stop()
        super().stop()


@pytest.fixture(scope="module")
def stack():
    yield from stack_fixture("fcgi-connector-", stack_class=ConnectorStack, upload_dirs=True)


def connector_log(stack) -> str:
    return stack.apache.error_log.read_text(errors="replace")


@pytest.mark.parametrize("path", ["/", "/?name=Zoë", "/about", "/docs/", "/hello/Mod", "/api/time", "/nothing",
                                  "/forbidden", "/teapot", "/boom", "/style.css"])
def test_the_same_backend_answers_the_same_through_either_connector(stack, path):
    a = requests.get(stack.url + path, timeout=10, allow_redirects=False)
    b = requests.get(stack.proxy.url + path, timeout=10, allow_redirects=False)
    assert a.status_code == b.status_code
    assert a.headers.get("Content-Type") == b.headers.get("Content-Type")
    assert without_times(a.content) == without_times(b.content)


def without_times(page: bytes) -> bytes:
    """A page with its clock readings blanked (the two answers may fall in different seconds)."""
    return re.sub(rb"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[.\d+:]*", b"TIME", page)


def test_form_post_redirect_and_cookies(stack):
    session = requests.Session()
    r = post_form(session, stack.url + "/guestbook", {"name": "Mo", "message": "via module"}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/guestbook"
    assert "<b>Mo</b>: via module" in session.get(stack.url + "/guestbook", timeout=10).text
    r = session.get(stack.url + "/cookie", timeout=10)
    assert r.cookies.get("visited") == "yes"


def test_body_of_known_length_goes_as_one_x_stdin_stream(stack):
    r = requests.post(stack.url + "/echo?q=1", data={"f": "v"}, timeout=10,
                      headers={"Authorization": "Basic abc", "X-Custom": "c"})
    got = r.json()
    assert got["form"] == {"f": ["v"]} and got["query"] == {"q": ["1"]}
    assert got["authorization"] == "Basic abc" and got["x_custom"] == "c"
    assert got["x_stdin_length"] == len("f=v")


def test_chunked_body_goes_as_stdin_records(stack):
    r = requests.put(stack.url + "/echo", data=iter([b"abc", b"defgh"]), timeout=10,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.json()["body_length"] == 8 and r.json()["x_stdin_length"] is None


def test_upload_stream_can_be_turned_off(workdir):
    s = Stack(workdir)
    apache = Apache(s.site, workdir / "run-off", connector=True, extra_config="FcgiBackendUploadStream Off").start()
    try:
        r = requests.post(apache.url + "/echo", data=b"12345", timeout=10)
        assert r.json()["body_length"] == 5 and r.json()["x_stdin_length"] is None
    finally:
        apache.stop()
        s.stop()


def test_one_gib_upload_through_the_connector(stack):
    content = StreamedFile(1024 * MiB, seed=21)
    expected = hashlib.sha256()
    for piece in content.pieces():
        expected.update(piece)
    length, pieces = multipart_stream({"via": "connector"}, "big", "big.bin", content)
    status, body = post_streamed(stack.apache.port, f"/upload?keep_dir={stack.root}/kept", length, pieces)
    assert status == 200, body[:300]
    (entry,) = json.loads(body)["files"]
    assert entry["size"] == content.size
    assert sha256_file(stack.root / "kept" / "big") == expected.hexdigest()
    assert os.listdir(stack.root / "uploads") == []
    (stack.root / "kept" / "big").unlink()


def test_client_abort_mid_upload_leaves_nothing_behind(stack):
    upload_then_vanish(stack.apache.port, stack.root / "uploads", 300, 50)
    wait_for(lambda: os.listdir(stack.root / "uploads") == [], 30, "removal of the partial upload")
    stack.backend.wait_for_log("of the upload stream")
    assert requests.get(stack.url + "/hello/after", timeout=10).status_code == 200


def test_backend_down_is_503_with_a_log_line_naming_the_socket(workdir):
    site = build_test_site(workdir)
    apache = Apache(site, workdir / "run", connector=True).start()
    try:
        r = requests.get(apache.url + "/hello/nobody", timeout=10)
        assert r.status_code == 503
        log = apache.error_log.read_text()
        assert f"cannot connect to the backend at {site}/fcgi_backend.sock" in log
    finally:
        apache.stop()


@pytest.fixture
def plain_app_stack(workdir):
    """A backend serving a plain WSGI app from tests/wsgi_apps.py, behind the connector."""
    def start(app: str):
        site = build_test_site(workdir)
        backend = Backend(site, workdir / "run", ["--app", f"{TESTS / 'wsgi_apps.py'}:{app}",
                                                  "--prefork", "1"]).start()
        apache = Apache(site, workdir / "run", connector=True).start()
        started.append((apache, backend))
        return apache, backend
    started = []
    yield start
    for apache, backend in started:
        apache.stop()
        backend.stop()


def test_a_large_response_streams_without_being_held_whole(plain_app_stack):
    apache, _ = plain_app_stack("streamer")
    conn = http.client.HTTPConnection("127.0.0.1", apache.port, timeout=60)
    started = time.monotonic()
    conn.request("GET", "/stream?mib=200&pause=1.5")
    response = conn.getresponse()
    first = response.read(1 << 20)
    first_at = time.monotonic() - started
    digest, total = hashlib.sha256(first), len(first)
    while chunk := response.read(1 << 20):
        digest.update(chunk)
        total += len(chunk)
    assert total == 200 * MiB + len(b"the end\n")
    assert first_at < 1.5  # the start arrived while the backend was still producing the end
    expected = hashlib.sha256()
    for _ in range(200):
        expected.update(bytes(range(256)) * 4096)
    expected.update(b"the end\n")
    assert digest.hexdigest() == expected.hexdigest()


def test_backend_dying_mid_response_ends_the_client_connection(plain_app_stack):
    apache, _ = plain_app_stack("dies_midway")
    conn = http.client.HTTPConnection("127.0.0.1", apache.port, timeout=30)
    conn.request("GET", "/anything")
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead):  # the response cannot look complete
        response.read()
    wait_for(lambda: "closed the connection before the end of the response" in apache.error_log.read_text(),
             10, "the error log line")


class ForeignResponder:
    """A FastCGI responder on the site's socket that is not ours: it answers each request with the
    header block and body listed for its query string, then END_REQUEST, whatever they say (the
    connector may be pointed at any FastCGI application)."""

    def __init__(self, socket_path: Path, answers: dict[bytes, bytes]) -> None:
        self.answers = answers
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(socket_path))
        os.chmod(socket_path, 0o666)  # (Apache's children run as www-data)
        self.listener.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(10)
                parser, received = RecordParser(), b""
                while not any(r.type == FCGI_STDIN and not r.contentLength for r in iter(parser.next_record, None)):
                    data = conn.recv(65536)
                    if not data:
                        break
                    received += data
                    parser.feed(data)
                answer = next((a for query, a in self.answers.items() if b"QUERY_STRING" + query in received), b"")
                conn.sendall(b"".join(bytes(part) for part in frame_answer(FCGI_STDOUT, 1, answer, end=True)))

    def close(self) -> None:
        self.listener.close()


def test_the_connector_holds_any_backend_to_its_content_length_and_its_own_framing(workdir):
    """Whatever a FastCGI application says, the connector passes on no byte past its
    Content-Length (the client would read it as the start of the next answer), cuts off an answer
    short of it, and passes on no Content-Length that is not one number, nor a hop-by-hop header
    (a Transfer-Encoding had Apache send the body unframed under it)."""
    site = build_test_site(workdir)
    head = b"Content-Type: text/plain\r\nContent-Length: %s\r\n\r\n"
    backend = ForeignResponder(site / "fcgi_backend.sock", {
        b"long": head % b"3" + b"hello world", b"short": head % b"30" + b"hello world",
        b"plus": head % b"+11" + b"hello world", b"huge": head % b"99999999999999999999" + b"hello world",
        b"hop": b"Transfer-Encoding: chunked\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nhello world"})
    apache = Apache(site, workdir / "run", connector=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", apache.port, timeout=10)
        for query, body in [("long", b"hel"), ("plus", b"hello world"), ("huge", b"hello world"),
                            ("hop", b"hello world"), ("long", b"hel")]:  # on one connection
            conn.request("GET", "/x?" + query)
            response = conn.getresponse()
            assert response.read() == body, query
            assert response.getheader("Content-Length") in (None, str(len(body)))  # (Apache's own, or chunked)
            assert response.getheader("Upgrade") is None
        conn.request("GET", "/x?short")
        response = conn.getresponse()
        if response.status == 200:  # its start was passed on: the rest cannot look complete
            with pytest.raises(http.client.IncompleteRead):
                response.read()
        else:  # (all of it had come in one read: nothing was passed on yet)
            assert response.status == 502 and b"hello" not in response.read()
        log = apache.error_log.read_text()
        assert "the backend sent more than its Content-Length (3); the rest is dropped" in log
        assert "the backend's body ended at 11 of its Content-Length 30" in log
        assert "the backend's Content-Length is not one number (+11)" in log
        assert "the backend's hop-by-hop header Transfer-Encoding is dropped" in log
    finally:
        apache.stop()
        backend.close()


def _apache_children(apache) -> list[int]:
    with open(f"/proc/{apache.proc.pid}/task/{apache.proc.pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _rss_and_fds(pids) -> tuple[int, int]:
    rss = fds = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            rss += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        fds += len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def test_a_long_run_of_requests_does_not_grow_apache(stack):
    url = stack.url + "/hello/leak"
    subprocess.run(["wrk", "-t1", "-c4", "-d2s", url], capture_output=True, check=True)  # warm up
    time.sleep(2)  # client connections closing
    pids = _apache_children(stack.apache)
    rss_before, fds_before = _rss_and_fds(pids)
    out = subprocess.run(["wrk", "-t2", "-c8", "-d8s", url], capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    assert _apache_children(stack.apache) == pids  # no child was replaced meanwhile
    time.sleep(2)
    rss_after, fds_after = _rss_and_fds(pids)
    assert fds_after <= fds_before + 2  # no backend socket left open
    assert rss_after - rss_before < 4 * 1024, (rss_before, rss_after)  # KiB: no growth per request


# ---- input filters that change the body, and responses HTTP forbids ------------------------------

DEFLATE_CONFIG = f"""LoadModule deflate_module {MODULE_DIR}/mod_deflate.so
# Small inflate buffers: one read of the body is then many small buckets.
DeflateBufferSize 512
<Location "/raw-sha256">
    SetInputFilter DEFLATE
</Location>
"""


@pytest.fixture(scope="module")
def deflate_stack():
    """The connector behind an Apache that inflates gzip request bodies (mod_deflate's input filter)."""
    def with_deflate(root, backend_args):
        s = Stack(root, backend_args)
        s.apache.stop()
        s.apache = Apache(s.site, root / "run-deflate", connector=True, extra_config=DEFLATE_CONFIG).start()
        return s
    yield from stack_fixture("fcgi-deflate-", stack_class=with_deflate)


def gzipped_body() -> tuple[bytes, bytes]:
    """About 8 MB of text and its gzip form (about 50 times smaller)."""
    plain = b"".join(b"line %07d of a body that compresses well\n" % i for i in range(190_476))
    return plain, gzip.compress(plain, 6)


def test_a_body_inflated_by_an_input_filter_arrives_whole_with_content_length(deflate_stack):
    """Content-Length gives the gzip size; X_STDIN used to announce it and cut the inflated body."""
    plain, packed = gzipped_body()
    r = requests.post(deflate_stack.url + "/raw-sha256", data=packed, timeout=60,
                      headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.json() == {"size": len(plain), "sha256": hashlib.sha256(plain).hexdigest()}


def test_a_chunked_body_in_many_small_pieces_through_an_input_filter(deflate_stack):
    """More than 32 small buckets in one brigade, sent as STDIN records: the record batch used to
    overwrite its own bookkeeping and crash the Apache child."""
    plain, packed = gzipped_body()
    pieces = (packed[i:i + 4096] for i in range(0, len(packed), 4096))
    r = requests.post(deflate_stack.url + "/raw-sha256", data=pieces, timeout=60,
                      headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.json() == {"size": len(plain), "sha256": hashlib.sha256(plain).hexdigest()}
    log = deflate_stack.apache.error_log.read_text(errors="replace")
    assert "Segmentation fault" not in log and "exit signal" not in log


@pytest.mark.parametrize("status", ["101 Switching Protocols", "100 Continue", "999 Beyond", "200 " + "x" * 5000,
                                    "404 Not\x01Found"])
def test_a_status_http_forbids_is_a_502_and_a_log_line(workdir, status):
    """From any FastCGI application (this backend answers such a status of its application's with
    its own 500): the connector passes on no status HTTP has no room for."""
    site = build_test_site(workdir)
    backend = ForeignResponder(site / "fcgi_backend.sock", {
        b"bad": b"Status: " + status.encode("latin-1") + b"\r\nContent-Type: text/plain\r\n\r\nnever see",
        b"good": b"Status: 201 Created\r\nContent-Type: text/plain\r\n\r\nnever see"})
    apache = Apache(site, workdir / "run", connector=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", apache.port, timeout=10)
        conn.request("GET", "/?bad")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 502 and b"never see" not in body
        assert "refused the response" in apache.error_log.read_text()
        conn.request("GET", "/?good")  # the client's connection is still in step
        response = conn.getresponse()
        assert response.status == 201 and b"never see" in response.read()
    finally:
        apache.stop()
        backend.close()
