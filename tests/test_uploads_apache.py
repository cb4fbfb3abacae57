"""Uploads end to end: a real Apache with mod_proxy_fcgi in front of the backend."""

import hashlib
import http.client
import json
import os
import socket
import subprocess

import pytest

from apache_harness import Apache, Backend, wait_for
from conftest import Stack, build_test_site, stack_fixture

BOUNDARY = "----fcgiUploadBoundaryQ2xvY2sK"
MiB = 1024 * 1024


class StreamedFile:
    """A deterministic pseudo-random file of ``size`` bytes, generated in 1 MiB pieces."""

    def __init__(self, size: int, seed: int = 7) -> None:
        self.size = size
        self.block = hashlib.shake_256(str(seed).encode()).digest(MiB)

    def pieces(self):
        sent = 0
        i = 0
        while sent < self.size:
            r = i % MiB
            piece = self.block[r:] + self.block[:r]  # rotate, so no two MiB are alike
            piece = piece[:self.size - sent]
            sent += len(piece)
            i += 4099
            yield piece


def multipart_stream(fields: dict, name: str, filename: str, content: StreamedFile):
    """(length, iterator of body pieces) of a multipart body with one streamed file."""
    head = b"".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    head += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def pieces():
        yield head
        yield from content.pieces()
        yield tail
    return len(head) + content.size + len(tail), pieces()


def post_streamed(port: int, path: str, length: int, pieces, chunked: bool = False, timeout: float = 300):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    else:
        conn.putheader("Content-Length", str(length))
    conn.endheaders()
    for piece in pieces:
        if chunked:
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        else:
            conn.send(piece)
    if chunked:
        conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def send_128_mib(url: str, folder, *how: str) -> tuple[str, int]:
    """curl sends a 128 MiB file (sparse, made in ``folder``) to ``url`` as ``how`` says, FILE
    standing for its path (``-F file=@FILE``, ``-T FILE``): the status it got and the bytes it
    had sent by then."""
    big = folder / "big.bin"
    with open(big, "wb") as f:
        f.truncate(128 * MiB)
    out = subprocess.run(["curl", "-sS", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
                          *(arg.replace("FILE", str(big)) for arg in how), url], capture_output=True, timeout=90)
    status, sent = out.stdout.decode().split()
    return status, int(sent)


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def upload_stack():
    yield from stack_fixture("fcgi-uploads-", ["--max-file", "2G"], upload_dirs=True)


def test_one_gib_upload_through_mod_proxy_fcgi(upload_stack):
    content = StreamedFile(1024 * MiB)
    expected = hashlib.sha256()
    for piece in content.pieces():
        expected.update(piece)
    length, pieces = multipart_stream({"note": "big one"}, "big", "big.bin", content)
    status, body = post_streamed(upload_stack.apache.port, f"/upload?keep_dir={upload_stack.root}/kept",
                                 length, pieces)
    assert status == 200, body[:500]
    report = json.loads(body)
    assert report["fields"] == {"note": ["big one"]}
    (entry,) = report["files"]
    assert entry["size"] == content.size and entry["filename"] == "big.bin"
    kept = upload_stack.root / "kept" / "big"
    assert entry["kept_at"] == str(kept)
    assert sha256_file(kept) == expected.hexdigest()  # every byte on disk as sent
    assert os.stat(kept).st_blocks * 512 <= content.size + MiB  # no disk space reserved past its end
    assert os.listdir(upload_stack.root / "uploads") == []  # no temporary file left
    kept.unlink()


def test_chunked_upload_without_content_length(upload_stack):
    content = StreamedFile(5 * MiB + 3, seed=11)
    expected = hashlib.sha256(b"".join(content.pieces())).hexdigest()
    length, pieces = multipart_stream({}, "f", "chunked.bin", content)
    status, body = post_streamed(upload_stack.apache.port, "/upload?hash=1", length, pieces, chunked=True)
    assert status == 200, body[:500]
    assert json.loads(body)["files"][0]["sha256"] == expected
    wait_for(lambda: os.listdir(upload_stack.root / "uploads") == [], 10, "removal of the temporary file")  # after the answer


def upload_then_vanish(port: int, uploads_dir, total_mib: int, sent_mib: int) -> None:
    """Start a ``total_mib`` upload, send ``sent_mib`` of it, wait until the backend is writing its
    temporary file, then close the connection as a browser tab that is shut would."""
    length, pieces = multipart_stream({}, "f", "aborted.bin", StreamedFile(total_mib * MiB, seed=3))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall((f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode())
    sent = 0
    for piece in pieces:
        sock.sendall(piece)
        sent += len(piece)
        if sent > sent_mib * MiB:
            break
    wait_for(lambda: os.listdir(uploads_dir), 30, "the temporary upload file")
    sock.close()


def test_client_abort_halfway_leaves_nothing_behind(upload_stack):
    upload_then_vanish(upload_stack.apache.port, upload_stack.root / "uploads", 200, 60)
    wait_for(lambda: os.listdir(upload_stack.root / "uploads") == [], 30, "removal of the partial upload")
    upload_stack.backend.wait_for_log("request input ended early")
    # the backend still serves
    conn = http.client.HTTPConnection("127.0.0.1", upload_stack.apache.port, timeout=10)
    conn.request("GET", "/hello/after")
    assert conn.getresponse().status == 200


def test_too_large_file_is_413_and_leaves_nothing(workdir):
    (workdir / "uploads").mkdir()
    s = Stack(workdir, ["--upload-dir", str(workdir / "uploads"), "--max-file", "1M"])
    try:
        length, pieces = multipart_stream({}, "f", "big.bin", StreamedFile(5 * MiB))
        status, body = post_streamed(s.apache.port, "/upload", length, pieces)
        assert status == 413 and b"file size limit" in body
        assert os.listdir(workdir / "uploads") == []
        s.backend.wait_for_log("exceeds the file size limit")
    finally:
        s.stop()


@pytest.mark.parametrize("connector", [False, True], ids=["mod_proxy_fcgi", "connector"])
@pytest.mark.parametrize("limit, framing", [("--max-file", "Content-Length"), ("--max-body", "chunked")])
def test_an_upload_over_a_limit_gets_its_413_without_sending_the_rest(workdir, connector, limit, framing):
    """A file past --max-file (or a chunked body past --max-body) was read to its end before the
    413 went out, to keep the FastCGI connection in step: curl sent all 128 MiB of a file to learn
    it was over 1 MiB, as a browser would a 2 GB video. Now the reading stops at the refusal, the
    backend closes that connection after the 413, and Apache closes the client's."""
    site = build_test_site(workdir)
    uploads = workdir / "uploads"
    uploads.mkdir()
    backend = Backend(site, workdir / "run", ["--upload-dir", str(uploads), limit, "1M", "--prefork", "1"]).start()
    try:
        apache = Apache(site, workdir / "run", connector=connector).start()
    except BaseException:
        backend.stop()
        raise
    chunked = ["-H", "Transfer-Encoding: chunked"] if framing == "chunked" else []
    try:
        status, sent = send_128_mib(f"{apache.url}/upload", workdir, *chunked, "-F", "file=@FILE")
        assert status == "413" and sent < 32 * MiB, (status, sent)
        wait_for(lambda: os.listdir(uploads) == [], 5, "the upload's temporary file removed")
        conn = http.client.HTTPConnection("127.0.0.1", apache.port, timeout=10)
        conn.request("GET", "/hello/after")  # the one worker goes on
        assert conn.getresponse().status == 200
    finally:
        apache.stop()
        backend.stop()


def test_upload_form_of_the_example_site(upload_stack):
    content = StreamedFile(300_000, seed=5)
    length, pieces = multipart_stream({"comment": "a photo"}, "file", "photo.jpg", content)
    status, body = post_streamed(upload_stack.apache.port, "/upload-demo", length, pieces)
    assert status == 200
    assert b"photo.jpg" in body and b"300000 bytes" in body
    stored = upload_stack.site / "SQLiteDBs" / "uploads" / "photo.jpg"
    assert stored.read_bytes() == b"".join(StreamedFile(300_000, seed=5).pieces())


def test_a_server_side_failure_is_500_without_os_error_text(upload_stack):
    """The page says what status it is; why (the OS error, the path) goes to the log only."""
    uploads = upload_stack.root / "uploads"
    uploads.rename(upload_stack.root / "uploads-away")  # every temporary file now fails to open
    try:
        length, pieces = multipart_stream({"a": "1"}, "f", "f.bin", StreamedFile(1000))
        status, body = post_streamed(upload_stack.apache.port, "/upload", length, pieces)
    finally:
        (upload_stack.root / "uploads-away").rename(uploads)
    assert status == 500
    assert b"No such file" not in body and str(uploads).encode() not in body
    assert b"Internal Server Error" in body
    upload_stack.backend.wait_for_log("cannot create a temporary file in the upload directory: No such file")
