"""The HTTP flavour (fcgi-backend serve-http) against gunicorn (sync workers, the same count),
side by side in one run, each serving:

  * the same WSGI hello (bench/peers/hello_wsgi.py), with wrk at 1, 16 and 64 keep-alive clients;
  * the benchmark site's mustache page: ours through its handler and view, gunicorn's rendered
    with pystache from the same template (bench/peers/gunicorn_apps.py);
  * a 1 GiB multipart upload: ours into the C parser, gunicorn's into python-multipart, both
    storing the file;
  * the hello over TLS with the same self-signed certificate: requests on kept connections, and a
    handshake per request (Connection: close).

Rounds are interleaved and the tables give medians, with the CPU time of each server's processes
per request or per upload (steadier than wall time on a shared machine). gunicorn's sync worker
closes each connection after its answer (it has no keep-alive): that is part of what is measured.

    python bench/http_bench.py [--runs 3] [--duration 4] [--workers 4] [--mib 1024] [--json FILE]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchlib import in_turn, bench_arguments, write_json, AS_USER, BENCH, MiB, CpuMeter, RssSampler, bench_site, post_upload, wait_for, wrk
from apache_harness import _port_open, free_port

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
CONCURRENCY = [1, 16, 64]


class Server:
    """A server process listening on a TCP port, in a session of its own."""

    def __init__(self, name: str, command: list[str], port: int, log: Path, env: dict | None = None,
                 scheme: str = "http") -> None:
        self.name, self.command, self.port, self.log, self.env, self.scheme = name, command, port, log, env, scheme
        self.proc = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **(self.env or {})})
        wait_for(lambda: _port_open(self.port), 20, self.name, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    return cert, key


def main() -> int:
    args = bench_arguments(__doc__, duration=4, workers=4, mib=1024).parse_args()
    if not os.path.exists(GUNICORN):
        print("gunicorn is not installed: pip install -r bench/requirements.txt (make bench does)", file=sys.stderr)
        return 2

    root, site = bench_site("fcgi-bench-http-")
    run, uploads = root / "run", root / "uploads"
    uploads.mkdir()
    cert, key = self_signed(run)
    peers = str(BENCH / "peers")
    ours = [sys.executable, "-m", "fcgi_backend", "serve-http", str(site), "--prefork", str(-args.workers),
            "--upload-dir", str(uploads), *AS_USER]
    hello_app = ["--app", f"{BENCH / 'peers' / 'hello_wsgi.py'}:hello"]
    env = {"BENCH_SITE": str(site), "UPLOAD_DIR": str(uploads)}

    def gunicorn(app: str, port: int, *extra: str) -> list[str]:
        return [GUNICORN, "-w", str(args.workers), "-k", "sync", "-b", f"127.0.0.1:{port}", "--chdir", peers,
                "--log-level", "warning", *extra, f"gunicorn_apps:{app}"]

    def server(name: str, command_of_port, scheme: str = "http") -> Server:
        port = free_port()
        return Server(name, command_of_port(port), port, run / f"{name}.log", env, scheme)

    # (table, server name, server, URL path)
    pages = [
        ("hello", "fcgi_backend", server("ours-hello", lambda p: [*ours, "--listen", f"127.0.0.1:{p}", *hello_app]),
         "/hello"),
        ("hello", "gunicorn", server("gunicorn-hello", lambda p: gunicorn("hello", p)), "/hello"),
        ("view", "fcgi_backend", server("ours-view", lambda p: [*ours, "--listen", f"127.0.0.1:{p}"]), "/view"),
        ("view", "gunicorn", server("gunicorn-view", lambda p: gunicorn("view", p)), "/view"),
    ]
    tls = [
        ("fcgi_backend", server("ours-tls", lambda p: [*ours, "--listen", f"127.0.0.1:{p}", *hello_app,
                                                       "--tls-cert", str(cert), "--tls-key", str(key)], "https")),
        ("gunicorn", server("gunicorn-tls", lambda p: gunicorn("hello", p, "--certfile", str(cert), "--keyfile",
                                                                str(key)), "https")),
    ]
    uploaders = [
        ("fcgi_backend", server("ours-upload", lambda p: [*ours, "--listen", f"127.0.0.1:{p}"])),
        ("gunicorn", server("gunicorn-upload", lambda p: gunicorn("upload", p, "--timeout", "600"))),
    ]
    samples: dict[tuple, list] = {}
    block = os.urandom(MiB)
    try:
        for round_no in range(args.runs):
            for table, name, srv, path in in_turn(pages, round_no):
                srv.start()
                try:
                    wrk(srv.url + path, 4, 1)  # warm up
                    for c in CONCURRENCY:
                        meter = CpuMeter(srv.proc.pid)
                        result = wrk(srv.url + path, c, args.duration)
                        rps, requests, errors = result.rps, result.requests, result.errors
                        cpu_us = meter.stop() / requests * 1e6
                        samples.setdefault((table, name, c), []).append((rps, cpu_us, errors))
                        print(f"round {round_no + 1} {table} {name} c={c}: {rps:.0f} req/s, {cpu_us:.0f} us "
                              f"CPU/request, errors {errors}", flush=True)
                finally:
                    srv.stop()
            for name, srv in in_turn(tls, round_no):
                srv.start()
                try:
                    wrk(srv.url + "/hello", 4, 1)
                    for kind, close in (("kept", False), ("handshake", True)):
                        meter = CpuMeter(srv.proc.pid)
                        result = wrk(srv.url + "/hello", 16, args.duration, close=close)
                        rps, requests, errors = result.rps, result.requests, result.errors
                        cpu_us = meter.stop() / requests * 1e6
                        samples.setdefault(("tls", name, kind), []).append((rps, cpu_us, errors))
                        print(f"round {round_no + 1} TLS {kind} {name}: {rps:.0f} req/s, {cpu_us:.0f} us CPU/request, "
                              f"errors {errors}", flush=True)
                finally:
                    srv.stop()
            for name, srv in in_turn(uploaders, round_no):
                srv.start()
                try:
                    meter, rss = CpuMeter(srv.proc.pid), RssSampler(srv.proc.pid)
                    rss.start()
                    seconds, _, body = post_upload(srv.port, args.mib, block)
                    if f"[{args.mib * MiB}]".encode() not in body:
                        raise RuntimeError(f"{name} did not get the whole file: {body[:200]!r}")
                    cpu, growth = meter.stop(settle=True), rss.stop()
                    samples.setdefault(("upload", name, args.mib), []).append((seconds, cpu, growth))
                    print(f"round {round_no + 1} upload {name}: {seconds:.2f} s, {args.mib * MiB / seconds / 1e6:.0f} MB/s, "
                          f"CPU {cpu:.2f} s, RSS growth {growth / 1024:.1f} MiB", flush=True)
                finally:
                    srv.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {k: tuple(statistics.median(r[i] for r in rows) for i in range(3)) for k, rows in samples.items()}
    lo_hi = {k: (min(r[0] for r in rows), max(r[0] for r in rows)) for k, rows in samples.items()}
    print(f"\nrequests/s, median (min-max) of {args.runs} runs of {args.duration} s; {args.workers} workers each\n")
    print("| page | clients | fcgi_backend serve-http | gunicorn (sync) | ratio | CPU µs/request, ours / gunicorn |")
    print("|---|---|---|---|---|---|")
    for table in ("hello", "view"):
        for c in CONCURRENCY:
            o, g = med[(table, "fcgi_backend", c)], med[(table, "gunicorn", c)]
            lo, hi = lo_hi[(table, "fcgi_backend", c)]
            glo, ghi = lo_hi[(table, "gunicorn", c)]
            print(f"| {table} | {c} | {o[0]:.0f} ({lo:.0f}-{hi:.0f}) | {g[0]:.0f} ({glo:.0f}-{ghi:.0f}) | "
                  f"**{o[0] / g[0]:.2f}x** | {o[1]:.0f} / {g[1]:.0f} |")
    print("\nTLS (the same certificate), 16 clients\n")
    print("| | fcgi_backend serve-http | gunicorn (sync) | ratio |")
    print("|---|---|---|---|")
    for kind, label in (("kept", "requests/s on kept connections"), ("handshake", "handshakes/s (one per request)")):
        o, g = med[("tls", "fcgi_backend", kind)], med[("tls", "gunicorn", kind)]
        print(f"| {label} | {o[0]:.0f} | {g[0]:.0f} | **{o[0] / g[0]:.2f}x** |")
    o, g = med[("upload", "fcgi_backend", args.mib)], med[("upload", "gunicorn", args.mib)]
    print(f"\n{args.mib} MiB multipart upload, stored\n")
    print("| | time | throughput | server CPU | RSS growth |")
    print("|---|---|---|---|---|")
    for name, m in (("fcgi_backend serve-http (C parser)", o), ("gunicorn + python-multipart", g)):
        print(f"| {name} | {m[0]:.2f} s | {args.mib * MiB / m[0] / 1e6:.0f} MB/s | {m[1]:.2f} s | {m[2] / 1024:.1f} MiB |")
    print(f"\nupload: fcgi_backend **{g[0] / o[0]:.2f}x** faster than gunicorn + python-multipart "
          f"({g[1] / o[1]:.2f}x less CPU)")
    errors = {k: sum(r[2] for r in rows) for k, rows in samples.items() if k[0] != "upload" and sum(r[2] for r in rows)}
    if errors:
        print(f"\nerrors: {errors}")
    write_json(args.json, {"runs": args.runs, "duration": args.duration, "workers": args.workers,
                       "results": [{"key": list(map(str, k)), "median": v, "range": lo_hi[k]} for k, v in med.items()]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
