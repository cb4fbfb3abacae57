"""What the benchmarks share: peer server processes on the site's socket, and RSS sampling."""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tools"))

from apache_harness import APACHE_USER, Apache, make_reachable_dir, running_as_root, wait_for  # noqa: E402
from apache_harness import _unix_socket_open as socket_answers  # noqa: E402
from wrk_report import latency_ms, non_2xx, requests_done, requests_per_second, socket_errors  # noqa: E402


# The Apache every benchmark puts in front of every server: threads for 256 clients from the start
# (the defaults, 75 threads growing slowly, close keep-alive connections under such load).
APACHE_TUNING = """
StartServers 4
ServerLimit 16
ThreadsPerChild 64
MaxRequestWorkers 1024
MinSpareThreads 64
MaxSpareThreads 1024
MaxKeepAliveRequests 0
"""


PHP_FPM = shutil.which("php-fpm8.2", path="/usr/sbin:/usr/bin") or shutil.which("php-fpm", path="/usr/sbin:/usr/bin")


def php_fpm_config(run: Path, sock: Path, workers: int, php_values: dict[str, str] | None = None) -> Path:
    """A php-fpm pool of ``workers`` static children on ``sock`` (``php_values``: php.ini settings)."""
    conf = run / "php-fpm.conf"
    user = f"user = {APACHE_USER}\ngroup = {APACHE_USER}\nlisten.owner = {APACHE_USER}\nlisten.group = {APACHE_USER}\n" \
        if running_as_root() else ""
    values = "".join(f"php_admin_value[{k}] = {v}\n" for k, v in (php_values or {}).items())
    conf.write_text(f"""[global]
error_log = {run}/php-fpm.log
daemonize = no
pid = {run}/php-fpm.pid

[bench]
listen = {sock}
listen.mode = 0660
{user}pm = static
pm.max_children = {workers}
{values}""")
    return conf


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def wrk(url: str, clients: int, duration: float, *, headers: tuple[str, ...] = (), script: Path | None = None,
        close: bool = False) -> WrkResult:
    """Load ``url`` with wrk (two threads at most) for ``duration`` seconds. ``close``: a new
    connection per request (the reads that end at Connection: close are then not errors)."""
    args = ["wrk", "-t", str(min(2, clients)), "-c", str(clients), "-d", f"{int(duration)}s", "--latency"]
    for header in headers + (("Connection: close",) if close else ()):
        args += ["-H", header]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=duration + 60).stdout
    failed = socket_errors(out)
    errors = non_2xx(out) + failed.connect + failed.timeout + (0 if close else failed.read + failed.write)
    return WrkResult(requests_per_second(out), latency_ms(out, "50"), latency_ms(out, "99"), errors,
                     requests_done(out))


def in_turn(items, round_no: int) -> list:
    """``items`` in round ``round_no``'s order: rotated by one each round, so that each server
    takes each place in a round as often as the runs allow (on this machine a run's place in its
    round moved its requests/s by up to a sixth)."""
    items = list(items)
    shift = round_no % len(items)
    return items[shift:] + items[:shift]


def median_spread(values, digits: int = 0, unit: str = "") -> str:
    """"median (min-max)" of a bench's runs, to ``digits`` decimals, ``unit`` after the median."""
    values = list(values)
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def bench_arguments(doc: str, *, runs: int = 3, duration: int | None = None, workers: int | None = None,
                    concurrency: list[int] | None = None, mib: int | None = None) -> argparse.ArgumentParser:
    """The options every bench takes: --runs and --json, and those of the given defaults."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=runs)
    if duration is not None:
        parser.add_argument("--duration", type=int, default=duration, help="seconds of load per measurement")
    if workers is not None:
        parser.add_argument("--workers", type=int, default=workers, help="worker processes of each server")
    if concurrency is not None:
        parser.add_argument("--concurrency", type=int, nargs="*", default=concurrency)
    if mib is not None:
        parser.add_argument("--mib", type=int, default=mib, help="size of the upload")
    parser.add_argument("--json", help="also write the results here")
    return parser


def print_table(header: list[str], rows: list[list]) -> None:
    """A Markdown table, as the README has them: the header, the rule, a line per row."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def write_json(path: str | None, data: dict) -> None:
    """The results for later runs to compare against, when --json named a file."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2)


# Our server started as root runs as Apache's user, as php-fpm's pool does (and as deployed).
AS_USER = ["--user", APACHE_USER] if running_as_root() else []


def bench_site(prefix: str) -> tuple[Path, Path]:
    """(root, site): a copy of bench/site in a folder Apache's user can enter; root also holds run/."""
    root = make_reachable_dir(prefix)
    site = root / "site"
    shutil.copytree(BENCH / "site", site)
    (root / "run").mkdir()
    return root, site


def build_c_responder(out_dir: Path) -> Path:
    """Compile the libfcgi ceiling responder (Debian's libfcgi-dev)."""
    binary = out_dir / "fcgi_c_responder"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(BENCH / "peers" / "fcgi_c_responder.c"), "-lfcgi"],
                   check=True)
    return binary


class Peer:
    """A FastCGI server process listening on the site's socket."""

    def __init__(self, name: str, command: list[str], socket_path: Path, log: Path) -> None:
        self.name = name
        self.command = command
        self.socket_path = socket_path
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.socket_path.exists():
            self.socket_path.unlink()
        with open(self.log, "ab") as log:  # own session: stop() reaches every process it forks
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: socket_answers(self.socket_path), 20, self.name, self.proc, self.log)
        if running_as_root():  # let Apache's children in, whatever mode the peer gave its socket
            os.chown(self.socket_path, -1, grp.getgrnam(APACHE_USER).gr_gid)
            os.chmod(self.socket_path, 0o660)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of its group still there
        except (ProcessLookupError, PermissionError):
            pass


def process_tree(pid: int) -> list[int]:
    """The process and its children (a server's supervisor and its workers)."""
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def threads_of(pid: int) -> list[int]:
    """The thread ids of a process (OSError once it is gone)."""
    return [int(task) for task in os.listdir(f"/proc/{pid}/task")]


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Run the process, its children and every thread of theirs on ``cpus`` only (processes and
    threads they start later inherit it)."""
    for p in process_tree(pid):
        try:
            for thread in threads_of(p):
                os.sched_setaffinity(thread, cpus)
        except OSError:  # gone meanwhile
            pass


def tree_user_system_seconds(pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds of the process and each of its children."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = {}
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu[p] = int(fields[11]) / tick, int(fields[12]) / tick  # utime, stime
        except OSError:
            pass
    return cpu


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of the process and each of its children."""
    return {p: user + system for p, (user, system) in tree_user_system_seconds(pid).items()}


def tree_context_switches(pid: int) -> dict[int, int]:
    """Context switches (voluntary and not) of the process and each of its children, all their
    threads counted (Apache's children run dozens)."""
    switches = {}
    for p in process_tree(pid):
        try:
            total = 0
            for thread in threads_of(p):
                with open(f"/proc/{p}/task/{thread}/status") as f:
                    total += sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)  # (non)voluntary_
            switches[p] = total
        except OSError:
            pass
    return switches


class CpuMeter:
    """CPU seconds a server's processes spend from its making until stop() (children that exist at stop)."""

    sample = staticmethod(tree_cpu_seconds)

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.sample(pid)

    def stop(self, settle: bool = False) -> float:
        """``settle``: first wait (at most 2 s) until the processes stop using CPU, so that work a
        server does after its answer (removing an uploaded file it did not keep) counts too."""
        after = self.sample(self.pid)
        deadline = time.monotonic() + 2.0
        while settle and time.monotonic() < deadline:
            time.sleep(0.05)
            before, after = after, self.sample(self.pid)
            if sum(after.values()) - sum(before.values()) <= 0.002:  # idle for the last 50 ms
                break
        return sum(value - self.before.get(p, 0) for p, value in after.items())


class SwitchMeter(CpuMeter):
    """Context switches of a server's processes (all threads) from its making until stop()."""

    sample = staticmethod(tree_context_switches)


@contextlib.contextmanager
def behind_apache(site: Path, run: Path, peer: "Peer", extra_config: str = ""):
    """An Apache (APACHE_TUNING plus ``extra_config``) in front of ``peer``, both started for the
    block and stopped after it; yields the Apache."""
    apache = Apache(site, run, extra_config=APACHE_TUNING + extra_config).start()
    try:
        peer.start()
        try:
            yield apache
        finally:
            peer.stop()
    finally:
        apache.stop()


def wrk_with_cpu(url: str, clients: int, duration: float, server_pid: int, apache_pid: int) -> tuple[WrkResult, float, float]:
    """One run of wrk: its result, and the CPU µs per request of the server's processes and of Apache's."""
    server, apache = CpuMeter(server_pid), CpuMeter(apache_pid)
    result = wrk(url, clients, duration)
    return result, server.stop() / result.requests * 1e6, apache.stop() / result.requests * 1e6


def tree_rss_kib(pid: int) -> dict[int, int]:
    """VmRSS (KiB) of the process and each of its children (the worker that holds the upload)."""
    rss = {}
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss[p] = int(line.split()[1])
        except OSError:
            pass
    return rss


class RssSampler(threading.Thread):
    """The largest growth of any one process of the server during a run (each against its own start)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.baseline = tree_rss_kib(pid)
        self.peak = dict(self.baseline)
        self.running = True

    def run(self) -> None:
        while self.running:
            for p, kib in tree_rss_kib(self.pid).items():
                self.baseline.setdefault(p, kib)
                self.peak[p] = max(self.peak.get(p, 0), kib)
            time.sleep(0.01)

    def stop(self) -> int:
        """KiB: the largest peak-minus-start of one process."""
        self.running = False
        self.join()
        return max((self.peak[p] - self.baseline[p] for p in self.peak), default=0)


MiB = 1024 * 1024
UPLOAD_BOUNDARY = "----benchUploadBoundaryZmNnaQ"


def post_upload(port: int, mib: int, block: bytes) -> tuple[float, int, bytes]:
    """POST /upload: a multipart body with one file of ``mib`` MiB (``block`` repeated), sent as
    it is made. (seconds, body length, answer body); RuntimeError unless the answer is 200."""
    import http.client

    head = (f'--{UPLOAD_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{UPLOAD_BOUNDARY}--\r\n".encode()
    length = len(head) + mib * MiB + len(tail)
    os.sync()  # no dirty pages left by whatever ran before: each server starts from the same state
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.putrequest("POST", "/upload")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={UPLOAD_BOUNDARY}")
    conn.putheader("Content-Length", str(length))
    conn.endheaders(head)
    for _ in range(mib):
        conn.send(block)
    conn.send(tail)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"upload answered {response.status}: {body[:300]!r}")
    return elapsed, length, body
