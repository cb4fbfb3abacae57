"""Apache speaking HTTP/2 to its clients (mod_http2 with `Protocols h2 http/1.1` over TLS, as
browsers use it), with each connector between it and the backend.

One HTTP/2 connection carries many requests at once, each on a stream of its own: Apache passes
each stream on over a backend connection of its own and sends the answers back interleaved. A
request body may come without a Content-Length, and a client drops one request by resetting its
stream while the connection goes on serving the others. The clients are headless Chromium and
the `h2` library's protocol state machine, not ours.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from apache_harness import MODULE_DIR, Apache, Backend, make_reachable_dir
from conftest import build_test_site
from pki import make_pki

TESTS = Path(__file__).resolve().parent
HTTP2 = f"LoadModule http2_module {MODULE_DIR}/mod_http2.so\nProtocols h2 http/1.1\n"
FRONTS = ["apache", "connector"]


@pytest.fixture(scope="module")
def pki():
    root = make_reachable_dir("fcgi-h2-pki-")
    yield make_pki(root / "pki")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def front(pki):
    """start(kind, backend_args) -> (Apache over HTTP/2 and TLS, the backend, the site folder)."""
    root = make_reachable_dir("fcgi-h2-")
    started = []

    def start(kind: str, backend_args: list[str] | None = None):
        site = build_test_site(root)
        (root / "uploads").mkdir()
        backend = Backend(site, root / "run", ["--upload-dir", str(root / "uploads"), *(backend_args or [])]).start()
        started.append(backend)
        apache = Apache(site, root / "run", extra_config=HTTP2, connector=kind == "connector",
                        tls=(pki.cert("server"), pki.key("server"))).start()
        started.append(apache)
        return apache, backend, root

    yield start
    for server in reversed(started):
        server.stop()
    shutil.rmtree(root, ignore_errors=True)


class H2Client:
    """One HTTP/2 connection over TLS, driven by the h2 library; streams run side by side."""

    def __init__(self, port: int, ca: Path, timeout: float = 30) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        context.set_alpn_protocols(["h2"])
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout),
                                        server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.streams: dict[int, dict] = {}
        self.timeout = timeout
        self._flush()

    def close(self) -> None:
        self.sock.close()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: str, path: str, body: bytes | None = None, headers=(),
                reset_after: int | None = None) -> int:
        """Open a stream; its body (if any) is sent as flow control allows. ``reset_after``: the
        client resets the stream once that many bytes of the answer have come."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", method), (":path", path), (":scheme", "https"),
                                     (":authority", "localhost"), *headers], end_stream=body is None)
        self.streams[sid] = {"status": None, "body": bytearray(), "ended": None, "reset_after": reset_after}
        self._flush()
        if body is not None:
            self._send_body(sid, body)
        return sid

    def _send_body(self, sid: int, body: bytes) -> None:
        """As flow control allows; a stream the server has answered and reset is sent no more
        (RFC 9113 8.1: the server needs no more of it). ``sent``: the body bytes that went out."""
        stream, view = self.streams[sid], memoryview(body)
        stream["sent"] = 0
        while stream["sent"] < len(body):
            if stream["ended"] is not None:
                return
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                       len(body) - stream["sent"])
            if room <= 0:
                self._receive()  # (window updates)
                continue
            self.conn.send_data(sid, view[stream["sent"]:stream["sent"] + room].tobytes())
            stream["sent"] += room
            self._flush()
        self.conn.end_stream(sid)
        self._flush()

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(data):
            stream = self.streams.get(getattr(event, "stream_id", None))
            if isinstance(event, h2.events.ResponseReceived):
                stream["status"] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if stream["ended"] is None:
                    stream["body"] += event.data
                    if stream["reset_after"] is not None and len(stream["body"]) >= stream["reset_after"]:
                        self.conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.CANCEL)
                        stream["ended"] = "reset by the client"
            elif isinstance(event, h2.events.StreamEnded) and stream["ended"] is None:
                stream["ended"] = "ended"
            elif isinstance(event, h2.events.StreamReset) and stream["ended"] is None:
                stream["ended"] = f"reset by the server: {h2.errors.ErrorCodes(event.error_code).name}"
        self._flush()

    def wait(self, *sids: int) -> list[dict]:
        """Each stream's status, body and how it ended, once all of them have."""
        deadline = time.monotonic() + self.timeout
        while any(self.streams[sid]["ended"] is None for sid in sids):
            assert time.monotonic() < deadline, "the answers did not all come in time"
            self._receive()
        return [self.streams[sid] for sid in sids]


def pattern(size: int) -> bytes:
    """The bytes the browser makes in JavaScript: byte i is (i * 31 + 7) mod 256."""
    return bytes((i * 31 + 7) & 255 for i in range(256)) * (size // 256)


@pytest.mark.skipif(not __import__("browser").CHROMIUM, reason="chromium (Debian package) not installed")
@pytest.mark.parametrize("kind", FRONTS)
def test_a_browser_over_http2_loads_pages_posts_a_form_and_uploads_a_file(front, kind):
    from browser import Browser

    apache, _, root = front(kind)
    size = 8 << 20
    with Browser() as browser:
        browser.goto(f"{apache.url}/guestbook")
        assert browser.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
        assert browser.evaluate("getComputedStyle(document.body).fontFamily") == "sans-serif"  # style.css, by Apache
        browser.submit("form", {"name": "Chromium", "message": "over HTTP/2"})
        assert "Chromium: over HTTP/2" in browser.evaluate("document.querySelector('.entries').innerText")
        report = browser.evaluate(f"""(async () => {{
            const bytes = new Uint8Array({size});
            for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 255;
            const form = new FormData();
            form.append("note", "sent by fetch");
            form.append("file", new Blob([bytes]), "pattern.bin");
            const answer = await fetch("/upload?hash=1", {{method: "POST", body: form}});
            return [answer.status, await answer.json()];
        }})()""")
    status, answer = report
    assert status == 200 and answer["fields"] == {"note": ["sent by fetch"]}
    file = answer["files"][0]
    assert (file["filename"], file["size"], file["sha256"]) == \
        ("pattern.bin", size, hashlib.sha256(pattern(size)).hexdigest())
    assert list((root / "uploads").iterdir()) == []  # removed with its request


@pytest.mark.parametrize("kind", FRONTS)
def test_streams_sent_at_once_on_one_connection_each_get_their_own_answer(front, pki, kind):
    """32 requests in flight on one connection, GETs and POSTs mixed, reach several workers at
    once: every stream gets the answer to its own request."""
    apache, _, _ = front(kind)
    client = H2Client(apache.port, pki.ca)
    try:
        sids = {}
        for n in range(32):
            if n % 2:
                sids[n] = client.request("POST", "/echo", f"n={n}".encode(),
                                         [("content-type", "application/x-www-form-urlencoded")])
            else:
                sids[n] = client.request("GET", f"/hello/stream{n}")
        answers = dict(zip(sids, client.wait(*sids.values())))
    finally:
        client.close()
    for n, answer in answers.items():
        assert (answer["status"], answer["ended"]) == (200, "ended"), n
        if n % 2:
            assert f'"form": {{"n": ["{n}"]}}' in answer["body"].decode()
        else:
            assert f"Hello, stream{n}!" in answer["body"].decode()


@pytest.mark.parametrize("kind", FRONTS)
def test_bodies_without_a_content_length_arrive_whole(front, pki, kind):
    """An HTTP/2 client need not say how long its body is (curl -T - does not): raw and multipart
    bodies reach the application whole either way, and the uploaded file is gone afterwards."""
    apache, _, root = front(kind)
    body = pattern(12 << 20)
    boundary = "h2-boundary-4f1c"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    client = H2Client(apache.port, pki.ca)
    try:
        raw_with = client.request("PUT", "/raw-sha256", body, [("content-length", str(len(body)))])
        raw_without = client.request("PUT", "/raw-sha256", body)
        multipart = client.request("POST", "/upload?hash=1", form,
                                   [("content-type", f"multipart/form-data; boundary={boundary}")])
        answers = client.wait(raw_with, raw_without, multipart)
    finally:
        client.close()
    digest = hashlib.sha256(body).hexdigest()
    for answer in answers:
        assert (answer["status"], answer["ended"]) == (200, "ended"), answer
    for answer in answers[:2]:
        assert f'"size":{len(body)},"sha256":"{digest}"' in answer["body"].decode().replace(" ", "")
    assert f'"sha256":"{digest}"' in answers[2]["body"].decode().replace(" ", "")
    assert list((root / "uploads").iterdir()) == []


@pytest.mark.parametrize("kind", FRONTS)
def test_an_upload_over_a_limit_is_refused_before_the_client_has_sent_it(front, pki, kind):
    """A 64 MiB file against --max-file 1M: the 413 comes while the body is on its way, and Apache
    resets the stream (NO_ERROR: send no more), so the client stops."""
    apache, _, root = front(kind, ["--max-file", "1M"])
    body = pattern(64 << 20)
    boundary = "h2-boundary-9d2e"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.bin\"\r\n\r\n".encode()
            + body + f"\r\n--{boundary}--\r\n".encode())
    client = H2Client(apache.port, pki.ca)
    try:
        sid = client.request("POST", "/upload", form, [("content-type", f"multipart/form-data; boundary={boundary}"),
                                                      ("content-length", str(len(form)))])
        [answer] = client.wait(sid)
    finally:
        client.close()
    assert answer["status"] == 413 and b"file size limit" in answer["body"]
    assert answer["sent"] < 32 << 20, answer["sent"]
    assert list((root / "uploads").iterdir()) == []


@pytest.mark.parametrize("kind", FRONTS)
def test_an_answer_the_application_cannot_finish_never_looks_whole(front, pki, kind):
    """The application fails once its body has begun: the browser must not take the part for the
    page, and the connection's other requests go on. The connector resets the stream at once;
    mod_proxy_fcgi hands mod_http2 no error for it (it does not under HTTP/1.1 either), and
    mod_http2 resets it in some runs and leaves it open in others, never ended."""
    apache, backend, _ = front(kind, ["--app", f"{TESTS / 'wsgi_apps.py'}:unfinished"])
    client = H2Client(apache.port, pki.ca)
    try:
        failing = client.request("GET", "/x?fail=midway")
        backend.wait_for_log("GET /x?fail=midway: the application failed after its answer began")
        [next_one] = client.wait(client.request("GET", "/x?too=long"))
        if kind == "connector":
            client.wait(failing)
        else:
            client.sock.settimeout(2)
            try:
                client.wait(failing)
            except TimeoutError:
                pass  # (still open: mod_http2's)
        failed = client.streams[failing]
    finally:
        client.close()
    assert (next_one["status"], next_one["ended"], bytes(next_one["body"])) == (200, "ended", b"hel")
    assert failed["body"] == b"hello " and failed["ended"] != "ended"
    if kind == "connector":
        assert failed["ended"] == "reset by the server: INTERNAL_ERROR"


@pytest.mark.parametrize("kind", FRONTS)
def test_a_download_whose_stream_the_client_resets_frees_the_worker(front, pki, kind):
    """A browser that drops a download resets its stream and keeps the connection: the backend's
    only worker must be free for the next request at once, and its log names the request."""
    apache, backend, _ = front(kind, ["--app", f"{TESTS / 'wsgi_apps.py'}:streamer", "--prefork", "1",
                                      "--maxfork", "1"])
    client = H2Client(apache.port, pki.ca)
    try:
        [dropped] = client.wait(client.request("GET", "/left?mib=500", reset_after=1 << 20))
        started = time.monotonic()
        [next_one] = client.wait(client.request("GET", "/next?mib=1"))
        waited = time.monotonic() - started
    finally:
        client.close()
    assert dropped["ended"] == "reset by the client"
    assert (next_one["status"], next_one["ended"], len(next_one["body"])) == (200, "ended", (1 << 20) + 8)
    assert waited < 5, f"the next request waited {waited:.1f}s for the worker"
    backend.wait_for_log("connection ended during GET /left?mib=500")
