"""What each layer of a small request costs the backend alone, without Apache: the CPU time per
request of one server process, answering one client on the unix socket, one request per
connection (as mod_proxy_fcgi sends them), for

  * the Python floor (bench/peers/python_floor_hello.py with one worker: accept, read, the C
    scanner, the WSGI hello, one sendmsg, close): what the interpreter itself costs;
  * fcgi_backend --nofork --app with the same WSGI hello: the floor plus the worker's loop
    (deadlines, scoreboard, hooks, the lingering close) and the whole-request lane;
  * fcgi_backend --nofork serving the benchmark site, a route that answers text
    (bench/site/handlers/bench.py): plus the site's Application (Request, dispatch, Response);
  * the same server's mustache view (/view, filled by a handler): plus finding the template
    (its file checked for changes on every request), the handler and the render.

Each row is the CPU (user and system, from /proc) of the server's processes over ``--requests``
requests after a warm-up; medians (min-max) of ``--runs`` rounds, the rows' order rotating from
round to round. With Apache absent, the figures are the backend's own, and the differences
between rows what each layer adds.

    python bench/layers_bench.py [--runs 5] [--requests 20000] [--json results.json]
"""

from __future__ import annotations

import shutil
import statistics
import sys

from benchlib import (AS_USER, BENCH, Peer, bench_arguments, bench_site, in_turn, median_spread, print_table,
                      tree_user_system_seconds, write_json)
from fcgi_client import FastCGIClient, cgi_params, request_bytes

WARM_UP = 500


def tree_user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the process and its children, together."""
    cpu = tree_user_system_seconds(pid).values()
    return sum(user for user, _ in cpu), sum(system for _, system in cpu)


def ask(path: str, request: bytes, count: int) -> None:
    """``count`` requests, one connection each, closed once END_REQUEST is in (as Apache does)."""
    for _ in range(count):
        with FastCGIClient(path) as client:
            client.send(request)
            reply = client.read_reply()
        if reply.status != 200:
            raise RuntimeError(f"unexpected answer from {path}: {reply.stdout[:200]!r}")


def main() -> int:
    parser = bench_arguments(__doc__, runs=5)
    parser.add_argument("--requests", type=int, default=20000, help="requests per measurement")
    args = parser.parse_args()

    root, site = bench_site("fcgi-bench-layers-")
    run = root / "run"
    python = sys.executable
    floor_sock, app_sock, site_sock = run / "floor.sock", run / "app.sock", run / "site.sock"
    ours = [python, "-m", "fcgi_backend", "run", str(site), "--nofork", *AS_USER]
    peers = {
        "floor": Peer("Python floor", [python, str(BENCH / "peers" / "python_floor_hello.py"), str(floor_sock), "1"],
                      floor_sock, run / "floor.log"),
        "app": Peer("fcgi_backend --app", [*ours, "--socket", str(app_sock),
                                           "--app", f"{BENCH / 'peers' / 'hello_wsgi.py'}:hello"],
                    app_sock, run / "app.log"),
        "site": Peer("fcgi_backend site", [*ours, "--socket", str(site_sock)], site_sock, run / "site.log"),
    }
    rows = [  # (row, peer, URL path)
        ("Python floor, WSGI hello", "floor", "/hello"),
        ("fcgi_backend, WSGI hello (--app)", "app", "/hello"),
        ("fcgi_backend, site route (text)", "site", "/upload-form"),
        ("fcgi_backend, mustache view", "site", "/view"),
    ]
    requests = {url: request_bytes(cgi_params("GET", url, HTTP_HOST="127.0.0.1", HTTP_ACCEPT="*/*",
                                              HTTP_USER_AGENT="layers_bench"))
                for _, _, url in rows}
    samples: dict[str, list[tuple[float, float]]] = {row: [] for row, _, _ in rows}
    try:
        for peer in peers.values():
            peer.start()
        for round_no in range(args.runs):
            for row, name, url in in_turn(rows, round_no):
                peer, path = peers[name], str(peers[name].socket_path)
                ask(path, requests[url], WARM_UP)
                user0, system0 = tree_user_system(peer.proc.pid)
                ask(path, requests[url], args.requests)
                user1, system1 = tree_user_system(peer.proc.pid)
                per_request = 1e6 / args.requests
                user, system = (user1 - user0) * per_request, (system1 - system0) * per_request
                samples[row].append((user, system))
                print(f"round {round_no + 1}: {row}: user {user:.1f} µs, system {system:.1f} µs per request",
                      flush=True)
    finally:
        for peer in peers.values():
            peer.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nCPU µs per request of the server alone, one client, median (min-max) of {args.runs} rounds "
          f"of {args.requests} requests\n")
    table, results, before = [], [], None
    for row, _, url in rows:
        users = [u for u, _ in samples[row]]
        systems = [s for _, s in samples[row]]
        totals = [u + s for u, s in samples[row]]
        total = statistics.median(totals)
        added = "—" if before is None else f"{total - before:+.0f}"
        table.append([row, median_spread(users), median_spread(systems), median_spread(totals), added])
        results.append({"row": row, "url": url, "user_us": statistics.median(users),
                        "system_us": statistics.median(systems), "total_us": total, "samples": samples[row]})
        before = total
    print_table(["server, page", "user", "system", "total", "over the row above"], table)
    write_json(args.json, {"runs": args.runs, "requests": args.requests, "rows": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
