"""The process model: a supervisor and its preforked workers, with real processes and signals."""

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import requests

from apache_harness import Apache, Backend, HTTPBackend, wait_for
from conftest import REPO, backend_command
from fcgi_client import FastCGIClient, begin_request, cgi_params, x_stdin_record
from pki import make_pki
import pids_limit
from wrk_report import requests_done
from fcgi_backend.records import FCGI_PARAMS, encode_params, encode_stream


def get(backend, uri, timeout=30):
    """(status, body) of GET uri, straight over FastCGI."""
    with FastCGIClient(backend.socket_path, timeout=timeout) as client:
        reply = client.request(cgi_params("GET", uri))
    return reply.status, reply.body


def status(backend):
    code, body = get(backend, "/fcgi-status")
    assert code == 200
    return json.loads(body)


def busy_and_idle(backend) -> tuple[int, int]:
    st = status(backend)
    return st["active_workers"], st["idle_workers"]


def request_head(params: dict, request_id: int = 1) -> bytes:
    return begin_request(request_id) + encode_stream(FCGI_PARAMS, request_id, encode_params(params))


def start(site, workdir, *args):
    return Backend(site, workdir / "run", ["--status-path", "/fcgi-status", "--ping-path", "/fcgi-ping", *args]).start()


def in_threads(func, count):
    results = [None] * count

    def run(i):
        try:
            results[i] = func(i)
        except Exception as exc:  # the test looks at what came back
            results[i] = exc
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    return threads, results


def test_prefork_workers_start_and_status_counts_what_was_done(site, workdir):
    backend = start(site, workdir, "--prefork", "3")
    try:
        wait_for(lambda: status(backend)["total_workers"] == 3, 10, "three workers")
        before = status(backend)
        for i in range(7):
            assert get(backend, f"/hello/n{i}")[0] == 200
        after = status(backend)
        assert after["accepted_connections"] - before["accepted_connections"] == 8  # 7 pages + this status
        assert after["requests"] - before["requests"] == 8  # 7 pages + the earlier status request
        assert sum(w["requests"] for w in after["workers"]) == after["requests"]
        assert after["prefork"] == 3 and after["maxfork"] == 12 and after["maxfork_reached"] == 0
        # Once the workers that answered the pages have closed their connections, only the one
        # answering the status page is busy.
        wait_for(lambda: busy_and_idle(backend) == (1, 2), 10, "one busy worker and two idle")
        assert after["listen_queue"] == 0
        assert get(backend, "/fcgi-ping") == (200, b"pong\n")
    finally:
        backend.stop()


def test_status_in_openmetrics_text(site, workdir):
    backend = start(site, workdir, "--prefork", "2")
    try:
        def metrics() -> tuple[str, dict[str, str]]:
            code, body = get(backend, "/fcgi-status?openmetrics")
            text = body.decode()
            assert code == 200 and text.endswith("# EOF\n")
            return text, dict(re.findall(r"^(fcgi_backend_\S+) (\S+)$", text, re.M))

        # Only the worker answering is busy, once the harness's readiness probe has been closed.
        wait_for(lambda: metrics()[1]['fcgi_backend_workers{state="busy"}'] == "1", 10, "one busy worker")
        text, values = metrics()
        assert values["fcgi_backend_maxfork"] == "8"
        assert int(values["fcgi_backend_accepted_connections_total"]) >= 1
        assert "# TYPE fcgi_backend_requests counter" in text
        assert values["fcgi_backend_kept_connections_given_up_total"] == "0"
        assert values["fcgi_backend_kept_connections_handed_off_total"] == "0"
        assert values["fcgi_backend_kept_connections"] == "0"
    finally:
        backend.stop()


def test_a_kept_connection_parked_for_a_new_one_is_counted_on_the_status_page(site, workdir):
    """The one worker, waiting on a connection the web server keeps, parks it to serve a new one
    (here the status request itself): it is still open and kept, and the page says so."""
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1")
    try:
        with FastCGIClient(backend.socket_path) as kept:
            assert kept.request(cgi_params("GET", "/hello/kept"), keep_conn=True).status == 200
            page = status(backend)
            assert page["kept_connections"] == 1, page
            assert [w["parked_connections"] for w in page["workers"]] == [1]
            _, body = get(backend, "/fcgi-status?openmetrics")
            assert re.search(rb"^fcgi_backend_kept_connections 1$", body, re.M), body
            # served on its turn, and still kept
            reply = kept.request(cgi_params("GET", "/hello/again"), request_id=2, keep_conn=True)
            assert reply.status == 200 and b"Hello, again!" in reply.body
        wait_for(lambda: status(backend)["kept_connections"] == 0, 10, "no kept connection once it is closed")
        assert status(backend)["kept_connections_given_up"] == 0  # (parked, not given up)
    finally:
        backend.stop()


def test_a_worker_killed_mid_request_is_replaced_and_others_are_unaffected(site, workdir):
    backend = start(site, workdir, "--prefork", "2", "--maxfork", "2")
    try:
        wait_for(lambda: status(backend)["total_workers"] == 2, 10, "two workers")

        def sleeper(_):
            with FastCGIClient(backend.socket_path, timeout=30) as client:
                return client.request(cgi_params("GET", "/sleep?s=5"))
        threads, results = in_threads(sleeper, 1)

        def sleeping_worker():  # busy with the sleeper's request itself (busy alone: accepted, maybe not yet sent)
            return next((w["pid"] for w in status(backend)["workers"]
                         if w["state"] == "busy" and w["request"].startswith("GET /sleep")), None)
        wait_for(lambda: sleeping_worker() is not None, 10, "the sleeper's request running")
        victim = sleeping_worker()
        free = int(get(backend, "/pid")[1])  # answered by the one worker not sleeping
        assert free != victim
        os.kill(victim, signal.SIGKILL)
        for i in range(20):  # the others keep answering meanwhile
            assert get(backend, f"/hello/after{i}")[0] == 200
        threads[0].join(10)
        assert not results[0].ended and results[0].stdout == b""  # the killed request got no answer
        wait_for(lambda: status(backend)["total_workers"] == 2, 10, "the replacement")
        assert victim not in [w["pid"] for w in status(backend)["workers"]]
        line = rf"worker {victim} was killed by SIGKILL while serving GET /sleep\?s=5 \(\d+\.\ds in\); replacing it"
        wait_for(lambda: re.search(line, backend.log_text()), 10, "the log line naming the request")
    finally:
        backend.stop()


def test_a_worker_that_exits_mid_request_is_logged_with_the_request_and_replaced(site, workdir):
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1")
    try:
        victim = int(get(backend, "/pid")[1])
        with FastCGIClient(backend.socket_path, timeout=10) as client:
            reply = client.request(cgi_params("GET", "/exit?code=7"))
        assert not reply.ended and reply.stdout == b""  # the connection closed with the worker
        line = rf"worker {victim} exited with code 7 while serving GET /exit\?code=7 \(0\.\ds in\); replacing it"
        wait_for(lambda: re.search(line, backend.log_text()), 10, "the log line naming the request")
        assert get(backend, "/hello/again")[0] == 200  # its replacement answers
        assert int(get(backend, "/pid")[1]) != victim
    finally:
        backend.stop()


def test_the_pool_grows_under_a_burst_never_past_maxfork_and_shrinks_back(site, workdir):
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "3", "--px-idle", "1", "--accept-wait", "0.2")
    try:
        seen = []
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                seen.append(_children(backend.proc.pid))
                time.sleep(0.02)
        sampler = threading.Thread(target=sample)
        sampler.start()
        threads, results = in_threads(lambda i: get(backend, "/sleep?s=0.5"), 8)
        for t in threads:
            t.join(30)
        sampling.set()
        sampler.join()
        assert all(r[0] == 200 for r in results), results  # every request of the burst was served
        assert max(seen) == 3  # grew to maxfork, never past it
        st = status(backend)
        assert st["maxfork_reached"] >= 1
        wait_for(lambda: status(backend)["total_workers"] == 1, 15, "the pool shrinking back to prefork")
        backend.wait_for_log("idle for")
        backend.wait_for_log("maxfork")
    finally:
        backend.stop()


def test_a_pool_full_again_and_again_is_counted_each_time_and_logged_once(site, workdir):
    """Under steady load the pool fills and frees many times a second: the status page counts
    each time, the log says it once (then at most once a minute, with the count between)."""
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1")
    try:
        for burst in range(3):
            threads, results = in_threads(lambda i: get(backend, "/sleep?s=0.3"), 2)
            for t in threads:
                t.join(30)
            assert all(r[0] == 200 for r in results), results
            time.sleep(0.3)  # the worker idle: the supervisor sees the pool free again
        assert status(backend)["maxfork_reached"] >= 3
        assert backend.log_text().count("all 1 workers are busy (maxfork)") == 1
    finally:
        backend.stop()


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return len(f.read().split())


def test_max_requests_replaces_the_worker(site, workdir):
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1", "--max-requests", "3")
    try:
        pids = [int(get(backend, "/pid")[1]) for _ in range(9)]
        assert len(set(pids)) == 3 and all(pids.count(p) == 3 for p in set(pids))
        backend.wait_for_log("max_requests")
    finally:
        backend.stop()


def test_workers_are_not_all_replaced_after_the_same_number_of_requests(site, workdir):
    """Each worker left after exactly max_requests: under an even load every worker of the pool was
    replaced at the same moment. Each now draws its own count, from max_requests to max_requests +
    max_requests_jitter (gunicorn's name; a tenth of max_requests unless given)."""
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1", "--max-requests", "4",
                    "--max-requests-jitter", "6")
    try:
        pids = [int(get(backend, "/pid")[1]) for _ in range(100)]
        served = [pids.count(pid) for pid in dict.fromkeys(pids)][:-1]  # (the last worker is still serving)
        assert len(served) >= 9 and all(4 <= n <= 10 for n in served) and len(set(served)) > 1, served
    finally:
        backend.stop()


def _cpus_allowed(pid) -> str:
    with open(f"/proc/{pid}/status") as f:
        return re.search(r"^Cpus_allowed_list:\s*(\S+)", f.read(), re.M).group(1)


def test_worker_cpus_pins_every_worker_and_not_the_supervisor(site, workdir):
    cpu = max(os.sched_getaffinity(0))  # the last CPU this machine lets us use
    everything = _cpus_allowed(os.getpid())
    backend = start(site, workdir, "--prefork", "2", "--maxfork", "2", "--worker-cpus", str(cpu))
    try:
        backend.wait_for_log(f"workers on CPU {cpu}")
        pids = {int(get(backend, "/pid")[1]) for _ in range(20)}
        workers = children(backend)
        assert pids <= workers and len(workers) == 2
        assert {_cpus_allowed(pid) for pid in workers} == {str(cpu)}
        assert _cpus_allowed(backend.proc.pid) == everything
    finally:
        backend.stop()


def test_the_status_page_is_shown_only_to_the_clients_in_status_allow(site, workdir):
    """It lists the requests in flight, query strings and all: the host itself by default."""
    backend = Backend(site, workdir / "run", ["--status-path", "/fcgi-status", "--status-allow", "127.0.0.1, 10.1.0.0/16"])
    backend.start()
    try:
        for address, shown in [("127.0.0.1", True), ("10.1.2.3", True), ("10.2.0.1", False), ("::1", False)]:
            with FastCGIClient(backend.socket_path) as client:
                reply = client.request(cgi_params("GET", "/fcgi-status", REMOTE_ADDR=address))
            assert (reply.status == 200 and b'"workers"' in reply.body) is shown, address
            if not shown:
                assert reply.status == 404
        backend.wait_for_log("status page not shown to 10.2.0.1 (not in status_allow)")
    finally:
        backend.stop()


def test_reload_under_load_through_apache_fails_no_request(site, workdir):
    pages = site / "handlers" / "testing.py"
    backend = Backend(site, workdir / "run", ["--prefork", "3", "--status-path", "/fcgi-status"]).start()
    apache = Apache(site, workdir / "run").start()
    try:
        load = subprocess.Popen(["wrk", "-t", "2", "-c", "8", "-d", "6s", f"{apache.url}/hello/load"],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        pages.write_text(pages.read_text().replace('registry.route("/pid"', 'registry.route("/version", '
                                                   'lambda request: {"version": 2})\n    registry.route("/pid"'))
        backend.proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        backend.proc.send_signal(signal.SIGHUP)
        out, _ = load.communicate(timeout=30)
        wait_for(lambda: {w["generation"] for w in status(backend)["workers"]} == {3}, 10, "old workers gone")
        assert requests_done(out) > 100, out
        assert "Non-2xx" not in out and "Socket errors" not in out, out  # not one request failed
        assert get(backend, "/version") == (200, b'{"version":2}')  # the new code is live
        backend.wait_for_log("reloaded: generation 3 started")
    finally:
        apache.stop()
        backend.stop()


def test_a_reload_with_broken_code_keeps_the_old_workers(site, workdir):
    backend = start(site, workdir, "--prefork", "2")
    try:
        pids = {w["pid"] for w in status(backend)["workers"]}
        (site / "handlers" / "zz_broken.py").write_text("raise RuntimeError('half-saved file')\n")
        backend.proc.send_signal(signal.SIGHUP)
        backend.wait_for_log("reload failed")
        backend.wait_for_log("half-saved file")
        assert {w["pid"] for w in status(backend)["workers"]} == pids
        assert get(backend, "/hello/still")[0] == 200
    finally:
        backend.stop()


def test_sigquit_lets_requests_in_flight_finish(site, workdir):
    backend = start(site, workdir, "--prefork", "2")
    threads, results = in_threads(lambda i: get(backend, "/sleep?s=1.5"), 2)
    # Both sleeping requests are in workers (the one answering the status page is busy too): a
    # connection still in the listen backlog when the server stops is not in flight.
    wait_for(lambda: status(backend)["active_workers"] >= 3, 10, "two busy workers")
    backend.proc.send_signal(signal.SIGQUIT)
    for t in threads:
        t.join(20)
    assert all(r[0] == 200 for r in results), results
    assert backend.proc.wait(20) == 0
    assert not backend.socket_path.exists()


def test_sigterm_gives_requests_graceful_timeout_then_kills(site, workdir):
    backend = start(site, workdir, "--prefork", "1", "--graceful-timeout", "0.5")
    threads, results = in_threads(lambda i: get(backend, "/sleep?s=20"), 1)
    wait_for(lambda: status(backend)["active_workers"] == 2, 10, "the sleeper busy")
    started = time.monotonic()
    backend.proc.send_signal(signal.SIGTERM)
    assert backend.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    backend.wait_for_log("killing 1 workers still busy after 0.5s")
    threads[0].join(5)


def test_sigusr1_reopens_the_log_file(site, workdir):
    log_file = workdir / "backend.log"
    backend = start(site, workdir, "--prefork", "1", "--log-file", str(log_file), "--access-log")
    try:
        assert get(backend, "/hello/before")[0] == 200
        os.rename(log_file, workdir / "backend.log.1")  # what logrotate does
        backend.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: log_file.exists(), 5, "the reopened log file")
        wait_for(lambda: get(backend, "/hello/after")[0] == 200 and "GET /hello/after" in log_file.read_text(),
                 5, "a request logged in the new file")
        assert "GET /hello/before" in (workdir / "backend.log.1").read_text()
        assert "GET /hello/before" not in log_file.read_text()
    finally:
        backend.stop()


HOOKS_MODULE = '''
import os

def init_module(registry):
    path = registry.site.root / "hooks.log"

    def note(event):
        def hook(server, *args):
            with open(path, "a") as f:
                f.write(f"{event} {os.getpid()} {'child' if server.is_child() else 'supervisor'}\\n")
        return hook

    for event in ("listen_ok", "fork_ok", "child_start", "child_exit", "accept_ok", "close",
                  "sig_usr2", "child_sig_usr2", "sig_child", "server_close"):
        registry.hook(event, note(event))
'''


@pytest.mark.parametrize("propagate", [True, False])
def test_hooks_registered_by_a_handler_module(site, workdir, propagate):
    (site / "handlers" / "hooks_demo.py").write_text(HOOKS_MODULE)
    backend = start(site, workdir, "--prefork", "2", *([] if propagate else ["--no-prop-sigusr"]))
    assert get(backend, "/hello/x")[0] == 200
    backend.proc.send_signal(signal.SIGUSR2)
    time.sleep(0.5)
    assert backend.stop() == 0
    lines = (site / "hooks.log").read_text().splitlines()
    events = [line.split()[0] for line in lines]
    assert events.count("listen_ok") == 1 and events.count("server_close") == 1
    assert events.count("fork_ok") == 2 and events.count("child_start") == 2 and events.count("child_exit") == 2
    assert events.count("sig_usr2") == 1
    assert events.count("child_sig_usr2") == (2 if propagate else 0)
    assert events.count("accept_ok") >= 2 and events.count("close") >= 2  # the test's requests
    assert all(line.endswith("child") for line in lines if line.startswith(("child_start", "accept_ok")))
    assert all(line.endswith("supervisor") for line in lines if line.startswith(("fork_ok", "sig_usr2")))


@pytest.mark.parametrize("exit_by", ["max_requests", "reload"])
def test_a_kept_connection_outlives_its_worker(site, workdir, exit_by):
    """A worker that leaves while the server runs on hands its kept connection to the next one
    (handoff.py): closing it lost a request the web server sent on it that moment."""
    args = ["--max-requests", "1", "--max-requests-jitter", "0"] if exit_by == "max_requests" else []
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1", *args)
    try:
        with FastCGIClient(backend.socket_path) as kept:
            first = kept.request(cgi_params("GET", "/pid"), request_id=1, keep_conn=True)
            assert first.status == 200
            if exit_by == "reload":
                backend.proc.send_signal(signal.SIGHUP)
                backend.wait_for_log("reloaded: generation 2")
            for request_id in (2, 3):
                reply = kept.request(cgi_params("GET", "/pid"), request_id=request_id, keep_conn=True)
                assert reply.status == 200 and reply.body != first.body  # the same connection, another worker
            assert status(backend)["kept_connections_handed_off"] >= 1  # (max_requests 1: once a request)
    finally:
        backend.stop()


QUERY_MODULE = '''
import os
import sqlite3

from fcgi_backend import Response


def init_module(registry):
    registry.route("/long-query", long_query)


def long_query(request):
    """Seconds in C code that lets the GIL go, as a slow database query does (sqlite3_step)."""
    rows = int(request.query.get("rows", "10000000"))
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT count(*) FROM c"
    count = sqlite3.connect(":memory:").execute(sql, (rows,)).fetchone()[0]
    return Response(f"{count} {os.getpid()}", content_type="text/plain")
'''


def test_a_parked_connection_is_served_by_a_free_worker_during_a_long_request(site, workdir):
    """A kept connection parked by a worker that then ran a long request waited for that request
    to end, even while another worker was idle: behind a half-second request, the fast requests
    sent on parked connections through nginx waited up to half a second. The worker passes its
    parked connections on (parking.py) while the request runs, here a query in C code."""
    (site / "handlers" / "query.py").write_text(QUERY_MODULE)
    backend = start(site, workdir, "--prefork", "2", "--maxfork", "2")
    try:
        with FastCGIClient(backend.socket_path, timeout=60) as kept:
            first = kept.request(cgi_params("GET", "/pid"), request_id=1, keep_conn=True)
            assert first.status == 200  # this worker now waits on the kept connection
            _, busy = in_threads(lambda _: get(backend, "/sleep?s=0.5"), 1)  # the other worker
            time.sleep(0.2)
            # No worker is idle: the first parks its kept connection for this one, the long query.
            query_threads, query = in_threads(lambda _: get(backend, "/long-query", timeout=120), 1)
            wait_for(lambda: any(w["request"] == "GET /long-query" for w in status(backend)["workers"]), 10,
                     "the long query running (so the kept connection was parked for it)")
            reply = kept.request(cgi_params("GET", "/pid"), request_id=2, keep_conn=True)
            assert reply.status == 200
            assert query_threads[0].is_alive(), "answered only once the long query was over"
            assert reply.body != first.body  # served by the other worker, once its half second was over
            assert status(backend)["kept_connections_handed_off"] == 1
            query_threads[0].join()
            assert query[0][0] == 200 and query[0][1].split()[1] == first.body
            assert busy[0][0] == 200
    finally:
        backend.stop()


def test_a_parked_connection_served_again_is_still_one_connection_to_the_hooks(site, workdir):
    """accept_ok and close run once a connection: a kept connection the worker parks for a new
    one and serves again when its next request comes is not accepted a second time, nor closed."""
    (site / "handlers" / "hooks_demo.py").write_text(HOOKS_MODULE)
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1")
    with FastCGIClient(backend.socket_path) as kept:
        for round_ in range(3):
            assert kept.request(cgi_params("GET", f"/hello/k{round_}"), request_id=1, keep_conn=True).status == 200
            assert get(backend, f"/hello/new{round_}")[0] == 200  # parks the kept one
    accepted = status(backend)["accepted_connections"]  # (this last one included)
    assert backend.stop() == 0
    events = [line.split()[0] for line in (site / "hooks.log").read_text().splitlines()]
    assert events.count("accept_ok") == accepted and events.count("close") == accepted, events


LEAKING_MODULE = '''
import os
import resource
import threading
import time

from fcgi_backend import Response

resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
HELD = []


def init_module(registry):
    registry.route("/start-leaking", start_leaking)


def hold_every_descriptor(seconds):
    """For a while, take each descriptor as soon as one is free: an application leaking files."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            HELD.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            time.sleep(0.001)
    while HELD:
        os.close(HELD.pop())


def start_leaking(request):
    threading.Thread(target=hold_every_descriptor, args=(4,), daemon=True).start()
    time.sleep(0.3)  # (all taken before the answer goes)
    return Response(str(os.getpid()), content_type="text/plain")
'''


def test_a_worker_out_of_descriptors_leaves_for_a_fresh_one_without_a_busy_loop(site, workdir):
    """A worker whose application has taken every descriptor its limit allows cannot accept (the
    listen socket stays ready: it looped on accept, 40,000 log lines a second at full CPU). It
    says so once and leaves, and a fresh worker serves the connection that waited."""
    (site / "handlers" / "leaking.py").write_text(LEAKING_MODULE)
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1")
    try:
        code, leaker = get(backend, "/start-leaking")
        assert code == 200
        time.sleep(0.3)  # (the leak takes the descriptor the first connection's close freed)
        code, served_by = get(backend, "/pid", timeout=10)  # while the leak holds every descriptor
        assert code == 200 and served_by != leaker
        backend.wait_for_log("accept failed: [Errno 24] Too many open files (the 128 descriptors its open-files "
                             "limit allows are open): this worker leaves for a fresh one")
        assert backend.log_text().count("accept failed") == 1
    finally:
        backend.stop()


@pytest.mark.skipif(not pids_limit.available(), reason="no pids cgroup can be made here (root and cgroups needed)")
def test_a_fork_that_fails_leaves_the_supervisor_and_its_workers_serving(site, workdir):
    """Under a limit on processes (systemd's TasksMax, a container's pids limit), fork fails: the
    supervisor died of it, and its workers with it. It says so now, and the workers it has serve
    what comes; a reload that cannot start a worker leaves them serving too."""
    backend = start(site, workdir, "--prefork", "2", "--maxfork", "8")
    try:
        wait_for(lambda: status(backend)["total_workers"] == 2, 10, "two workers")
        workers = [w["pid"] for w in status(backend)["workers"]]
        with pids_limit.pids_limited(f"fcgi-test-{os.getpid()}") as limit:
            limit([backend.proc.pid, *workers], 3)  # no room for a third
            # Every worker busy: the pool would grow.
            threads, results = in_threads(lambda i: get(backend, f"/sleep?s=0.5&n={i}")[0], 6)
            for t in threads:
                t.join(30)
            assert results == [200] * 6
            backend.wait_for_log("cannot start a worker: fork failed: [Errno 11]")
            backend.proc.send_signal(signal.SIGHUP)
            backend.wait_for_log("SIGHUP: reload failed: no worker of the new generation could start")
            assert get(backend, "/hello/still")[0] == 200
            assert sorted(w["pid"] for w in status(backend)["workers"]) == sorted(workers)
            limit([], None)
            backend.proc.send_signal(signal.SIGHUP)
            backend.wait_for_log("reloaded: generation")
        assert get(backend, "/hello/after")[0] == 200
        assert backend.log_text().count("fork failed") == 1  # (once a minute at most)
        assert backend.proc.poll() is None and "Traceback" not in backend.log_text()
    finally:
        backend.stop()


@pytest.mark.skipif(not pids_limit.available(), reason="no pids cgroup can be made here (root and cgroups needed)")
def test_forking_mode_holds_a_connection_whose_fork_failed_until_one_can_be_made(site, workdir):
    """Forking mode under a limit on processes: a connection whose fork failed was closed
    unanswered (a FastCGI client saw the connection end). It is held now and given a process as
    soon as one has ended."""
    backend = start(site, workdir, "--prefork", "0", "--maxfork", "4")
    try:
        with pids_limited_to(backend, 2) as limit:  # the supervisor and one connection's process
            threads, results = in_threads(lambda i: get(backend, f"/sleep?s=0.5&n={i}")[0], 3)
            for t in threads:
                t.join(30)
            assert results == [200] * 3
            backend.wait_for_log("cannot start a worker: fork failed: [Errno 11]")
            limit([], None)
        assert get(backend, "/hello/after")[0] == 200
        assert backend.proc.poll() is None and "Traceback" not in backend.log_text()
    finally:
        backend.stop()


@pytest.mark.skipif(not pids_limit.available(), reason="no pids cgroup can be made here (root and cgroups needed)")
def test_forking_mode_stops_while_it_holds_a_connection_no_fork_can_serve(site, workdir):
    """A stop does not wait for good on a connection whose fork keeps failing: once no process is
    left to end, it is closed, and the log says so."""
    backend = start(site, workdir, "--prefork", "0", "--maxfork", "4")
    try:
        with pids_limited_to(backend, 1):  # the supervisor alone
            threads, results = in_threads(lambda i: get(backend, "/hello/held", timeout=30)[0], 1)
            backend.wait_for_log("cannot start a worker: fork failed")
            assert backend.stop(timeout=10) == 0
            threads[0].join(10)
            assert isinstance(results[0], Exception)  # (closed unserved)
        assert "a connection accepted while fork failed is closed unserved" in backend.log_text()
    finally:
        backend.stop()


@contextlib.contextmanager
def pids_limited_to(backend, most: int):
    """The backend's supervisor (and what it forks from now on) allowed ``most`` processes."""
    with pids_limit.pids_limited(f"fcgi-test-{os.getpid()}") as limit:
        limit([backend.proc.pid], most)
        yield limit


GROWING_MODULE = '''
import os

from fcgi_backend import Response

KEPT = []


def init_module(registry):
    registry.route("/grow", grow)


def grow(request):
    """Hold on to some more memory, touched (a cache that only grows, a leak)."""
    KEPT.append(bytearray(int(request.query["mib"]) * 2**20))
    return Response(str(os.getpid()), content_type="text/plain")
'''


def test_a_worker_grown_past_max_worker_rss_is_replaced_once_its_request_is_done(site, workdir):
    (site / "handlers" / "growing.py").write_text(GROWING_MODULE)
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1", "--max-worker-rss", "100M")
    try:
        first = status(backend)["workers"][0]
        assert 0 < first["resident_bytes"] < 100 * 2**20  # (what the page says of each worker)
        code, grown = get(backend, "/grow?mib=20")
        assert code == 200 and int(grown) == first["pid"]
        time.sleep(1.5)  # (looked at once a second)
        assert get(backend, "/pid")[1] == grown  # under the limit: kept
        code, grown = get(backend, "/grow?mib=120")
        assert code == 200  # the request that passed it is answered
        backend.wait_for_log(f"worker {int(grown)} holds ")
        assert re.search(rf"worker {int(grown)} holds 1[4-9]\d MiB of memory, past max_worker_rss 100 MiB: it is "
                         r"replaced once its request is done", backend.log_text())
        wait_for(lambda: get(backend, "/pid")[1] != grown, 10, "a fresh worker")
        # (the old one is listed, "leaving", until it has exited)
        wait_for(lambda: len(status(backend)["workers"]) == 1, 10, "the grown worker gone")
        fresh = status(backend)["workers"]
        assert fresh[0]["pid"] != int(grown) and fresh[0]["resident_bytes"] < 100 * 2**20
        _, text = get(backend, "/fcgi-status?openmetrics")
        assert re.search(rb'^fcgi_backend_worker_resident_bytes\{pid="%d"\} \d+$' % fresh[0]["pid"], text, re.M)
    finally:
        backend.stop()


SLOW_EXIT_MODULE = '''
import time

def init_module(registry):
    registry.hook("child_exit", lambda server: time.sleep(4))  # e.g. a pool of database connections closing
'''


def test_a_worker_leaving_after_max_requests_is_replaced_before_its_child_exit_hook_ends(site, workdir):
    (site / "handlers" / "slow_exit.py").write_text(SLOW_EXIT_MODULE)
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1", "--max-requests", "1")
    try:
        assert get(backend, "/hello/x")[0] == 200  # the first worker's one request: it leaves
        started = time.monotonic()
        workers = status(backend)["workers"]  # answered by its replacement
        assert time.monotonic() - started < 2
        assert "leaving" in [w["state"] for w in workers], workers
    finally:
        backend.stop()


SUBCLASS_SCRIPT = '''
import sys
from fcgi_backend import Server, ServerConfig
from fcgi_backend.listener import ListenAddress

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]

class CountingServer(Server):
    idle_turns = 0

    def on_child_start(self):
        print("child", flush=True)

    def on_prefork_child_idle(self):
        # a worker that idles three times ends the whole server through its supervisor
        CountingServer.idle_turns += 1
        if CountingServer.idle_turns == 3:
            import os, signal
            os.kill(os.getppid(), signal.SIGUSR1)

    def on_sig_usr1(self):
        print("busy, total:", self.get_busy_kids_count(), "pids:", len(self.get_kid_pids()), flush=True)
        self.break_main_loop()

server = CountingServer(lambda: (hello, None), ListenAddress(path=sys.argv[1]),
                        ServerConfig(prefork=2, accept_wait=0.1))
sys.exit(server.run())
'''


def test_a_server_subclass_overrides_hooks_and_breaks_the_main_loop(workdir):
    script = workdir / "my_server.py"
    script.write_text(SUBCLASS_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(workdir / "s.sock")], capture_output=True,
                         text=True, timeout=30, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("child") == 2
    assert "busy, total: (0, 2) pids: 2" in out.stdout
    assert not (workdir / "s.sock").exists()


@pytest.mark.parametrize("config, message", [
    ("idle_timeout = 0", "idle_timeout must be more than 0 seconds"),
    ("prefork = 4\nmaxfork = 2", "maxfork (2) must not be below prefork (4)"),
    ("accept_wait = -1", "accept_wait must be more than 0"), ("timeout = 5", "timeout in [server] was renamed accept_wait"),
    ("px_idle = 0", "px_idle must be more than 0"),
    ("max_requests = -5", "max_requests must be 0"),
    ("max_requests = 100\nmax_requests_jitter = -1", "max_requests_jitter must be 0 or more"),
    ("max_worker_rss = -1", "max_worker_rss must be 0 (no limit) or more"),
    ("max_worker_rss = '512Q'", "max_worker_rss"),
    ("worker_cpus = '9999'", "worker_cpus: CPU 9999 is not available here"),
    ("worker_cpus = '3-1'", "runs backwards"),
    ("worker_cpus = 'one'", "is not a CPU list"),
    ("prefork = 'four'", "prefork in [server] must be int"),
    ("workers = 3", "unknown setting 'workers'"),
    ("status_path = 'status'", "must start with '/'"),
    ("prefork = [", "not valid TOML"),
    ("prefork = 2\n[listen]\ntcp = 'nohost'", "tcp in [listen]: expected HOST:PORT (for example 127.0.0.1:9000), got 'nohost'"),
])
def test_bad_settings_are_refused_at_start(site, workdir, config, message):
    path = workdir / "server.toml"
    path.write_text("[server]\n" + config + "\n")
    out = subprocess.run(backend_command("run", site, "--config", path),
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (site / "fcgi_backend.sock").exists()


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "8000", "[::1]:"])
def test_a_bad_http_address_in_the_config_file_is_refused_at_start(site, workdir, address):
    path = workdir / "server.toml"
    path.write_text(f"[listen]\ntcp = '{address}'\n")
    out = subprocess.run(backend_command("serve-http", site, "--config", path),
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2, out.stderr
    assert f"tcp in [listen]: expected HOST:PORT (for example 127.0.0.1:9000), got '{address}'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--forwarded-allow-ips", "127.0.0.1, nginx"], "forwarded_allow_ips: 'nginx' is not an address or network"),
    (["--min-rate", "-5"], "min_rate cannot be negative (0 turns it off)"),
    (["--status-allow", "localhost"], "status_allow: 'localhost' is not an address or network"),
])
def test_bad_serve_http_settings_are_refused_at_start(site, args, message):
    out = subprocess.run(backend_command("serve-http", site, *args), capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_tls_files_that_cannot_work_are_refused_at_start_saying_what_to_fix(site, workdir):
    pki = make_pki(workdir / "pki")
    (workdir / "not-a-cert.pem").write_text("garbage\n")
    cases = [
        (["--tls-cert", "/no/such/cert.pem"], "TLS certificate /no/such/cert.pem does not exist or cannot be read"),
        (["--tls-cert", pki.cert("server")], f"TLS certificate {pki.cert('server')} holds no private key: give the "
                                             "key's file with --tls-key"),
        (["--tls-cert", workdir / "not-a-cert.pem", "--tls-key", pki.key("server")], "holds no PEM certificate"),
        (["--tls-cert", pki.cert("server"), "--tls-key", pki.key("client")], "KEY_VALUES_MISMATCH"),
        (["--tls-cert", pki.cert("server"), "--tls-key", pki.key("server"), "--tls-verify", "required"],
         "TLS verify mode required needs a CA file (--tls-ca)"),
    ]
    for args, message in cases:
        out = subprocess.run(backend_command("serve-http", site, *args), capture_output=True, text=True, timeout=20)
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_config_file_settings_and_flags_that_override_them(site, workdir):
    path = workdir / "server.toml"
    path.write_text("[server]\nprefork = 3\nmaxfork = 5\nstatus-path = '/st'\n")
    backend = Backend(site, workdir / "run", ["--config", str(path), "--maxfork", "7"]).start()
    try:
        code, body = get(backend, "/st")
        st = json.loads(body)
        assert (st["prefork"], st["maxfork"]) == (3, 7)
    finally:
        backend.stop()


def test_negative_prefork_sets_both(site, workdir):
    backend = start(site, workdir, "--prefork", "-2")
    try:
        st = status(backend)
        assert (st["prefork"], st["maxfork"]) == (2, 2)
    finally:
        backend.stop()


def test_nofork_serves_from_one_process(site, workdir):
    backend = start(site, workdir, "--nofork")
    try:
        assert int(get(backend, "/pid")[1]) == backend.proc.pid
        assert status(backend)["total_workers"] == 1
    finally:
        assert backend.stop() == 0


# ---- a supervisor that never dies of bookkeeping, stops that lose nothing ---------------------------

def children(backend) -> set[int]:
    with open(f"/proc/{backend.proc.pid}/task/{backend.proc.pid}/children") as f:
        return {int(p) for p in f.read().split()}


def test_reloads_with_workers_that_cannot_exit_never_kill_the_supervisor(site, workdir):
    """Each SIGHUP started a generation while the old workers were stuck; once the board's 2 x
    maxfork slots were full the supervisor died of 'no free scoreboard slot', leaving its workers."""
    backend = start(site, workdir, "--prefork", "1", "--maxfork", "1", "--graceful-timeout", "3")
    try:
        threads, _ = in_threads(lambda i: get(backend, "/stuck?s=60", timeout=70), 1)
        time.sleep(0.5)  # the only worker is stuck
        backend.proc.send_signal(signal.SIGHUP)  # a new generation takes the second and last slot
        backend.wait_for_log("reloaded: generation 2 started, 1 old workers finishing")
        wait_for(lambda: status(backend)["active_workers"] == 2, 10, "the stuck worker still busy")
        for _ in range(3):
            backend.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        backend.wait_for_log("reload refused")
        assert backend.proc.poll() is None and get(backend, "/hello/alive")[0] == 200
        assert len(children(backend)) <= 2  # never more workers than slots
        backend.wait_for_log("is still busy with GET /stuck?s=60; killing it", timeout=15)
        wait_for(lambda: len(children(backend)) == 1, 10, "the stuck worker gone")
        backend.proc.send_signal(signal.SIGHUP)  # room again: the reload goes through
        backend.wait_for_log("reloaded: generation")
        threads[0].join(5)
    finally:
        assert backend.stop() == 0


def test_term_after_a_quit_stop_ends_it_within_graceful_timeout(site, workdir):
    """SIGQUIT waits for every request in flight; a stuck one used to hold it forever, with TERM
    ignored and the socket open with nobody accepting."""
    backend = start(site, workdir, "--prefork", "1", "--graceful-timeout", "1")
    threads, _ = in_threads(lambda i: get(backend, "/stuck?s=60", timeout=70), 1)
    wait_for(lambda: status(backend)["active_workers"] == 2, 10, "the stuck request in a worker")
    backend.proc.send_signal(signal.SIGQUIT)
    wait_for(lambda: not backend.socket_path.exists(), 5, "the socket removed at once")
    probe = socket.socket(socket.AF_UNIX)
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):  # new clients are refused fast
        probe.connect(str(backend.socket_path))
    probe.close()
    time.sleep(1)
    assert backend.proc.poll() is None  # QUIT waits for the stuck request
    started = time.monotonic()
    backend.proc.send_signal(signal.SIGTERM)
    assert backend.proc.wait(10) == 0 and time.monotonic() - started < 4
    backend.wait_for_log("killing 1 workers still busy after 1s; ")
    threads[0].join(5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT])
def test_a_graceful_stop_answers_every_connection_already_made(site, workdir, sig):
    """Connections accepted by the kernel (in the backlog) when the stop came used to be dropped:
    under load through Apache that was 16 answers of 503."""
    backend = start(site, workdir, "--prefork", "2", "--maxfork", "2")
    outcomes = {"answered": 0, "refused": 0, "lost": []}
    lock = threading.Lock()
    stop_sent = threading.Event()

    def client_loop():
        while True:
            try:
                client = FastCGIClient(backend.socket_path, timeout=20)
            except (FileNotFoundError, ConnectionRefusedError):
                with lock:
                    outcomes["refused"] += 1
                return
            with client:
                try:
                    reply = client.request(cgi_params("GET", "/sleep?s=0.05"))
                except OSError as exc:
                    reply = exc
            with lock:
                if getattr(reply, "status", None) == 200 and reply.ended:
                    outcomes["answered"] += 1
                else:
                    outcomes["lost"].append(repr(reply)[:100])
            if stop_sent.is_set() and outcomes["answered"] > 200:
                return
    threads = [threading.Thread(target=client_loop) for _ in range(12)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # a backlog of waiting connections builds up: 12 clients, 2 workers
    backend.proc.send_signal(sig)
    stop_sent.set()
    for t in threads:
        t.join(30)
    assert backend.proc.wait(30) == 0
    assert outcomes["lost"] == [] and outcomes["refused"] == 12 and outcomes["answered"] > 20, outcomes


@pytest.mark.parametrize("writes", ["page cache", "direct writer"])
def test_a_worker_killed_mid_upload_leaves_no_temporary_file(site, workdir, writes):
    """Killed while it writes the file: through the page cache, or (past --upload-direct-io)
    while the direct writer's thread is writing it."""
    uploads = workdir / "uploads"
    uploads.mkdir()
    stale = uploads / "fcgi-upload-999999-AbCdEf"  # from a server that was killed: no such process
    stale.write_bytes(b"x" * 1000)
    direct_io = "1M" if writes == "direct writer" else "0"
    backend = start(site, workdir, "--prefork", "1", "--upload-dir", str(uploads), "--upload-direct-io", direct_io)
    try:
        backend.wait_for_log("removed 1 stale upload file")
        assert not stale.exists()
        boundary = "Kb"
        params = cgi_params("POST", "/upload", 50_000_000, f"multipart/form-data; boundary={boundary}")
        client = FastCGIClient(backend.socket_path, timeout=20)
        client.send(request_head(params) + x_stdin_record(50_000_000)
                    + f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n'.encode()
                    + b"u" * 5_000_000)
        wait_for(lambda: os.listdir(uploads), 10, "the temporary file")
        (name,) = os.listdir(uploads)
        wait_for(lambda: os.stat(uploads / name).st_size >= 2 * 1024 * 1024, 10, "2 MiB of the file written")
        victim = int(name.split("-")[2])
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: os.listdir(uploads) == [], 10, "the dead worker's file removed")
        backend.wait_for_log(f"left by worker {victim}")
        client.close()
        assert get(backend, "/hello/after")[0] == 200
    finally:
        backend.stop()


def test_a_request_stuck_where_no_alarm_reaches_is_killed_by_the_supervisor(site, workdir):
    backend = start(site, workdir, "--prefork", "1", "--request-timeout", "1")
    try:
        started = time.monotonic()
        with FastCGIClient(backend.socket_path, timeout=30) as client:
            reply = client.request(cgi_params("GET", "/stuck?s=60"))
        assert not reply.ended and reply.stdout == b"" and time.monotonic() - started < 12
        backend.wait_for_log("GET /stuck?s=60 has run")
        backend.wait_for_log("past request_timeout 1s and not stopped; killing the worker")
        assert get(backend, "/hello/after")[0] == 200
    finally:
        backend.stop()


@pytest.mark.parametrize("flavour", ["fastcgi", "http"])
def test_forking_mode_at_maxfork_keeps_connections_waiting_and_a_stop_serves_them(site, workdir, flavour):
    """Forking mode (--prefork 0) with every process busy: a new connection waits in the listen
    backlog and is answered once a process is free, as in prefork mode (before, it was accepted and
    closed unanswered: the connector answered 502, mod_proxy_fcgi 503, curl saw an empty reply).
    A stop serves what waits, then exits."""
    args = ["--prefork", "0", "--maxfork", "1", "--idle-timeout", "15", "--status-path", "/fcgi-status"]
    if flavour == "http":
        backend = HTTPBackend(site, workdir / "run", args).start()
        url = backend.url
    else:
        backend = Backend(site, workdir / "run", args).start()
        apache = Apache(site, workdir / "run-apache", connector=True).start()
        url = apache.url
    try:
        # A client that keeps its connection open between requests does not hold the one process
        # for idle_timeout (15 s): the connection is given up for the one that waits.
        kept = http.client.HTTPConnection("127.0.0.1", int(url.rpartition(":")[2]), timeout=30)
        kept.request("GET", "/hello/kept")
        assert kept.getresponse().read()
        started = time.monotonic()
        assert requests.get(f"{url}/hello/next", timeout=30).status_code == 200
        assert time.monotonic() - started < 5
        # Over HTTP the status page counts it (a request sent as it closed would have met the
        # close); the connector's FastCGI connection ends with its request, so none was given up.
        if flavour == "http":
            wait_for(lambda: requests.get(f"{url}/fcgi-status", timeout=30).json()["kept_connections_given_up"] == 1,
                     10, "the kept connection given up, counted")
        else:
            assert status(backend)["kept_connections_given_up"] == 0
        kept.close()
        for stop in (False, True):
            threads, results = in_threads(
                lambda i: requests.get(f"{url}/sleep?s=1" if i == 0 else f"{url}/hello/w{i}", timeout=30), 3)
            time.sleep(0.5)  # the sleeper holds the one process; the others wait in the backlog
            if stop:
                backend.proc.send_signal(signal.SIGTERM)
            for t in threads:
                t.join(30)
            assert [r.status_code if isinstance(r, requests.Response) else r for r in results] == [200] * 3, stop
            assert "Hello, w1!" in results[1].text and "Hello, w2!" in results[2].text
        assert backend.proc.wait(30) == 0
        assert "all 1 workers are busy (maxfork); new connections wait in the listen backlog" in backend.log_text()
        assert "closed unserved" not in backend.log_text()
    finally:
        if flavour == "fastcgi":
            apache.stop()
        backend.stop()


@pytest.mark.parametrize("flavour", ["fastcgi", "http"])
def test_request_timeout_gives_each_request_its_own_time(site, workdir, flavour):
    """request_timeout's alarm is set by a request that finds none set and left set after it (no
    system call per request for it): a request that starts while an earlier one's alarm is still
    set is stopped at its own deadline, not at the earlier request's, and requests that each end
    in time are never stopped, however long they run back to back."""
    args = ["--prefork", "1", "--maxfork", "1", "--request-timeout", "1"]
    backend = (HTTPBackend if flavour == "http" else Backend)(site, workdir / "run", args).start()

    def fetch(uri):
        started = time.monotonic()
        if flavour == "http":
            reply = requests.get(f"{backend.url}{uri}", timeout=30)
            code = reply.status_code
        else:
            code = get(backend, uri)[0]
        return code, time.monotonic() - started

    try:
        # 2.8 s of requests of 0.4 s, one after the other on the one worker: none is stopped.
        assert [fetch("/sleep?s=0.4")[0] for _ in range(7)] == [200] * 7
        # The one before sets the alarm 0.7 s before the next request starts.
        assert fetch("/sleep?s=0.7")[0] == 200
        code, took = fetch("/sleep?s=30")
        assert code == 504 and 0.95 < took < 4, took
        backend.wait_for_log("GET /sleep?s=30 stopped after 1.0s (request_timeout 1s)")
        assert fetch("/sleep?s=0.1")[0] == 200
        log = backend.log_text()
        assert "SIGALRM" not in log
        assert log.count("request_timeout") == 1, log  # one line says what was stopped, in both flavours
    finally:
        backend.stop()


@pytest.mark.parametrize("flavour, mode", [("fastcgi", "prefork"), ("http", "prefork"), ("fastcgi", "forking")])
def test_an_application_holding_over_a_thousand_files_keeps_its_workers(site, workdir, flavour, mode):
    """A worker's waits take any descriptor: an application holding many files (here 1,100 at
    import) puts each connection past 1023, where select.select fails. A kept connection given
    way for a new one (FastCGI parks it, HTTP waits a moment first) then ended the worker, and
    the client saw a reset."""
    import resource
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1200:
        pytest.skip("the hard limit on open files is under 1,200 here")
    (site / "handlers" / "many_files.py").write_text(
        "import os\nimport resource\n\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
        "HELD = [os.open('/dev/null', os.O_RDONLY) for _ in range(1100)]  # a cache of open files\n\n\n"
        "def init_module(registry):\n    pass\n")
    args = ["--prefork", "1" if mode == "prefork" else "0", "--maxfork", "1", "--status-path", "/fcgi-status"]
    backend = (HTTPBackend if flavour == "http" else Backend)(site, workdir / "run", args).start()

    def workers():
        if flavour == "http":
            return [w["pid"] for w in requests.get(f"{backend.url}/fcgi-status", timeout=30).json()["workers"]]
        return [w["pid"] for w in status(backend)["workers"] if w["state"] != "busy"]

    try:
        before = workers()
        for round_ in range(3):
            if flavour == "http":
                kept = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=30)
                kept.request("GET", f"/hello/kept{round_}")
                assert b"Hello, kept" in kept.getresponse().read()
                # at once: the worker still waits on the kept connection when this one comes
                reply = requests.get(f"{backend.url}/hello/new{round_}", timeout=30)
                assert reply.status_code == 200 and f"Hello, new{round_}!" in reply.text
                kept.close()
            else:
                with FastCGIClient(backend.socket_path) as kept:
                    assert kept.request(cgi_params("GET", "/hello/kept"), keep_conn=True).status == 200
                    assert get(backend, f"/hello/new{round_}")[0] == 200
                    if mode == "forking":  # (a process of its own: given up for the new one, not parked)
                        assert kept.closed_by_server()
                        continue
                    reply = kept.request(cgi_params("GET", f"/hello/again{round_}"), request_id=2, keep_conn=True)
                    assert reply.status == 200 and f"Hello, again{round_}!".encode() in reply.body
        if mode == "prefork":
            assert workers() == before  # the same worker served them all
        assert backend.proc.poll() is None
        assert "Traceback" not in backend.log_text()
    finally:
        backend.stop()
