"""Small-page requests per second and latency through Apache's mod_proxy_fcgi, side by side:

  * fcgi_backend serving a plain WSGI hello;
  * fcgi_backend serving a mustache view filled by a handler;
  * stock flup's preforking WSGIServer with the same hello;
  * uWSGI in its FastCGI mode (``--fastcgi-socket``, Debian's uwsgi-plugin-python3), the same hello;
  * php-fpm (pm = static) with a hello.php;
  * the ceiling: a minimal C responder on libfcgi answering the same hello;
  * fcgi_backend's hello and view again with its workers on one CPU (``--worker-cpus``), and
    php-fpm's on the same CPU (``taskset -c``), Apache and wrk free to use every CPU.

Every server runs the same number of worker processes behind the same Apache (tuned for 256
clients, benchlib.APACHE_TUNING), on a unix socket.
wrk loads each at concurrency 1 to 256; rounds are interleaved and the table gives medians.
Beside requests/s and latency: the CPU time per request of the server's processes and of
Apache's, from /proc, which shows where a request's cost lies.

    python bench/hello_bench.py [--runs 3] [--duration 4] [--workers 4] [--json results.json]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys

from benchlib import (in_turn, behind_apache, bench_arguments, print_table, write_json, AS_USER, BENCH, PHP_FPM, Peer, bench_site, build_c_responder,
                      php_fpm_config, wrk, wrk_with_cpu)

CONCURRENCY = [1, 4, 16, 64, 256]
# The CPU the pinned lines' workers run on: the last one (Apache's threads mostly run elsewhere).
WORKER_CPU = str(max(os.sched_getaffinity(0)))


def uwsgi_command(sock, workers: int) -> list[str]:
    """uWSGI's FastCGI mode serving the same WSGI hello: prefork workers, as the others. (Its own
    user; with --uid it drops root before binding, and cannot bind in the root-owned site folder.)"""
    return ["uwsgi", "--plugin", "python3", "--fastcgi-socket", str(sock), "--chmod-socket=660",
            "--wsgi-file", str(BENCH / "peers" / "hello_wsgi.py"), "--callable", "hello", "--master",
            "--processes", str(workers), "--disable-logging", "--die-on-term"]
def main() -> int:
    args = bench_arguments(__doc__, duration=4, workers=4, concurrency=CONCURRENCY).parse_args()

    root, site = bench_site("fcgi-bench-hello-")
    shutil.copy(BENCH / "peers" / "hello.php", site / "webroot" / "hello.php")
    run = root / "run"
    sock = site / "fcgi_backend.sock"
    python = sys.executable
    group = AS_USER  # (the socket's group is the user's)
    pool = ["--prefork", str(-args.workers)]
    php_stanza = f'<FilesMatch "\\.php$">\n    SetHandler "proxy:unix:{sock}|fcgi://localhost"\n</FilesMatch>'
    ours_view = [python, "-m", "fcgi_backend", "run", str(site), *pool, *group]
    ours_hello = [*ours_view, "--app", f"{BENCH / 'peers' / 'hello_wsgi.py'}:hello"]
    php = [PHP_FPM, "-n", "-y", str(php_fpm_config(run, sock, args.workers))]
    pinned = ["--worker-cpus", WORKER_CPU]
    # (name, peer, URL path, extra Apache config)
    lines = [
        ("fcgi_backend, WSGI hello", Peer("ours-hello", ours_hello, sock, run / "ours-hello.log"), "/hello", ""),
        ("fcgi_backend, mustache view", Peer("ours-view", ours_view, sock, run / "ours-view.log"), "/view", ""),
        ("flup prefork, WSGI hello", Peer("flup", [python, str(BENCH / "peers" / "flup_prefork_hello.py"), str(sock),
                                                   str(args.workers)], sock, run / "flup.log"), "/hello", ""),
        ("uWSGI FastCGI, WSGI hello", Peer("uwsgi", uwsgi_command(sock, args.workers), sock, run / "uwsgi.log"),
         "/hello", ""),
        ("php-fpm, hello.php", Peer("php-fpm", php, sock, run / "php.log"), "/hello.php", php_stanza),
        ("C libfcgi hello (ceiling)", Peer("c", [str(build_c_responder(run)), str(sock), str(args.workers)],
                                           sock, run / "c.log"), "/hello", ""),
        (f"fcgi_backend, WSGI hello, --worker-cpus {WORKER_CPU}",
         Peer("ours-pinned", [*ours_hello, *pinned], sock, run / "ours-pinned.log"), "/hello", ""),
        (f"fcgi_backend, mustache view, --worker-cpus {WORKER_CPU}",
         Peer("ours-view-pinned", [*ours_view, *pinned], sock, run / "ours-view-pinned.log"), "/view", ""),
        (f"php-fpm, hello.php, taskset -c {WORKER_CPU}",
         Peer("php-fpm-pinned", ["taskset", "-c", WORKER_CPU, *php], sock, run / "php-pinned.log"), "/hello.php",
         php_stanza),
    ]
    samples = {(name, c): [] for name, *_ in lines for c in args.concurrency}
    try:
        for round_no in range(args.runs):
            for name, peer, path, extra in in_turn(lines, round_no):
                with behind_apache(site, run, peer, extra) as apache:
                    wrk(apache.url + path, 4, 1)  # warm up
                    for c in args.concurrency:
                        result, server_us, apache_us = wrk_with_cpu(apache.url + path, c, args.duration,
                                                                    peer.proc.pid, apache.proc.pid)
                        samples[(name, c)].append((result.rps, result.p50_ms, result.p99_ms, result.errors,
                                                   server_us, apache_us))
                        print(f"round {round_no + 1} {name} c={c}: {result.rps:.0f} req/s p50 {result.p50_ms:.2f} ms "
                              f"p99 {result.p99_ms:.2f} ms errors {result.errors}; CPU per request: server "
                              f"{server_us:.0f} us, Apache {apache_us:.0f} us", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    results = []
    for (name, c), rows in samples.items():
        results.append({"server": name, "concurrency": c, "rps": statistics.median(r[0] for r in rows),
                        "rps_min": min(r[0] for r in rows), "rps_max": max(r[0] for r in rows),
                        "p50_ms": statistics.median(r[1] for r in rows), "p99_ms": statistics.median(r[2] for r in rows),
                        "errors": sum(r[3] for r in rows), "server_cpu_us": statistics.median(r[4] for r in rows),
                        "apache_cpu_us": statistics.median(r[5] for r in rows)})
    by = {(r["server"], r["concurrency"]): r for r in results}
    names = [name for name, *_ in lines]
    print(f"\nrequests/s, median (min-max) of {args.runs} runs of {args.duration:g} s; {args.workers} workers each\n")
    print_table(["concurrency", *names],
                [[c, *(f"{by[(n, c)]['rps']:.0f} ({by[(n, c)]['rps_min']:.0f}-{by[(n, c)]['rps_max']:.0f})" for n in names)]
                 for c in args.concurrency])
    print("\nratios, same run:\n")
    rows = []
    for c in args.concurrency:
        hello, view, flup, uwsgi, php, ceiling, hello_pinned, view_pinned, php_pinned = (by[(n, c)]["rps"] for n in names)
        rows.append([c, f"{hello / php:.2f}x", f"{hello / uwsgi:.2f}x", f"{hello / flup:.2f}x", f"{view / php:.2f}x",
                     f"{hello / ceiling:.2f}x", f"{hello_pinned / php:.2f}x", f"{hello_pinned / php_pinned:.2f}x",
                     f"{view_pinned / php:.2f}x"])
    print_table(["concurrency", "WSGI hello / php-fpm", "WSGI hello / uWSGI", "WSGI hello / flup",
                 "mustache view / php-fpm", "WSGI hello / C ceiling", "pinned WSGI hello / php-fpm",
                 "pinned WSGI hello / pinned php-fpm", "pinned mustache view / php-fpm"], rows)
    print("\nlatency p50 / p99 in ms\n")
    print_table(["concurrency", *names],
                [[c, *(f"{by[(n, c)]['p50_ms']:.2f} / {by[(n, c)]['p99_ms']:.2f}" for n in names)] for c in args.concurrency])
    print("\nCPU per request in µs (user + system of each side's processes): server / Apache\n")
    print_table(["concurrency", *names],
                [[c, *(f"{by[(n, c)]['server_cpu_us']:.0f} / {by[(n, c)]['apache_cpu_us']:.0f}" for n in names)]
                 for c in args.concurrency])
    if any(r["errors"] for r in results):
        print("\nerrors: " + ", ".join(f"{r['server']} c={r['concurrency']}: {r['errors']}" for r in results if r["errors"]))
    write_json(args.json, {"runs": args.runs, "duration": args.duration, "workers": args.workers, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
