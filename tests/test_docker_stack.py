"""The docker-compose stack built and run for real: `make test-docker` (slow: it builds images).

A Docker engine is used if one runs, else started here (tools/docker_engine.py), with base images
made locally by mmdebstrap, since no image registry is reachable. The stack serves a copy of the
example site through both Apache images; pages, a static file and an upload go through each, a HUP
reloads the backend, and `down` stops every container without waiting for a kill.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from apache_harness import free_port, make_reachable_dir, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from docker_engine import Engine, EngineUnavailable, base_images  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
COMPOSE = ["docker-compose", "-f", str(REPO / "docker" / "docker-compose.yml"), "--profile", "connector"]

pytestmark = [pytest.mark.skipif(os.environ.get("FCGI_TEST_DOCKER") != "1",
                                 reason="builds images for minutes: run by `make test-docker`"),
              pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def stack():
    try:
        engine = Engine().start()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine here: {exc}")
    root = make_reachable_dir("fcgi-docker-")
    site = root / "site"
    shutil.copytree(REPO / "examples" / "site", site, ignore=shutil.ignore_patterns("SQLiteDBs", "uploads", "*.sock"))
    ports = {"HTTP_PORT": str(free_port()), "CONNECTOR_HTTP_PORT": str(free_port())}
    env = {**engine.env, **base_images(engine), **ports, "SITE_DIR": str(site),
           "COMPOSE_PROJECT_NAME": f"fcgitest{os.getpid()}"}

    def compose(*args, timeout=120):
        return subprocess.run([*COMPOSE, *args], env=env, capture_output=True, text=True, timeout=timeout)

    try:
        up = compose("up", "-d", "--build", timeout=1800)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        urls = {"mod_proxy_fcgi": f"http://127.0.0.1:{ports['HTTP_PORT']}",
                "connector": f"http://127.0.0.1:{ports['CONNECTOR_HTTP_PORT']}"}
        for url in urls.values():
            wait_for(lambda: _answers(url), 60, f"the stack at {url}")
        yield urls, site, compose
    finally:
        logs = compose("logs", "--no-color", timeout=60).stdout
        down = compose("down", "-v", "--rmi", "local", timeout=300)
        print(logs[-5000:])
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert down.returncode == 0, down.stderr


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/fcgi-ping", timeout=5).status_code == 200
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
