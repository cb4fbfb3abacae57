"""The floor under any Python FastCGI server: the least a preforked Python worker can do per
request, with the WSGI hello.   python python_floor_hello.py SOCKET WORKERS [BUSY_US]

Each worker: a blocking accept, reads until the request is whole, this project's C scanner for
the records and params (records.WholeRequestScanner), the environ, the application, the answer framed by hand and sent
with END_REQUEST in one sendmsg, shutdown, close. No deadlines, no scoreboard, no hooks, no
streams, no lingering: not a server to deploy, a measure of what the interpreter itself costs
(bench/profile_bench.py runs it beside ours). A request of another shape is closed unanswered.

BUSY_US (default 0) adds that many microseconds of pure computation to each request, a loop
that calls nothing and touches no memory: a floor as busy as a heavier worker but for what its
code does, to tell the cost of a worker's CPU time from the cost of its code's shape.
"""

import os
import socket
import struct
import sys
import time

from fcgi_backend.records import WholeRequestScanner
from hello_wsgi import hello

HEADER = struct.Struct("!BBHHBx")
FCGI_STDOUT, FCGI_END_REQUEST = 6, 3


def answer(request_id: int, status: str, headers: list, body: list) -> list[bytes]:
    block = [b"Status: ", status.encode("latin-1"), b"\r\n"]
    for name, value in headers:
        block += (name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
    block.append(b"\r\n")
    block.extend(body)
    stdout = b"".join(block)
    return [HEADER.pack(1, FCGI_STDOUT, request_id, len(stdout), 0), stdout,
            HEADER.pack(1, FCGI_END_REQUEST, request_id, 8, 0), bytes(8)]


def loops_per_microsecond() -> float:
    """How many turns of busy()'s loop this interpreter makes in a microsecond, here and now
    (in calls of a request's size: a call's own cost counts); the best of five tries, as a try
    that a start-up's other work interrupts comes out slow."""
    fastest = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(1000):
            busy(1500)
        fastest = min(fastest, time.process_time() - started)
    return 1000 * 1500 / (fastest * 1e6)


def busy(turns: int) -> None:
    for _ in range(turns):
        pass


def serve(listener: socket.socket, busy_turns: int) -> None:
    scanner = WholeRequestScanner(65536, 65536, 256 * 1024)
    buffer = scanner.receive_buffer
    while True:
        fd, _ = listener._accept()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fd)
        received, whole = 0, None
        while whole is None:  # the web server may write a request in parts
            got = client.recv_into(buffer[received:])
            if not got:
                break
            received += got
            whole = scanner.scan_received(received)[1]
            if whole is None and not scanner.incomplete:
                break
        if whole is not None:
            environ = whole.params
            environ["wsgi.version"] = (1, 0)
            started = []
            if busy_turns:
                busy(busy_turns)
            body = hello(environ, lambda status, headers, exc_info=None: started.extend((status, headers)))
            client.sendmsg(answer(whole.request_id, started[0], started[1], body))
            client.shutdown(socket.SHUT_WR)
            try:
                client.recv_into(buffer, 0, socket.MSG_DONTWAIT)  # the web server's end, if already there
            except BlockingIOError:
                pass
        client.close()


if __name__ == "__main__":
    path, workers = sys.argv[1], int(sys.argv[2])
    busy_us = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    busy_turns = round(busy_us * loops_per_microsecond()) if busy_us else 0
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(511)
    for _ in range(workers):
        if os.fork() == 0:
            serve(listener, busy_turns)
    while True:
        os.wait()
