"""An answer's records framed and sent by C (connector_c/fcgi_answer.c through sockio.send_answer):
the bytes on the wire are those of the Python framing (records.frame_answer), whatever the sizes,
however much the socket takes at once; a web server gone is an error, not a signal."""

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from fcgi_backend.records import ANSWER_RECORD_MAX, FCGI_STDERR, FCGI_STDOUT, RecordParser, frame_answer
from fcgi_backend.sockio import send_answer


def sent_and_received(head: bytes, body: bytes, end: bool, record_type=FCGI_STDOUT, request_id=7,
                      send_buffer=0, read_after=0.0) -> bytes:
    """What the web server's side receives when ``send_answer`` sends ``head`` + ``body``."""
    ours, theirs = socket.socketpair()
    if send_buffer:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    received = []

    def read():
        time.sleep(read_after)
        received.extend(iter(lambda: theirs.recv(65536), b""))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        send_answer(ours, request_id, head, body, 5.0, end, record_type)
        ours.close()
        reader.join(10)
        assert not reader.is_alive()
    finally:
        ours.close()
        theirs.close()
    return b"".join(received)


def records_of(data: bytes) -> list:
    parser = RecordParser()
    parser.feed(data)
    records = []
    while (record := parser.next_record()) is not None:
        records.append((record.type, record.requestId, record.paddingLength, bytes(record.contentData)))
    assert parser.pending == 0
    return records


HEAD = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"


@pytest.mark.parametrize("head_len, body_len", [
    (0, 0), (len(HEAD), 0), (0, 1), (len(HEAD), 12), (len(HEAD), ANSWER_RECORD_MAX - len(HEAD)),
    (len(HEAD), ANSWER_RECORD_MAX - len(HEAD) + 1), (ANSWER_RECORD_MAX, 0), (ANSWER_RECORD_MAX + 5, 3),
    (len(HEAD), 3 * ANSWER_RECORD_MAX + 17), (0, 64 * ANSWER_RECORD_MAX)])
@pytest.mark.parametrize("end", [True, False])
def test_c_frames_an_answer_as_the_python_framing_does(head_len, body_len, end):
    head = (HEAD * (head_len // len(HEAD) + 1))[:head_len]
    body = bytes(range(251)) * (body_len // 251) + bytes(range(body_len % 251))
    wire = sent_and_received(head, body, end)
    assert wire == b"".join(frame_answer(FCGI_STDOUT, 7, head + body, end))
    records = records_of(wire)
    content = [r for r in records if r[0] == FCGI_STDOUT]
    assert b"".join(r[3] for r in content) == head + body
    assert all(0 < len(r[3]) <= ANSWER_RECORD_MAX and r[2] == 0 and r[1] == 7 for r in content)
    assert (records[-1][:2] == (3, 7) and records[-1][3] == bytes(8)) if end else records == content


def test_stderr_records_and_a_request_id_over_255():
    wire = sent_and_received(b"a traceback\n", b"", True, record_type=FCGI_STDERR, request_id=0x1234)
    assert records_of(wire) == [(FCGI_STDERR, 0x1234, 0, b"a traceback\n"), (3, 0x1234, 0, bytes(8))]


@pytest.mark.parametrize("body_len", [1 << 20, 5 << 20], ids=["1MiB", "5MiB-over-64-records"])
def test_what_the_socket_does_not_take_at_once_follows_in_order(body_len):
    body = bytes(range(256)) * (body_len // 256)
    wire = sent_and_received(HEAD, body, True, send_buffer=4096, read_after=0.2)
    assert wire == b"".join(frame_answer(FCGI_STDOUT, 7, HEAD + body, True))


def test_a_web_server_that_reads_nothing_is_a_timeout():
    ours, theirs = socket.socketpair()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            send_answer(ours, 1, HEAD, bytes(4 << 20), 0.3, True)
        assert 0.3 <= time.monotonic() - started < 3
    finally:
        ours.close()
        theirs.close()


def test_a_web_server_gone_is_an_error_and_no_sigpipe():
    """Python ignores SIGPIPE, but an embedding or a library may restore it: the send itself must
    not raise the signal (MSG_NOSIGNAL), or the worker dies without a word."""
    script = """
import signal, socket
from fcgi_backend.sockio import send_answer
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
ours, theirs = socket.socketpair()
theirs.close()
try:
    send_answer(ours, 1, b"Status: 200 OK\\r\\n\\r\\n", b"x", 1.0, True)
except OSError as exc:
    print(type(exc).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"killed by signal {-result.returncode}" if result.returncode < 0 else result.stderr
    assert result.stdout.strip() in ("BrokenPipeError", "ConnectionResetError")
    assert -signal.SIGPIPE != result.returncode
