"""mod_proxy_fcgi against this project's connector (mod_fcgi_backend), in one run, same backend:

  * a 1 GiB multipart upload through each, at least 6 times (the connector sends it as one
    FCGI_X_STDIN stream), the file stored on the disk, then in memory (a tmpfs folder); beside
    them, the disk's own time to take as much past the page cache (upload_parts_bench's write
    alone: blocks reserved, O_DIRECT, 4 MiB a write), the bound on the first;
  * small-page requests per second through each (the site's mustache view and a route), with wrk.

One fcgi_backend serves one site (started again for each upload folder); two Apaches, one per
connector, stand in front of it. Rounds are interleaved; the tables give medians and the
connector's ratio to mod_proxy_fcgi.

    python bench/connector_bench.py [--runs 3] [--mib 1024] [--duration 4] [--json results.json]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import in_turn, bench_arguments, write_json, AS_USER, APACHE_TUNING, Peer, bench_site  # first: puts tools/ on the path
from apache_harness import Apache
from benchlib import MiB, median_spread, post_upload as upload, wrk
from upload_parts_bench import write_only

PAGES = {"mustache view": "/view", "route (text)": "/upload-form"}
UPLOAD_RUNS = 6  # at least: one upload's time moved by half from one run to the next
MEMORY = "/dev/shm"  # the tmpfs folder the second upload rounds store into
DISK_WRITE_MIB = 4  # a write of the disk-alone line: the disk's quickest here (dd: 1 MiB writes take 1.3x as long)


def start_backend(site: Path, run: Path, uploads: Path) -> Peer:
    backend = Peer("fcgi_backend", [sys.executable, "-m", "fcgi_backend", "run", str(site), "--prefork", "-4",
                                    "--upload-dir", str(uploads), *AS_USER], site / "fcgi_backend.sock",
                   run / "backend.log")  # (AS_USER: the socket's group is the user's)
    backend.start()
    return backend


def main() -> int:
    args = bench_arguments(__doc__, mib=1024, duration=4, concurrency=[1, 16, 64]).parse_args()

    root, site = bench_site("fcgi-bench-connector-")
    run = root / "run"
    fronts = {"mod_proxy_fcgi": Apache(site, root / "run-proxy", extra_config=APACHE_TUNING).start(),
              "connector (X_STDIN)": Apache(site, root / "run-connector", extra_config=APACHE_TUNING,
                                            connector=True).start()}
    storages = {"disk": root / "uploads", "memory (tmpfs)": Path(tempfile.mkdtemp(prefix="fcgi-bench-", dir=MEMORY))}
    storages["disk"].mkdir()
    block = os.urandom(MiB)
    uploads_s = {(storage, name): [] for storage in storages for name in fronts}
    disk_s = []
    rps = {(name, page, c): [] for name in fronts for page in PAGES for c in args.concurrency}
    backend = None
    try:
        # Uploads first, in rounds of their own: their time moves most, so they get more runs.
        for storage, uploads in storages.items():
            if backend is not None:
                backend.stop()
            backend = start_backend(site, run, uploads)  # (the last one serves the pages too)
            for round_no in range(max(args.runs, UPLOAD_RUNS)):
                if storage == "disk":
                    os.sync()  # (as before each upload)
                    disk_s.append(write_only(args.mib // DISK_WRITE_MIB, block * DISK_WRITE_MIB, str(uploads),
                                             reserve_ahead=True, direct=True)[1])
                    print(f"round {round_no + 1}: the disk alone: {args.mib} MiB written {disk_s[-1]:.2f} s", flush=True)
                for name, apache in in_turn(fronts.items(), round_no):
                    elapsed, length, _ = upload(apache.port, args.mib, block)
                    uploads_s[(storage, name)].append(elapsed)
                    print(f"round {round_no + 1}: {name}: {args.mib} MiB upload to {storage} {elapsed:.2f} s "
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
        if backend is not None:
            backend.stop()
        shutil.rmtree(storages["memory (tmpfs)"], ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)

    proxy, conn = fronts
    up = {key: statistics.median(v) for key, v in uploads_s.items()}
    disk = statistics.median(disk_s)
    print(f"\n{args.mib} MiB multipart upload, median (min-max) of {len(disk_s)} runs; the disk alone: "
          f"{median_spread(disk_s, 2, ' s')}\n")
    print("| stored to | mod_proxy_fcgi | connector (X_STDIN) | connector relative to mod_proxy_fcgi | connector's time over the disk's alone |")
    print("|---|---|---|---|---|")
    for storage in storages:
        a, b = up[(storage, proxy)], up[(storage, conn)]
        over_disk = f"{b / disk:.2f}x" if storage == "disk" else "—"
        print(f"| {storage} | {median_spread(uploads_s[(storage, proxy)], 2, ' s')}, {args.mib * MiB / a / 1e6:.0f} MB/s "
              f"| {median_spread(uploads_s[(storage, conn)], 2, ' s')}, {args.mib * MiB / b / 1e6:.0f} MB/s "
              f"| {a / b:.2f}x | {over_disk} |")
    print(f"\nrequests/s, median of {args.runs} runs of {args.duration} s\n")
    print("| page | concurrency | mod_proxy_fcgi | connector | connector / mod_proxy_fcgi |")
    print("|---|---|---|---|---|")
    results = {"mib": args.mib, "runs": args.runs, "disk_write_s": disk,
               "upload_s": {storage: {name: up[(storage, name)] for name in fronts} for storage in storages},
               "rps": []}
    for page in PAGES:
        for c in args.concurrency:
            a, b = statistics.median(rps[(proxy, page, c)]), statistics.median(rps[(conn, page, c)])
            results["rps"].append({"page": page, "concurrency": c, "mod_proxy_fcgi": a, "connector": b})
            print(f"| {page} | {c} | {a:.0f} | {b:.0f} | {b / a:.2f}x |")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
