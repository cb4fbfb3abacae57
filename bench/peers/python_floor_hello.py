"""The floor under any Python FastCGI server: the least a preforked Python worker can do per
request, with the WSGI hello.   python python_floor_hello.py SOCKET WORKERS

Each worker: a blocking accept, reads until the request is whole, this project's C scanner for
the records and params (records.WholeRequestScanner), the environ, the application, the answer framed by hand and sent
with END_REQUEST in one sendmsg, shutdown, close. No deadlines, no scoreboard, no hooks, no
streams, no lingering: not a server to deploy, a measure of what the interpreter itself costs
(bench/profile_bench.py runs it beside ours). A request of another shape is closed unanswered.
"""

import os
import socket
import struct
import sys

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


def serve(listener: socket.socket) -> None:
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
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(511)
    for _ in range(workers):
        if os.fork() == 0:
            serve(listener)
    while True:
        os.wait()
