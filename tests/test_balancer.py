"""Several backend hosts behind one Apache's mod_proxy_balancer, on real separate network stacks.

Each backend host is a network namespace the test makes (tools/netns_harness.py), with its own
address; Apache (with the vhost `fcgi-backend apache-conf --balancer` writes) and PostgreSQL (the
shared session store) are on the machine, reached over the bridge. Requests spread; a session goes
on across members; a member killed under load, its link cut, costs at most its requests in
flight; it rejoins through the health check; a rolling reload fails nothing; only the web server
may connect.
"""

import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from apache_harness import Apache, free_port, make_reachable_dir, wait_for
from conftest import build_test_site
from netns_harness import PORT, Hosts, Member
from postgres_harness import Postgres, available as postgres_available

BALANCER_MODULES = "".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n" for m in
                           ("slotmem_shm", "proxy_balancer", "proxy_hcheck", "lbmethod_bybusyness",
                            "authz_host"))

why_not = Hosts.unavailable() or ("" if postgres_available() else "PostgreSQL is not installed")
pytestmark = pytest.mark.skipif(bool(why_not), reason=f"cannot make separate hosts here: {why_not}")


@pytest.fixture(scope="module")
def cluster():
    root = make_reachable_dir("fcgi-balancer-")
    with Hosts(3) as hosts:
        pg = Postgres(root / "pg", listen=hosts.gateway).start()
        members = []
        apache = None
        try:
            site = build_test_site(root)
            members = [Member(hosts, i, site, root, ["--sessions", pg.tcp_url(hosts.gateway)]).start()
                       for i in range(3)]
            port = free_port()
            vhost = subprocess.run([sys.executable, "-m", "fcgi_backend", "apache-conf", str(site), "--port", str(port),
                                    *sum((["--balancer", f"{m.address}:{PORT}"] for m in members), [])],
                                   capture_output=True, text=True, check=True).stdout
            (root / "vhost.conf").write_text(vhost)
            apache = Apache(site, root / "apache", port=port, vhost_conf=root / "vhost.conf",
                            extra_config=BALANCER_MODULES).start()
            yield hosts, members, apache
        finally:
            if apache is not None:
                apache.stop()
            for m in members:
                m.stop()
            pg.stop()


def member_of(apache, session=None) -> dict:
    r = (session or requests).get(apache.url + "/member", timeout=15)
    assert r.status_code == 200, r.text
    return r.json()


def test_requests_spread_over_every_member(cluster):
    _, members, apache = cluster
    served = Counter(member_of(apache)["member"] for _ in range(60))
    assert set(served) == {m.name for m in members}, served


def test_a_session_goes_on_across_members(cluster):
    _, members, apache = cluster
    browser = requests.Session()
    answers = [member_of(apache, browser) for _ in range(30)]
    assert [a["n"] for a in answers] == list(range(1, 31))  # no count lost or repeated
    assert len({a["member"] for a in answers}) >= 2  # and more than one host counted


def test_static_files_come_from_apache_and_the_health_check_from_each_member(cluster):
    _, members, apache = cluster
    assert requests.get(apache.url + "/style.css", timeout=10).status_code == 200
    manager = requests.get(apache.url + "/balancer-manager", timeout=10)
    assert manager.status_code == 200 and all(m.address in manager.text for m in members)
    for m in members:
        assert m.answers()  # hcmethod=GET against the FastCGI port: 200 pong
        assert "not in allowed_clients" not in m.log_text()


def test_only_the_web_server_may_connect(cluster):
    hosts, members, _ = cluster
    target = members[0]
    with socket.create_connection((target.address, PORT), timeout=5, source_address=(hosts.outsider, 0)) as s:
        try:
            s.sendall(bytes([1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]))  # BEGIN_REQUEST
            answer = s.recv(100)
        except (ConnectionResetError, BrokenPipeError):  # closed with our bytes unread: a reset
            answer = b""
        assert answer == b""  # closed, nothing answered
    wait_for(lambda: f"refused a connection from {hosts.outsider}: not in allowed_clients" in target.log_text(),
             10, "the refusal's log line")


class Load:
    """Clients requesting /member in a loop, each with its own session, counting what failed."""

    def __init__(self, apache, clients: int = 8) -> None:
        self.url = apache.url + "/member"
        self.stop_at = None
        self.results = []  # (when the request started, member or None, status or exception name)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]
        self.counts_lost = []    # (client, counter expected, counter seen) when a session went back or restarted
        self.counts_skipped = []  # (client, counter expected, counter seen) when it went on past the next

    def _client(self, client: int) -> None:
        browser = requests.Session()
        expected = 1
        while not self._stopping():
            started = time.monotonic()
            try:
                r = browser.get(self.url, timeout=8)
                outcome = r.status_code
                member = r.json()["member"] if r.status_code == 200 else None
                if r.status_code == 200:
                    seen = r.json()["n"]
                    if seen != expected:
                        (self.counts_lost if seen < expected else self.counts_skipped).append((client, expected, seen))
                    expected = seen + 1
            except requests.RequestException as exc:
                outcome, member = type(exc).__name__, None
            with self.lock:
                self.results.append((started, member, outcome))

    def _stopping(self) -> bool:
        return self.stop_at is not None and time.monotonic() >= self.stop_at

    def run_for(self, seconds: float, during=None) -> None:
        for t in self.threads:
            t.start()
        try:
            if during is not None:
                during()
        finally:  # (a failure in during() must not leave the clients running for the rest of the suite)
            self.stop_at = time.monotonic() + seconds
            for t in self.threads:
                t.join()

    def failures(self, since: float = 0.0) -> list:
        return [r for r in self.results if r[2] != 200 and r[0] >= since]


def test_a_member_killed_under_load_loses_at_most_its_requests_in_flight_and_rejoins(cluster):
    hosts, members, apache = cluster
    victim = members[0]
    load = Load(apache, clients=8)
    marks = {}

    def kill_one():
        time.sleep(1.5)
        marks["killed"] = time.monotonic()
        hosts.kill_all(0)      # SIGKILL to every process of the host: gone, with whatever it had in flight
        hosts.cut(0)           # and its link: packets to it go nowhere
    load.run_for(6, during=kill_one)
    failed = load.failures()
    print(f"member killed under load: {len(failed)} of {len(load.results)} requests failed: {failed}")
    # at most what the victim had in flight (each client has one request at a time: 8 at the most);
    # with its link cut, those wait for Apache's timeout (the client gives up first, here)
    assert len(failed) <= 8, failed
    assert all(started < marks["killed"] + 0.5 for started, _, _ in failed), failed
    late = load.failures(since=marks["killed"] + 3)
    assert late == [], late  # once Apache has marked it, every request succeeds on the others
    after = [r for r in load.results if r[0] > marks["killed"] + 1 and r[2] == 200]
    assert after and all(r[1] != victim.name for r in after)
    # Sessions intact: no visitor's counter went back or restarted. It may skip one, once: a request
    # the victim had in flight, and had already counted in the session, got no answer from it, and
    # mod_proxy_balancer re-sent it to another member (it fails over on a 503 when nothing was
    # answered yet).
    assert load.counts_lost == [], load.counts_lost
    skipped_clients = [client for client, expected, seen in load.counts_skipped]
    assert all(seen == expected + 1 for _, expected, seen in load.counts_skipped), load.counts_skipped
    assert len(skipped_clients) == len(set(skipped_clients)), load.counts_skipped

    victim.proc.wait()
    hosts.restore(0)
    victim.start()
    # the health check (every 2 s, 2 passes) and the member's retry put it back. Under load: the
    # requests that were in flight on the dead host still wait for Apache's timeout and count as
    # its busy ones, so bybusyness picks it only once the others are busier (as they are under load)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with ThreadPoolExecutor(8) as pool:
            served = list(pool.map(lambda _: member_of(apache)["member"], range(32)))
        if victim.name in served:
            break
        time.sleep(1)
    else:
        manager = requests.get(apache.url + "/balancer-manager", timeout=10).text
        state = manager[manager.find(victim.address) - 200:manager.find(victim.address) + 600]
        pytest.fail(f"the restarted member got no request within 60 s; balancer-manager: {state}\n"
                    f"Apache's log: {apache.error_log.read_text()[-2000:]}")


def test_a_rolling_reload_fails_nothing(cluster):
    _, members, apache = cluster
    load = Load(apache, clients=6)

    def reload_each():
        for m in members:
            time.sleep(1)
            m.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reloaded" in m.log_text(), 20, f"{m.name}'s reload")
    load.run_for(2, during=reload_each)
    assert load.failures() == [] and load.counts_lost == [] and load.counts_skipped == []
    assert len(load.results) > 50
