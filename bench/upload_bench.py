"""A 1 GiB multipart upload through Apache's mod_proxy_fcgi, side by side, in one run:

  * fcgi_backend (this project), parsing with its C parser into a temporary file;
  * stock flup (fcgi_single.WSGIServer) with python-multipart's parse_form, files spilled to disk;
  * uWSGI in its FastCGI mode (one process, Debian's uwsgi-plugin-python3) with the same app;
  * the ceiling: a minimal C responder on libfcgi that reads the body and drops it.

The same Apache, vhost and socket path serve each in turn; rounds are interleaved, so the
machine's noise falls on all alike. Reported: medians of the upload time, throughput, the ratio
to fcgi_backend's throughput, the CPU time the backend's processes spent on the upload (steadier
than the wall time on a shared machine) and Apache's processes beside it, and the growth of the
backend process's RSS during the upload (sampled from /proc every 10 ms).

    python bench/upload_bench.py [--runs 3] [--mib 1024] [--json results.json]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys

from benchlib import (in_turn, bench_arguments, print_table, write_json, AS_USER, APACHE_TUNING, BENCH, MiB, CpuMeter, Peer, RssSampler, bench_site,
                      build_c_responder, median_spread, post_upload)
from apache_harness import Apache



def uwsgi_command(sock, uploads) -> list[str]:
    """uWSGI's FastCGI mode serving peers/multipart_wsgi.py, with this virtualenv's python-multipart."""
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    return ["uwsgi", "--plugin", "python3", "--fastcgi-socket", str(sock), "--chmod-socket=660",
            "--wsgi-file", str(BENCH / "peers" / "multipart_wsgi.py"), "--pythonpath", site_packages,
            "--env", f"UPLOAD_DIR={uploads}", "--processes", "1", "--master", "--disable-logging", "--die-on-term"]


def main() -> int:
    args = bench_arguments(__doc__, mib=1024).parse_args()

    root, site = bench_site("fcgi-bench-upload-")
    uploads = root / "uploads"
    uploads.mkdir()
    run = root / "run"
    sock = site / "fcgi_backend.sock"
    python = sys.executable
    group = AS_USER  # (the socket's group is the user's)
    peers = [
        Peer("fcgi_backend", [python, "-m", "fcgi_backend", "run", str(site), "--upload-dir", str(uploads), *group],
             sock, run / "fcgi_backend.log"),
        Peer("flup + python-multipart", [python, str(BENCH / "peers" / "flup_multipart.py"), str(sock), str(uploads)],
             sock, run / "flup.log"),
        Peer("uWSGI FastCGI + python-multipart", uwsgi_command(sock, uploads), sock, run / "uwsgi.log"),
        Peer("C libfcgi, body dropped (ceiling)", [str(build_c_responder(run)), str(sock)], sock, run / "c.log"),
    ]
    apache = Apache(site, run, extra_config=APACHE_TUNING).start()
    block = os.urandom(MiB)
    samples: dict[str, list[tuple[float, int, float, float]]] = {p.name: [] for p in peers}
    try:
        for round_no in range(args.runs):
            for peer in in_turn(peers, round_no):
                peer.start()
                try:
                    sampler = RssSampler(peer.proc.pid)
                    sampler.start()
                    cpu, apache_cpu = CpuMeter(peer.proc.pid), CpuMeter(apache.proc.pid)
                    elapsed, length, _ = post_upload(apache.port, args.mib, block)
                    cpu_s, apache_s = cpu.stop(settle=True), apache_cpu.stop(settle=True)
                    growth = sampler.stop()
                finally:
                    peer.stop()
                leftovers = os.listdir(uploads)
                if leftovers:
                    raise RuntimeError(f"{peer.name} left files behind: {leftovers}")
                samples[peer.name].append((elapsed, growth, cpu_s, apache_s))
                print(f"round {round_no + 1}: {peer.name}: {elapsed:.2f} s, {length / elapsed / 1e6:.0f} MB/s, "
                      f"backend CPU {cpu_s:.2f} s, Apache CPU {apache_s:.2f} s, RSS +{growth / 1024:.1f} MiB",
                      flush=True)
    finally:
        apache.stop()
        shutil.rmtree(root, ignore_errors=True)

    length = args.mib * MiB
    ours = statistics.median(row[0] for row in samples["fcgi_backend"])
    ours_cpu = statistics.median(row[2] for row in samples["fcgi_backend"])
    results = []
    for name, rows in samples.items():
        median = statistics.median(row[0] for row in rows)
        cpu = statistics.median(row[2] for row in rows)
        results.append({"backend": name, "median_s": median, "mb_per_s": length / median / 1e6,
                        "runs_s": [row[0] for row in rows], "backend_cpu_runs_s": [row[2] for row in rows],
                        "ours_vs_this": median / ours, "backend_cpu_s": cpu, "cpu_vs_ours": cpu / ours_cpu,
                        "apache_cpu_s": statistics.median(row[3] for row in rows),
                        "rss_growth_mib": max(row[1] for row in rows) / 1024})
    print(f"\n{args.mib} MiB multipart upload through Apache mod_proxy_fcgi, median (min-max) of {args.runs} runs\n")
    rows = []
    for r in results:
        ours_row = r["backend"] == "fcgi_backend"
        rows.append([r["backend"], median_spread(r["runs_s"], 2, " s"), f"{r['mb_per_s']:.0f} MB/s",
                     "—" if ours_row else f"{r['ours_vs_this']:.2f}x", median_spread(r["backend_cpu_runs_s"], 2, " s"),
                     "—" if ours_row else f"{r['cpu_vs_ours']:.2f}x", f"{r['apache_cpu_s']:.2f} s",
                     f"{r['rss_growth_mib']:.1f} MiB"])
    print_table(["backend", "median time", "throughput", "fcgi_backend's throughput relative to it", "backend CPU",
                 "relative to fcgi_backend's", "Apache CPU", "RSS growth (max)"], rows)
    write_json(args.json, {"mib": args.mib, "runs": args.runs, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
