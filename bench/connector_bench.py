"""mod_proxy_fcgi against this project's connector (mod_fcgi_backend), in one run, same backend:

  * a 1 GiB multipart upload through each, at least 6 times (the connector sends it as one
    FCGI_X_STDIN stream);
  * small-page requests per second through each (the site's mustache view and a route), with wrk.

One fcgi_backend serves one site; two Apaches, one per connector, stand in front of it. Rounds are
interleaved; the tables give medians and the connector's ratio to mod_proxy_fcgi.

    python bench/connector_bench.py [--runs 3] [--mib 1024] [--duration 4] [--json results.json]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys

from benchlib import in_turn, bench_arguments, write_json, AS_USER, APACHE_TUNING, Peer, bench_site  # first: puts tools/ on the path
from apache_harness import Apache
from benchlib import MiB, median_spread, post_upload as upload, wrk

PAGES = {"mustache view": "/view", "route (text)": "/upload-form"}
UPLOAD_RUNS = 6  # at least: one upload's time moved by half from one run to the next


def main() -> int:
    args = bench_arguments(__doc__, mib=1024, duration=4, concurrency=[1, 16, 64]).parse_args()

    root, site = bench_site("fcgi-bench-connector-")
    uploads = root / "uploads"
    uploads.mkdir()
    group = AS_USER  # (the socket's group is the user's)
    backend = Peer("fcgi_backend", [sys.executable, "-m", "fcgi_backend", "run", str(site), "--prefork", "-4",
                                    "--upload-dir", str(uploads), *group], site / "fcgi_backend.sock",
                   root / "run" / "backend.log")
    backend.start()
    fronts = {"mod_proxy_fcgi": Apache(site, root / "run-proxy", extra_config=APACHE_TUNING).start(),
              "connector (X_STDIN)": Apache(site, root / "run-connector", extra_config=APACHE_TUNING,
                                            connector=True).start()}
    block = os.urandom(MiB)
    uploads_s = {name: [] for name in fronts}
    rps = {(name, page, c): [] for name in fronts for page in PAGES for c in args.concurrency}
    try:
        # Uploads first, in rounds of their own: their time moves most, so they get more runs.
        for round_no in range(max(args.runs, UPLOAD_RUNS)):
            for name, apache in in_turn(fronts.items(), round_no):
                elapsed, length, _ = upload(apache.port, args.mib, block)
                uploads_s[name].append(elapsed)
                print(f"round {round_no + 1}: {name}: {args.mib} MiB upload {elapsed:.2f} s "
                      f"({length / elapsed / 1e6:.0f} MB/s)", flush=True)
        for round_no in range(args.runs):
            for name, apache in in_turn(fronts.items(), round_no):
                for page, path in PAGES.items():
                    for c in args.concurrency:
                        result = wrk(apache.url + path, c, args.duration)
                        rps[(name, page, c)].append(result.rps)
                        print(f"round {round_no + 1}: {name}: {page} c={c}: {result.rps:.0f} req/s", flush=True)
    finally:
        for apache in fronts.values():
            apache.stop()
        backend.stop()
        shutil.rmtree(root, ignore_errors=True)

    proxy, conn = fronts
    up = {name: statistics.median(v) for name, v in uploads_s.items()}
    print(f"\n{args.mib} MiB multipart upload, median (min-max) of {len(uploads_s[proxy])} runs\n")
    print("| front | median time | throughput | connector relative to mod_proxy_fcgi |")
    print("|---|---|---|---|")
    for name, t in up.items():
        ratio = f"{up[proxy] / t:.2f}x" if name == conn else "—"
        print(f"| {name} | {median_spread(uploads_s[name], 2, ' s')} | {args.mib * MiB / t / 1e6:.0f} MB/s | {ratio} |")
    print(f"\nrequests/s, median of {args.runs} runs of {args.duration} s\n")
    print("| page | concurrency | mod_proxy_fcgi | connector | connector / mod_proxy_fcgi |")
    print("|---|---|---|---|---|")
    results = {"mib": args.mib, "runs": args.runs, "upload_s": up, "rps": []}
    for page in PAGES:
        for c in args.concurrency:
            a, b = statistics.median(rps[(proxy, page, c)]), statistics.median(rps[(conn, page, c)])
            results["rps"].append({"page": page, "concurrency": c, "mod_proxy_fcgi": a, "connector": b})
            print(f"| {page} | {c} | {a:.0f} | {b:.0f} | {b / a:.2f}x |")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
