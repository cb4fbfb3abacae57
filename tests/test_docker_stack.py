"""The docker-compose stack built and run for real: `make test-docker` (slow: it builds images).

A Docker engine is used if one runs, else started here (tools/docker_engine.py), with base images
made locally by mmdebstrap, since no image registry is reachable. The stack serves a copy of the
example site through both Apache images; pages, a static file and an upload go through each, a HUP
reloads the backend, and `down` stops every container without waiting for a kill.
"""

import hashlib
import re
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from apache_harness import free_port, make_reachable_dir, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from docker_engine import Engine, EngineUnavailable, base_images  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.skipif(os.environ.get("FCGI_TEST_DOCKER") != "1",
                                 reason="builds images for minutes: run by `make test-docker`"),
              pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def engine():
    """One engine (and the base images) for both stacks."""
    try:
        started = Engine().start()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine here: {exc}")
    try:
        yield started, base_images(started)
    finally:
        started.stop()


class Compose:
    """A docker-compose project on a copy of the example site, in its own folder; ``close()``
    takes it down with its volumes and built images."""

    def __init__(self, engine, build_args: dict, compose_file: str, name: str, ports: list[str],
                 options: tuple[str, ...] = ()) -> None:
        self.root = make_reachable_dir(f"fcgi-docker-{name}-")
        self.site = self.root / "site"
        shutil.copytree(REPO / "examples" / "site", self.site,
                        ignore=shutil.ignore_patterns("SQLiteDBs", "uploads", "*.sock"))
        self.project = f"fcgi{name}{os.getpid()}"
        self.ports = {port: str(free_port()) for port in ports}
        self.command = ["docker-compose", "-f", str(REPO / "docker" / compose_file), *options]
        self.env = {**engine.env, **build_args, **self.ports, "SITE_DIR": str(self.site),
                    "COMPOSE_PROJECT_NAME": self.project}

    def __call__(self, *args, timeout=120) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def up(self, *args) -> None:
        up = self("up", "-d", "--build", *args, timeout=1800)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def close(self) -> None:
        print(self("logs", "--no-color", timeout=60).stdout[-5000:])
        down = self("down", "-v", "--rmi", "local", timeout=300)
        shutil.rmtree(self.root, ignore_errors=True)
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def stack(engine):
    compose = Compose(*engine, "docker-compose.yml", "stack", ["HTTP_PORT", "CONNECTOR_HTTP_PORT"],
                      options=("--profile", "connector"))
    try:
        compose.up()
        urls = {"mod_proxy_fcgi": compose.url("HTTP_PORT"), "connector": compose.url("CONNECTOR_HTTP_PORT")}
        for url in urls.values():
            wait_for(lambda: _answers(url), 60, f"the stack at {url}")
        yield urls, compose.site, compose
    finally:
        compose.close()


def _answers(url: str, path: str = "/fcgi-ping") -> bool:
    try:
        return requests.get(url + path, timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize("front", ["mod_proxy_fcgi", "connector"])
def test_pages_static_files_and_an_upload_through_each_apache_image(stack, front):
    urls, site, _ = stack
    url = urls[front]
    page = requests.get(url + "/?name=Container", timeout=10)
    assert page.status_code == 200 and "Welcome, Container" in page.text
    assert requests.get(url + "/about", timeout=10).status_code == 200  # the vhost's extensionless page
    css = requests.get(url + "/style.css", timeout=10)
    assert css.status_code == 200 and css.content == (site / "webroot" / "style.css").read_bytes()
    content = os.urandom(3 * 1024 * 1024)
    sent = requests.post(url + "/upload-demo", files={"file": (f"through-{front}.bin", content)},
                         data={"comment": front}, timeout=60)
    assert sent.status_code == 200 and f"Stored through-{front}.bin ({len(content)} bytes): {front}" in sent.text
    stored = site / "SQLiteDBs" / "uploads" / f"through-{front}.bin"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(content).digest()


def test_a_hup_reloads_the_backend_and_down_stops_at_once(stack):
    urls, _, compose = stack
    assert compose("kill", "-s", "HUP", "backend").returncode == 0
    wait_for(lambda: "reloaded" in compose("logs", "--no-color", "backend").stdout, 30, "the reload's log line")
    assert requests.get(urls["mod_proxy_fcgi"] + "/?name=Reloaded", timeout=10).status_code == 200
    started = time.monotonic()
    stopped = compose("stop", timeout=120)
    took = time.monotonic() - started
    assert stopped.returncode == 0 and took < 8, f"stopping took {took:.1f}s: a container waited for its kill"


# ---- docker-compose.scale.yml: three backends behind the balancer, sessions in PostgreSQL -------------

@pytest.fixture(scope="module")
def scaled(engine):
    compose = Compose(*engine, "docker-compose.scale.yml", "scale", ["HTTP_PORT"])
    try:
        compose.up("--scale", "backend=3")
        url = compose.url("HTTP_PORT")
        # pages that use a session answer 503 until PostgreSQL, making its cluster, takes connections
        wait_for(lambda: _answers(url, "/account"), 120, "the balancer, with the sessions' database")
        yield url, compose, compose.project
    finally:
        compose.close()


def _visits(page: str) -> int:
    return int(re.search(r"Visits of this page in your session: (\d+)", page).group(1))


def test_three_backends_share_the_load_and_a_visitors_session(scaled):
    url, compose, _ = scaled
    browser = requests.Session()
    counts = []
    for _ in range(24):
        r = browser.get(url + "/account", timeout=15)
        assert r.status_code == 200
        counts.append(_visits(r.text))
    assert counts == list(range(1, 25))  # one session, counted on by whichever member answered
    # bybusyness spreads what is in flight at once: bursts reach every container, once each has
    # passed its health checks (a container that started last may still be waiting for them)
    served_by: set[str] = set()
    deadline = time.monotonic() + 30
    while len(served_by) < 3 and time.monotonic() < deadline:
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda i: requests.get(f"{url}/?burst={i}", timeout=15).status_code,
                                range(64))) == {200}
        logs = compose("logs", "--no-color", "backend").stdout
        served_by = {line.split("|")[0].strip() for line in logs.splitlines() if '"GET /?burst=' in line}
    assert len(served_by) == 3, served_by


def test_a_backend_container_lost_leaves_the_others_serving_the_same_sessions(scaled):
    url, compose, project = scaled
    browser = requests.Session()
    first = _visits(browser.get(url + "/account", timeout=15).text)
    killed = subprocess.run(["docker", "kill", f"{project}_backend_1"], env=compose.env, capture_output=True,
                            text=True)  # one of the three, with whatever it had in flight
    assert killed.returncode == 0, killed.stderr
    answers = [browser.get(url + "/account", timeout=15) for _ in range(12)]
    assert [r.status_code for r in answers] == [200] * 12
    assert [_visits(r.text) for r in answers] == list(range(first + 1, first + 13))
