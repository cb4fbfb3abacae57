"""Where a small request's time goes, behind Apache's mod_proxy_fcgi at 16 clients, for
fcgi_backend's WSGI hello and, beside it, php-fpm's hello.php, uWSGI's FastCGI mode with the same
WSGI hello and the C libfcgi responder (4 workers each, as in hello_bench), and the floor under
any Python FastCGI server (bench/peers/python_floor_hello.py: accept, read until the request is
whole, the C scanner, the application, one sendmsg, close; what the interpreter itself costs per
request), and that floor made busier by BUSY_US of pure computation a request (a loop that
touches no memory: what a worker's CPU time alone, not its code, does to Apache's):

  * the CPU time and the context switches per request of each side, the server's processes and
    Apache's (every thread), from /proc over a run of wrk: how much of Apache's cost follows the
    server behind it;
  * the backend worker's CPU split into kernel, Python interpreter and C (libc and extension
    modules), from `perf record` on one worker (Debian's linux-perf);
  * the system calls per request of one backend worker and of Apache's children, from `strace -c`
    over a few seconds of the load (a worker's requests counted by the connections it accepted,
    Apache's by its connects to the backend; failed calls, EAGAIN mostly, counted apart too).

The CPU times and switches are medians (min-max) of ``--runs`` rounds, the servers' order rotating
from round to round (a run's place in its round moves its figures); the perf split and the system
calls, which hold steady from run to run, come from the first round.

Before the servers, the cost of one wake-up on this host (bench/peers/wakeup_cost.c: two threads
hand a byte to and fro over pipes), with both threads on one CPU and on two: a virtual machine
may charge far more CPU for a wake-up that crosses CPUs, and the context switches above are
then what the servers' figures follow.

``--pinned`` runs Apache and wrk on the first CPU and the server on the second, so that neither
side runs on a core the other has just used; only the CPU times and switches are taken then. Set
beside a run without it, it shows how much of Apache's CPU per request comes from sharing the
cores with the server behind it rather than from what the server sends.

    python bench/profile_bench.py [--runs 3] [--duration 8] [--pinned] [--json results.json]
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import (AS_USER, BENCH, PHP_FPM, Peer, SwitchMeter, behind_apache, bench_arguments, bench_site,
                      build_c_responder, in_turn, median_spread, php_fpm_config, pin_tree, print_table, write_json,
                      wrk_with_cpu)
from apache_harness import Apache
from hello_bench import uwsgi_command

CLIENTS = 16
BUSY_US = 15  # the busier floor's extra computation per request, about our worker's CPU over the floor's


def children(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def cpu_split(pid: int, seconds: float) -> dict[str, float]:
    """Shares of the process's CPU samples: kernel, python (libpython), C (everything else)."""
    with tempfile.NamedTemporaryFile(suffix=".perf") as data:
        subprocess.run(["perf", "record", "-F", "1999", "-p", str(pid), "-o", data.name, "--", "sleep", str(seconds)],
                       capture_output=True, check=True)
        report = subprocess.run(["perf", "report", "-i", data.name, "--sort", "dso", "--stdio"],
                                capture_output=True, text=True, check=True).stdout
    split = {"kernel": 0.0, "python": 0.0, "C": 0.0}
    for share, dso in re.findall(r"^\s+([\d.]+)%\s+(\S+)", report, re.M):
        kind = "kernel" if dso.startswith("[kernel") else "python" if "libpython" in dso or dso.startswith("python") \
            else "C"
        split[kind] += float(share)
    return split


def syscalls(pids: list[int], seconds: float) -> dict[str, int]:
    """System calls of processes (and their threads) for a while, by name."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as out:
        subprocess.run(["timeout", str(seconds), "strace", "-c", "-f", *(f"-p{pid}" for pid in pids), "-o", out.name],
                       capture_output=True)
        text = open(out.name).read()
    counts = {}
    for line in text.splitlines():
        fields = line.split()  # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(fields) in (5, 6) and fields[0][0].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
            if len(fields) == 6:
                counts[fields[-1] + " (failed)"] = int(fields[4])
    return counts


def wakeup_costs(out_dir: Path, cpus: list[int]) -> dict[str, float]:
    """CPU µs per wake-up between two threads on one CPU and, with two CPUs, across them."""
    binary = out_dir / "wakeup_cost"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(BENCH / "peers" / "wakeup_cost.c")], check=True)
    pairs = {"on one CPU": (cpus[0], cpus[0])}
    if len(cpus) > 1:
        pairs["across two CPUs"] = (cpus[0], cpus[1])
    costs = {}
    for where, (first, other) in pairs.items():
        out = subprocess.run([str(binary), str(first), str(other)], capture_output=True, text=True, check=True).stdout
        costs[where] = float(out.split()[1])  # "cpu_us_per_wakeup X wall_us_per_wakeup Y"
    return costs


def per_request_costs(apache: Apache, peer: Peer, path: str, duration: float) -> dict[str, float]:
    """One run of wrk: requests/s, and CPU µs and context switches per request of each side; the
    errors wrk counted (a server that drops requests would look cheap per request)."""
    server_switches, apache_switches = SwitchMeter(peer.proc.pid), SwitchMeter(apache.proc.pid)
    result, server_us, apache_us = wrk_with_cpu(apache.url + path, CLIENTS, duration, peer.proc.pid, apache.proc.pid)
    return {"rps": result.rps, "server_cpu_us": server_us, "apache_cpu_us": apache_us,
            "server_switches": server_switches.stop() / result.requests,
            "apache_switches": apache_switches.stop() / result.requests, "errors": result.errors}


def profile(apache: Apache, peer: Peer, path: str, duration: float) -> dict:
    """Under a wrk load: one worker's CPU split (perf), and system calls per request of a worker and of Apache."""
    load = subprocess.Popen(["wrk", "-t2", f"-c{CLIENTS}", f"-d{int(duration * 3 + 4)}s", apache.url + path],
                            stdout=subprocess.DEVNULL)
    try:
        time.sleep(2)
        worker = children(peer.proc.pid)[0]
        split = cpu_split(worker, duration)
        counts: dict[str, dict[str, int]] = {}
        threads = [threading.Thread(target=lambda: counts.__setitem__("worker", syscalls([worker], duration))),
                   threading.Thread(target=lambda: counts.__setitem__(
                       "apache", syscalls(children(apache.proc.pid), duration)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        load.wait()
    per_apache_request = {k: v / max(1, counts["apache"].get("connect", 1)) for k, v in counts["apache"].items()}
    worker = counts["worker"]  # a worker accepts each connection it serves
    served = sum(worker.get(name, 0) - worker.get(name + " (failed)", 0) for name in ("accept", "accept4"))
    per_worker_request = {k: v / max(1, served) for k, v in worker.items()}
    return {"cpu_split": split, "worker_syscalls_per_request": per_worker_request,
            "apache_syscalls_per_request": per_apache_request}


def main() -> int:
    parser = bench_arguments(__doc__, runs=3, duration=8)
    parser.add_argument("--pinned", action="store_true", help="Apache and wrk on one CPU, the server on another")
    args = parser.parse_args()
    every_cpu = os.sched_getaffinity(0)
    if args.pinned:
        if len(every_cpu) < 2:
            print("--pinned needs two CPUs", file=sys.stderr)
            return 2
        apache_cpu, server_cpu = sorted(every_cpu)[:2]
    root, site = bench_site("fcgi-bench-profile-")
    shutil.copy(BENCH / "peers" / "hello.php", site / "webroot" / "hello.php")
    run = root / "run"
    sock = site / "fcgi_backend.sock"
    php_stanza = f'<FilesMatch "\\.php$">\n    SetHandler "proxy:unix:{sock}|fcgi://localhost"\n</FilesMatch>'
    floor = [sys.executable, str(BENCH / "peers" / "python_floor_hello.py"), str(sock), "4"]
    lines = [
        ("fcgi_backend, WSGI hello", Peer("ours", [sys.executable, "-m", "fcgi_backend", "run", str(site), "--prefork",
                                                    "-4", *AS_USER, "--app", f"{BENCH / 'peers' / 'hello_wsgi.py'}:hello"],
                                          sock, run / "ours.log"), "/hello"),
        ("php-fpm, hello.php", Peer("php-fpm", [PHP_FPM, "-n", "-y", str(php_fpm_config(run, sock, 4))], sock,
                                    run / "php.log"), "/hello.php"),
        ("uWSGI FastCGI, WSGI hello", Peer("uwsgi", uwsgi_command(sock, 4), sock, run / "uwsgi.log"), "/hello"),
        ("Python floor, WSGI hello", Peer("floor", floor, sock, run / "floor.log"), "/hello"),
        (f"Python floor + {BUSY_US} µs of computation",
         Peer("busy floor", [*floor, str(BUSY_US)], sock, run / "busy_floor.log"), "/hello"),
        ("C libfcgi hello", Peer("c", [str(build_c_responder(run)), str(sock), "4"], sock, run / "c.log"), "/hello"),
    ]
    wakeups = wakeup_costs(run, sorted(every_cpu))  # (before the servers: nothing else loads the CPUs)
    results: dict[str, dict] = {}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in lines}
    try:
        for round_no in range(args.runs):
            for name, peer, path in in_turn(lines, round_no):
                with behind_apache(site, run, peer, php_stanza) as apache:
                    if args.pinned:
                        pin_tree(apache.proc.pid, {apache_cpu})
                        pin_tree(peer.proc.pid, {server_cpu})
                        os.sched_setaffinity(0, {apache_cpu})  # (wrk, started from here, inherits it)
                    try:
                        runs[name].append(per_request_costs(apache, peer, path, args.duration))
                    finally:
                        os.sched_setaffinity(0, every_cpu)
                    if round_no == 0:
                        results[name] = {} if args.pinned else profile(apache, peer, path, args.duration)
                print(f"round {round_no + 1} {name}: {runs[name][-1]['rps']:.0f} req/s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name, result in results.items():
        result["runs"] = runs[name]
        result["costs"] = {key: statistics.median(run[key] for run in runs[name]) for key in runs[name][0]}

    where = ", Apache and wrk on one CPU, the server on the other" if args.pinned else ""
    print(f"\nper request at {CLIENTS} clients (wrk, {args.duration} s), median (min-max) of {args.runs} runs: "
          f"CPU time and context switches of each side{where}\n")

    print_table(["server", "requests/s", "CPU µs, server", "CPU µs, Apache", "context switches, server / Apache",
                 "wrk errors, all runs"],
                [[name, *(median_spread(run[key] for run in r["runs"]) for key in ("rps", "server_cpu_us", "apache_cpu_us")),
                  f"{r['costs']['server_switches']:.2f} / {r['costs']['apache_switches']:.2f}",
                  str(sum(run["errors"] for run in r["runs"]))]
                 for name, r in results.items()])
    print("\nCPU µs per wake-up between two threads, this host: " +
          ", ".join(f"{where} {us:.1f}" for where, us in wakeups.items()))
    if not args.pinned:
        print_profile_tables(results)
    write_json(args.json, {**results, "wake-up CPU µs": wakeups})
    return 0


def print_profile_tables(results: dict) -> None:
    """The first round's perf split and system calls per request, per server."""
    print("\nbackend worker CPU by where it runs (perf samples)\n")
    print_table(["server", "kernel", "Python interpreter", "C (libc, extension modules, PHP)"],
                [[name, *(f"{r['cpu_split'][kind]:.0f}%" for kind in ("kernel", "python", "C"))]
                 for name, r in results.items()])
    for side in ("worker", "apache"):
        print(f"\nsystem calls per request, {'one backend worker' if side == 'worker' else 'Apache'}\n")
        names = sorted({k for r in results.values() for k, v in r[f"{side}_syscalls_per_request"].items() if v >= 0.05})
        rows = []
        for name, r in results.items():
            calls = r[f"{side}_syscalls_per_request"]
            total = sum(v for k, v in calls.items() if not k.endswith("(failed)"))
            rows.append([name, *(f"{calls.get(k, 0):.1f}" for k in names), f"{total:.1f}"])
        print_table(["server", *names, "total"], rows)


if __name__ == "__main__":
    sys.exit(main())
