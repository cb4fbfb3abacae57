"""Requests/s through one Apache with 1, 2 and 3 backend hosts behind mod_proxy_balancer, and the
same Apache sending to one member directly (no balancer), in one run.

Each member is a host of its own (a network namespace, tools/netns_harness.py) serving the bench
site over TCP; all share this machine's cores, so more members is not more CPU: the table shows
what the balancer costs Apache per request and how the work spreads, not a speed-up. wrk loads a
small mustache page at 16 clients; rounds are interleaved and the table gives medians.

    python bench/balancer_bench.py [--runs 3] [--duration 4] [--workers 4] [--json FILE]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys

from benchlib import in_turn, bench_arguments, print_table, write_json, APACHE_TUNING, CpuMeter, bench_site, wrk  # first: puts tools/ on the path
from apache_harness import Apache, free_port
from netns_harness import PORT, Hosts, Member

BALANCER_MODULES = "".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n" for m in
                           ("slotmem_shm", "proxy_balancer", "proxy_hcheck", "lbmethod_bybusyness", "authz_host"))
PAGE = "/view"
CLIENTS = 16
TW_REUSE = "/proc/sys/net/ipv4/tcp_tw_reuse"


class TimeWaitReuse:
    """net.ipv4.tcp_tw_reuse = 1 for the run, as docs/SCALING.md advises for an Apache host that
    opens a TCP connection per request: without it the bench's thousands of connections a second
    to one member use up the ephemeral ports in TIME_WAIT within a minute, and Apache spends its
    CPU on failed connects. Set back afterwards."""

    def __enter__(self):
        with open(TW_REUSE) as f:
            self.before = f.read().strip()
        if self.before != "1":
            with open(TW_REUSE, "w") as f:
                f.write("1")
            print(f"(net.ipv4.tcp_tw_reuse: {self.before} -> 1 for this run)")
        return self

    def __exit__(self, *exc):
        if self.before != "1":
            with open(TW_REUSE, "w") as f:
                f.write(self.before)


def direct_vhost(site, port: int, member: Member) -> str:
    """The site's vhost with one member as a plain fcgi:// handler: the baseline."""
    text = subprocess.run([sys.executable, "-m", "fcgi_backend", "apache-conf", str(site), "--port", str(port),
                           "--balancer", f"{member.address}:{PORT}"], capture_output=True, text=True, check=True).stdout
    name = text.split('<Proxy "balancer://')[1].split('"')[0]
    return text.replace(f"proxy:balancer://{name}", f"proxy:fcgi://{member.address}:{PORT}")


def main() -> int:
    args = bench_arguments(__doc__, duration=4, workers=4).parse_args()
    why_not = Hosts.unavailable()
    if why_not:
        print(f"balancer_bench: skipped: {why_not}")
        return 0
    root, site = bench_site("fcgi-bench-balancer-")
    setups = ["1 member, direct (no balancer)", "1 member", "2 members", "3 members"]
    samples = {name: [] for name in setups}
    with Hosts(3) as hosts, TimeWaitReuse():
        members = [Member(hosts, i, site, root, ["--prefork", str(-args.workers)]).start() for i in range(3)]
        try:
            for round_no in range(args.runs):
                for setup in in_turn(setups, round_no):
                    count = 1 if setup.startswith("1") else int(setup[0])
                    port = free_port()
                    conf = root / "vhost.conf"
                    if "direct" in setup:
                        conf.write_text(direct_vhost(site, port, members[0]))
                    else:
                        conf.write_text(subprocess.run(
                            [sys.executable, "-m", "fcgi_backend", "apache-conf", str(site), "--port", str(port),
                             *sum((["--balancer", f"{m.address}:{PORT}"] for m in members[:count]), [])],
                            capture_output=True, text=True, check=True).stdout)
                    apache = Apache(site, root / "apache", port=port, vhost_conf=conf,
                                    extra_config=APACHE_TUNING + BALANCER_MODULES).start()
                    try:
                        subprocess.run(["wrk", "-t1", "-c4", "-d1s", apache.url + PAGE], capture_output=True)
                        meters = [CpuMeter(m.proc.pid) for m in members[:count]]
                        apache_meter = CpuMeter(apache.proc.pid)
                        result = wrk(apache.url + PAGE, CLIENTS, args.duration)
                        member_us = [meter.stop() / result.requests * 1e6 for meter in meters]
                        apache_us = apache_meter.stop() / result.requests * 1e6
                        samples[setup].append((result.rps, apache_us, sum(member_us), result.errors))
                        print(f"round {round_no + 1} {setup}: {result.rps:.0f} req/s, Apache {apache_us:.0f} us, "
                              f"members {' + '.join(f'{u:.0f}' for u in member_us)} us per request, "
                              f"errors {result.errors}", flush=True)
                    finally:
                        apache.stop()
        finally:
            for m in members:
                m.stop()
            shutil.rmtree(root, ignore_errors=True)

    results = [{"setup": name, "rps": statistics.median(r[0] for r in rows),
                "apache_cpu_us": statistics.median(r[1] for r in rows),
                "members_cpu_us": statistics.median(r[2] for r in rows), "errors": sum(r[3] for r in rows)}
               for name, rows in samples.items()]
    base = results[0]
    print(f"\n{PAGE} at {CLIENTS} clients, median of {args.runs} runs of {args.duration} s, "
          f"{args.workers} workers per member\n")
    print_table(["setup", "requests/s", "vs direct", "Apache CPU per request", "vs direct", "members' CPU per request"],
                [[r["setup"], f"{r['rps']:.0f}", f"{r['rps'] / base['rps']:.2f}x", f"{r['apache_cpu_us']:.0f} µs",
                  f"{r['apache_cpu_us'] - base['apache_cpu_us']:+.0f} µs", f"{r['members_cpu_us']:.0f} µs"]
                 for r in results])
    write_json(args.json, {"runs": args.runs, "duration": args.duration, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
