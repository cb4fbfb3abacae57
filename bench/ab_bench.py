"""Our server at another revision against the working tree, behind the same Apache
(mod_proxy_fcgi, unix socket), in interleaved rounds: for a change to the request path, the
figures that tell whether it pays (requests/s, and the CPU per request of the server's processes
and of Apache's), as medians with min-max, and their ratios.

Each round runs both, the first of the round alternating. The other revision is exported with
`git archive` into a temporary folder and its C extension built there. Its server runs with
this virtualenv's packages but its own code: the editable install's import hook, which would
otherwise load the working tree's package whatever PYTHONPATH says, is dropped.

    python bench/ab_bench.py [--base HEAD] [--page hello|view] [--clients 16] [--runs 5] [--duration 4]
                             [--server-args='--request-timeout 30']
"""

from __future__ import annotations

import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchlib import (in_turn, AS_USER, BENCH, REPO, Peer, behind_apache, bench_arguments, bench_site, median_spread,
                      print_table, write_json, wrk, wrk_with_cpu)

# Runs fcgi_backend from the folder in argv[1], not the editable install's.
LAUNCH_FROM = (
    "import runpy, sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
    "sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'fcgi_backend'; "
    "runpy.run_module('fcgi_backend', run_name='__main__', alter_sys=True)"
)


def export_revision(revision: str, into: Path) -> Path:
    """The repository at ``revision`` in ``into``, with its C extension built in place."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=into, check=True,
                   capture_output=True)
    into.chmod(0o755)  # the server runs as Apache's user
    return into


def main() -> int:
    parser = bench_arguments(__doc__, runs=5, duration=4, workers=4)
    parser.add_argument("--base", default="HEAD", help="the revision to compare the working tree with")
    parser.add_argument("--page", choices=["hello", "view"], default="hello",
                        help="the WSGI hello, or the bench site's mustache view")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--server-args", default="", help="further arguments of `run` for both servers")
    args = parser.parse_args()

    root, site = bench_site("fcgi-bench-ab-")
    run = root / "run"
    sock = site / "fcgi_backend.sock"
    base_tree = export_revision(args.base, root / "base")
    app = ["--app", f"{BENCH / 'peers' / 'hello_wsgi.py'}:hello"] if args.page == "hello" else []
    serve = ["run", str(site), "--prefork", str(-args.workers), *AS_USER, *app, *shlex.split(args.server_args)]
    sides = {
        args.base: Peer("base", [sys.executable, "-c", LAUNCH_FROM, str(base_tree), *serve], sock, run / "base.log"),
        "working tree": Peer("working", [sys.executable, "-m", "fcgi_backend", *serve], sock, run / "working.log"),
    }
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sides}
    try:
        for round_no in range(args.runs):
            for name, peer in in_turn(sides.items(), round_no):  # who goes first alternates
                with behind_apache(site, run, peer) as apache:
                    url = f"{apache.url}/{args.page}"
                    wrk(url, 4, 1)  # warm up
                    result, server_us, apache_us = wrk_with_cpu(url, args.clients, args.duration, peer.proc.pid,
                                                                apache.proc.pid)
                samples[name].append((result.rps, server_us, apache_us))
                print(f"round {round_no + 1} {name}: {result.rps:.0f} req/s, CPU per request: server {server_us:.0f} us, "
                      f"Apache {apache_us:.0f} us", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n/{args.page} at {args.clients} clients, {args.workers} workers, median (min-max) of {args.runs} "
          f"interleaved runs of {args.duration} s\n")
    print_table(["server", "requests/s", "server CPU µs per request", "Apache CPU µs per request"],
                [[name, *(median_spread(r[i] for r in rows) for i in range(3))] for name, rows in samples.items()])
    (base_rows, work_rows) = samples.values()
    rps, server, web = (statistics.median(r[i] for r in work_rows) / statistics.median(r[i] for r in base_rows)
                        for i in range(3))
    print(f"\nworking tree / {args.base}: requests/s {rps:.2f}x, server CPU {server:.2f}x, Apache CPU {web:.2f}x")
    write_json(args.json, {"base": args.base, "page": args.page, "clients": args.clients, "runs": args.runs,
                           "samples": samples})
    return 0


if __name__ == "__main__":
    sys.exit(main())
