"""Fixtures: temporary sites, a real backend process and a real Apache httpd on loopback."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from apache_harness import Apache, Backend, HTTPBackend, make_reachable_dir, running_as_root  # noqa: E402

EXAMPLE_SITE = REPO / "examples" / "site"
SITE_EXTRA = Path(__file__).resolve().parent / "site_extra"


def build_test_site(root: Path) -> Path:
    """The example site plus the test-only handlers and templates of tests/site_extra."""
    site = root / "site"
    shutil.copytree(EXAMPLE_SITE, site, ignore=shutil.ignore_patterns("SQLiteDBs", "*.sock"))
    shutil.copytree(SITE_EXTRA, site, dirs_exist_ok=True)
    return site


@pytest.fixture
def workdir():
    """A fresh folder that Apache's children can enter (unlike pytest's tmp_path when run as root)."""
    path = make_reachable_dir("fcgi-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def site(workdir) -> Path:
    return build_test_site(workdir)


@pytest.fixture
def backend(site, workdir):
    """A running ``fcgi-backend run`` on the test site."""
    proc = Backend(site, workdir / "run", ["--access-log"]).start()
    yield proc
    proc.stop()


# the access log in the backend's log, naming what answered (%R): static files must never reach the app
ACCESS_LOG = ["--access-log", "--access-log-format", '%R "%r" %>s %b']


class Stack:
    """A backend and an Apache in front of it, serving one test site."""

    front = "apache"

    def __init__(self, root: Path, backend_args: list[str] | None = None) -> None:
        self.root = root
        self.site = build_test_site(root)
        self.backend = Backend(self.site, root / "run", [*ACCESS_LOG, *(backend_args or [])]).start()
        try:
            self.apache = Apache(self.site, root / "run").start()
        except BaseException:
            self.backend.stop()  # leave no process behind when Apache cannot start
            raise

    @property
    def url(self) -> str:
        return self.apache.url

    @property
    def port(self) -> int:
        return self.apache.port

    def stop(self) -> None:
        self.apache.stop()
        self.backend.stop()


class HTTPStack:
    """The HTTP flavour serving one test site on its own: no web server in front."""

    front = "http"

    def __init__(self, root: Path, backend_args: list[str] | None = None) -> None:
        self.root = root
        self.site = build_test_site(root)
        self.backend = HTTPBackend(self.site, root / "run", [*ACCESS_LOG, *(backend_args or [])]).start()

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def port(self) -> int:
        return self.backend.port

    def stop(self) -> None:
        self.backend.stop()


def stack_fixture(prefix: str, backend_args: list[str] | None = None, *, stack_class: type = Stack,
                  upload_dirs: bool = False):
    """A Stack in a fresh folder, removed afterwards whatever happened. ``upload_dirs``: the folder
    also holds uploads/ (the backend's --upload-dir) and kept/ (where handlers move files)."""
    root = make_reachable_dir(prefix)
    try:
        if upload_dirs:
            (root / "uploads").mkdir()
            (root / "kept").mkdir()
            backend_args = ["--upload-dir", str(root / "uploads"), *(backend_args or [])]
        s = stack_class(root, backend_args)
        try:
            yield s
        finally:
            s.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack():
    """One Apache + backend for a whole test module (pages only read, or write what they own)."""
    yield from stack_fixture("fcgi-stack-")


@pytest.fixture(scope="module")
def debug_stack():
    yield from stack_fixture("fcgi-debug-", ["--debug"])


FRONTS = {"apache": Stack, "http": HTTPStack}


@pytest.fixture(scope="module", params=list(FRONTS))
def site_stack(request):
    """The test site served two ways, for the checks both must pass: the FastCGI flavour behind
    Apache, and the HTTP flavour on its own."""
    yield from stack_fixture(f"fcgi-{request.param}-", stack_class=FRONTS[request.param])


@pytest.fixture(scope="module", params=list(FRONTS))
def debug_site_stack(request):
    yield from stack_fixture(f"fcgi-{request.param}-debug-", ["--debug"], stack_class=FRONTS[request.param])


def csrf_token(browser, url: str) -> str:
    """The CSRF token a page's form carries, as a browser (a requests.Session) gets it."""
    page = browser.get(url, timeout=10).text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no csrf_token field in {url}"
    return match.group(1)


def post_form(browser, url: str, data: dict, **kwargs):
    """Post a page's form the way a browser does: with the token the page gave it."""
    return browser.post(url, data={**data, "csrf_token": csrf_token(browser, url)}, timeout=10, **kwargs)


def backend_command(*args) -> list[str]:
    """``python -m fcgi_backend ARGS``; a serving command started as root gets --allow-root unless
    it names a --user (the tests of running as root, or as a user, give their own)."""
    argv = [sys.executable, "-m", "fcgi_backend", *map(str, args)]
    if running_as_root() and args and args[0] in ("run", "serve-http") and "--user" not in argv:
        argv.append("--allow-root")
    return argv
