"""Where an upload's backend CPU goes: read, parse and write, each alone, beside the whole path.

The body is what Apache's mod_proxy_fcgi sends for a 1 GiB file: FCGI_STDIN records of 8 KiB
content, written into a unix socket by a separate process. In this process, timed by CPU time
(user + system) and wall time:

  * read:  recv_into a 256 KiB buffer until the writer hangs up, bytes dropped (the floor);
  * parse: the C multipart parser over the body in memory, in 8 KiB pieces, file not stored;
  * write: the body's bytes written to a file in the upload folder, 256 KiB at a time; again with
    the file's disk blocks reserved ahead of the writes, as the serving path does; and with those
    blocks reserved, 1 MiB at a time past the page cache (O_DIRECT), as it does past
    upload_direct_io (32 MiB by default);
  * whole: the serving path, records read by C from the socket into the parser and the file (the
    file past the page cache from 32 MiB, by a thread); and with upload_direct_io = 0, all of it
    through the page cache.

The whole path's CPU against the sum of the three parts shows what the path itself adds.

    python bench/upload_parts_bench.py [--runs 5] [--mib 1024] [--json results.json]
"""

from __future__ import annotations

import fcntl
import mmap
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
from multiprocessing import Process

from benchlib import in_turn, MiB, bench_arguments, print_table, write_json
from fcgi_backend.limits import Limits
from fcgi_backend.uploads import MultipartUpload

BOUNDARY = b"----partsBoundaryQmVuY2g"
RECORD = 8192  # mod_proxy_fcgi's record content (ProxyIOBufferSize)
BUFFER = 256 * 1024
RESERVE_STEP = 64 * MiB


def body_pieces(mib: int, block: bytes):
    """The multipart body of one file of ``mib`` MiB, as consecutive pieces."""
    yield (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
           b"Content-Type: application/octet-stream\r\n\r\n")
    for _ in range(mib):
        yield block
    yield b"\r\n--" + BOUNDARY + b"--\r\n"


def send_records(sock_fd: int, mib: int, block: bytes) -> None:
    """The web server's side: the body as STDIN records of request 1, then the empty one."""
    with socket.socket(fileno=sock_fd) as sock:
        pending = bytearray()
        for piece in body_pieces(mib, block):
            pending += piece
            while len(pending) >= RECORD:
                sock.sendall(struct.pack("!BBHHBx", 1, 5, 1, RECORD, 0) + pending[:RECORD])
                del pending[:RECORD]
        if pending:
            sock.sendall(struct.pack("!BBHHBx", 1, 5, 1, len(pending), 0) + pending)
        sock.sendall(struct.pack("!BBHHBx", 1, 5, 1, 0, 0))


def timed(work) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of work()."""
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def from_socket(mib: int, block: bytes, reader) -> tuple[float, float]:
    """Run reader(socket) against a writer process sending the body's records."""
    ours, theirs = socket.socketpair()
    writer = Process(target=send_records, args=(theirs.fileno(), mib, block))
    writer.start()
    theirs.close()
    try:
        return timed(lambda: reader(ours))
    finally:
        ours.close()
        writer.join()


def read_only(sock: socket.socket) -> None:
    buffer = memoryview(bytearray(BUFFER))
    while sock.recv_into(buffer):
        pass


def parse_only(mib: int, block: bytes, upload_dir: str) -> tuple[float, float]:
    pieces = [piece[i:i + RECORD] for piece in body_pieces(mib, block) for i in range(0, len(piece), RECORD)]

    def parse():
        upload = MultipartUpload(BOUNDARY, Limits(upload_dir=upload_dir), store_files=False)
        for piece in pieces:
            upload.feed(piece)
        upload.finish()
        upload.close()
    return timed(parse)


def write_only(mib: int, block: bytes, upload_dir: str, reserve_ahead: bool = False,
               direct: bool = False) -> tuple[float, float]:
    """The body's bytes written to a file; with ``reserve_ahead``, its blocks reserved 64 MiB at a
    time before the writes reach them, as the serving path does (connector_c/upload.c); with
    ``direct``, 1 MiB at a time from a page-aligned buffer with O_DIRECT (connector_c/direct_writer.c)."""
    if direct:
        aligned = mmap.mmap(-1, len(block))  # O_DIRECT wants an aligned buffer
        aligned[:] = block
    step = len(block) if direct else BUFFER

    def write():
        fd, path = tempfile.mkstemp(dir=upload_dir)
        if direct:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        try:
            view, written, reserved = memoryview(aligned if direct else block), 0, 0
            for _ in range(mib):
                for i in range(0, len(block), step):
                    if reserve_ahead and written + step > reserved:
                        os.posix_fallocate(fd, reserved, RESERVE_STEP)
                        reserved += RESERVE_STEP
                    written += os.write(fd, view[i:i + step])
        finally:
            os.close(fd)
            os.unlink(path)
    return timed(write)


def whole(mib: int, block: bytes, upload_dir: str, **limits) -> tuple[float, float]:
    def serve(sock: socket.socket) -> None:
        upload = MultipartUpload(BOUNDARY, Limits(upload_dir=upload_dir, **limits), store_files=True)
        ended, _ = upload.read_stdin_records(sock.fileno(), 1, b"")
        assert ended
        upload.finish()
        _, files = upload.results()
        assert files["file"].size == mib * MiB
        files["file"].discard()
        upload.close()
    return from_socket(mib, block, serve)


def main() -> int:
    args = bench_arguments(__doc__, runs=5, mib=1024).parse_args()
    block = os.urandom(MiB)
    upload_dir = tempfile.mkdtemp(prefix="fcgi-bench-parts-", dir=os.environ.get("UPLOAD_DIR", "/var/tmp"))
    stages = {
        "read": lambda: from_socket(args.mib, block, read_only),
        "parse": lambda: parse_only(args.mib, block, upload_dir),
        "write": lambda: write_only(args.mib, block, upload_dir),
        "write, blocks reserved ahead": lambda: write_only(args.mib, block, upload_dir, reserve_ahead=True),
        "write, blocks reserved, O_DIRECT": lambda: write_only(args.mib, block, upload_dir, reserve_ahead=True,
                                                               direct=True),
        "whole path": lambda: whole(args.mib, block, upload_dir),
        "whole path, page cache": lambda: whole(args.mib, block, upload_dir, upload_direct_io=0),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in stages}
    try:
        for round_no in range(args.runs):
            for name, stage in in_turn(stages.items(), round_no):
                cpu, wall = stage()
                samples[name].append((cpu, wall))
                print(f"round {round_no + 1}: {name}: CPU {cpu:.2f} s, wall {wall:.2f} s", flush=True)
    finally:
        os.rmdir(upload_dir)
    medians = {name: (statistics.median(s[0] for s in rows), statistics.median(s[1] for s in rows),
                      min(s[0] for s in rows), max(s[0] for s in rows)) for name, rows in samples.items()}
    parts = sum(medians[name][0] for name in ("read", "parse", "write, blocks reserved, O_DIRECT"))
    cached_parts = sum(medians[name][0] for name in ("read", "parse", "write, blocks reserved ahead"))
    print(f"\n{args.mib} MiB upload as mod_proxy_fcgi sends it, CPU of this process, median (min-max) of "
          f"{args.runs} runs\n")
    print_table(["stage", "CPU", "CPU per GiB", "wall"],
                [[name, f"{cpu:.2f} s ({low:.2f}-{high:.2f})", f"{cpu / args.mib * 1024:.2f} s", f"{wall:.2f} s"]
                 for name, (cpu, wall, low, high) in medians.items()]
                + [["read + parse + write (blocks reserved, O_DIRECT)", f"{parts:.2f} s",
                    f"{parts / args.mib * 1024:.2f} s", ""],
                   ["read + parse + write (blocks reserved, page cache)", f"{cached_parts:.2f} s",
                    f"{cached_parts / args.mib * 1024:.2f} s", ""]])
    print(f"\nthe whole path costs {medians['whole path'][0] / parts:.2f}x the sum of its parts; through the "
          f"page cache {medians['whole path, page cache'][0] / cached_parts:.2f}x")
    write_json(args.json, {"mib": args.mib, "runs": args.runs,
                           "results": {name: {"cpu_s": m[0], "wall_s": m[1]} for name, m in medians.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
