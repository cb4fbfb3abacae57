"""Sessions through Apache, in SQLite (the default) and in a real PostgreSQL server the test starts:
the cookie, login and logout, flash messages, CSRF, expiry, no lost update under concurrency, and
what a broken store or a full disk does."""

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests

from apache_harness import Apache, Backend, HTTPBackend, make_reachable_dir
from conftest import Stack, build_test_site, post_form
from pki import make_pki
from postgres_harness import Postgres, available as postgres_available

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not postgres_available(), reason="PostgreSQL (Debian's postgresql package) is not installed"))]


@pytest.fixture(scope="module")
def postgres():
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed")
    folder = make_reachable_dir("fcgi-pg-")
    server = Postgres(folder).start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def start_stack(request, store: str, *args) -> Stack:
    root = make_reachable_dir("fcgi-sessions-")
    extra = list(args)
    if store == "postgresql":
        pg = request.getfixturevalue("postgres")
        extra += ["--sessions", pg.url]
        with __import__("psycopg").connect(pg.url, autocommit=True) as db:
            db.execute("DROP TABLE IF EXISTS sessions")
    stack = Stack(root, extra)
    request.addfinalizer(lambda: (stack.stop(), shutil.rmtree(root, ignore_errors=True)))
    return stack


@pytest.fixture(params=STORES)
def sessions_stack(request):
    return start_stack(request, request.param)


def cookie_header(response) -> str:
    return response.headers.get("Set-Cookie", "")


def visits(page: str) -> int:
    return int(re.search(r"Visits of this page in your session: (\d+)", page).group(1))


# ---- the cookie and the API ----------------------------------------------------------------------

def test_the_cookie_a_session_gets(sessions_stack):
    r = requests.get(sessions_stack.url + "/account", timeout=10)
    cookie = cookie_header(r)
    sid = re.match(r"fcgi_session=([A-Za-z0-9_-]+);", cookie).group(1)
    assert len(sid) == 43  # 256 random bits, base64url
    for attribute in ("Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=604800"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain HTTP
    assert sid not in sessions_stack.backend.log_text()


@pytest.mark.parametrize("front", ["apache mod_ssl", "http flavour tls"])
def test_the_cookie_is_secure_over_https(front):
    root = make_reachable_dir("fcgi-sessions-tls-")
    pki = make_pki(root / "pki")
    site = build_test_site(root)
    servers = []
    try:
        if front == "apache mod_ssl":  # Apache tells the backend with the HTTPS param
            servers.append(Backend(site, root / "run").start())
            servers.append(Apache(site, root / "run", tls=(pki.cert("server"), pki.key("server"))).start())
        else:
            servers.append(HTTPBackend(site, root / "run", ["--tls-cert", str(pki.cert("server")),
                                                            "--tls-key", str(pki.key("server"))],
                                       scheme="https").start())
        r = requests.get(servers[-1].url + "/account", verify=str(pki.ca), timeout=10)
        assert r.status_code == 200 and re.search(r"; Secure(;|$)", cookie_header(r))
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_counter_per_visitor(sessions_stack):
    ann, bob = requests.Session(), requests.Session()
    for expected in (1, 2, 3):
        assert visits(ann.get(sessions_stack.url + "/account", timeout=10).text) == expected
    assert visits(bob.get(sessions_stack.url + "/account", timeout=10).text) == 1
    assert visits(ann.get(sessions_stack.url + "/account", timeout=10).text) == 4


def test_login_regenerates_the_id_flashes_once_and_logout_removes_the_cookie(sessions_stack):
    url = sessions_stack.url + "/account"
    browser = requests.Session()
    browser.get(url, timeout=10)
    before = browser.cookies["fcgi_session"]
    page = post_form(browser, url, {"action": "login", "name": "demo", "password": "wrong"}).text
    assert "Wrong name or password." in page and browser.cookies["fcgi_session"] == before
    page = post_form(browser, url, {"action": "login", "name": "demo", "password": "demo"}).text
    assert "Welcome, demo." in page and "Logged in as <b>demo</b>" in page
    assert browser.cookies["fcgi_session"] != before  # a new id at login
    again = browser.get(url, timeout=10).text
    assert "Welcome, demo." not in again and "Logged in as <b>demo</b>" in again  # flashed once
    response = post_form(browser, url, {"action": "logout"}, allow_redirects=False)
    assert response.status_code == 303 and "Max-Age=0" not in cookie_header(response)  # the flash lives on
    page = browser.get(url, timeout=10).text
    assert "You are logged out." in page and "Logged in as" not in page


def test_a_stolen_pre_login_id_is_worth_nothing_after_login(sessions_stack):
    url = sessions_stack.url + "/account"
    victim = requests.Session()
    victim.get(url, timeout=10)
    stolen = victim.cookies["fcgi_session"]
    post_form(victim, url, {"action": "login", "name": "demo", "password": "demo"})
    attacker = requests.Session()
    attacker.cookies.set("fcgi_session", stolen)
    assert "Logged in as" not in attacker.get(url, timeout=10).text


@pytest.mark.parametrize("value", ["x" * 43, "not-an-id", "y" * 5000, "a;b", ""])
def test_an_unknown_or_malformed_id_gets_a_fresh_session(sessions_stack, value):
    r = requests.get(sessions_stack.url + "/account", headers={"Cookie": f"fcgi_session={value}"}, timeout=10)
    assert r.status_code == 200 and visits(r.text) == 1
    new = re.search(r"fcgi_session=([^;]*);", cookie_header(r)).group(1)
    assert new != value and len(new) == 43


def test_csrf_tokens_guard_forms(sessions_stack):
    url = sessions_stack.url + "/account"
    browser = requests.Session()
    browser.get(url, timeout=10)
    assert browser.post(url, data={"action": "logout"}, timeout=10).status_code == 403
    other = requests.Session()
    foreign = re.search(r'name="csrf_token" value="([^"]+)"', other.get(url, timeout=10).text).group(1)
    assert browser.post(url, data={"action": "logout", "csrf_token": foreign}, timeout=10).status_code == 403
    assert post_form(browser, url, {"action": "logout"}, allow_redirects=False).status_code == 303
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(url, timeout=10).text).group(1)
    r = browser.post(url, data={"action": "logout"}, headers={"X-CSRF-Token": token}, timeout=10,
                     allow_redirects=False)
    assert r.status_code == 303  # the header does as well as the field


def test_values_must_be_json(sessions_stack):
    r = requests.get(sessions_stack.url + "/session-bad-value", timeout=10)
    assert r.status_code == 500
    sessions_stack.backend.wait_for_log("session values must be JSON-serialisable: 'when' is a datetime")


# ---- no lost update ------------------------------------------------------------------------------------

@pytest.mark.parametrize("store", STORES)
def test_8_clients_500_requests_each_on_one_session_count_4000(request, store):
    """Through Apache, each request reads the counter, adds one and saves it: a session is held
    by one request at a time, so every increment counts."""
    stack = start_stack(request, store, "--prefork", "4", "--maxfork", "8")
    url = stack.url + "/count"
    first = requests.get(url, timeout=10)
    cookie = first.cookies["fcgi_session"]
    errors = []

    def client():
        with requests.Session() as s:
            s.cookies.set("fcgi_session", cookie)
            for _ in range(500):
                r = s.get(url, timeout=30)
                if r.status_code != 200:
                    errors.append(r.status_code)
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert requests.get(url, cookies={"fcgi_session": cookie}, timeout=10).json()["n"] == 1 + 4000 + 1


@pytest.mark.parametrize("store", STORES)
def test_a_session_held_past_lock_timeout_answers_503_and_the_holder_finishes(request, store, tmp_path):
    config = tmp_path / "sessions.toml"
    config.write_text("[sessions]\nlock_timeout = 0.5\n")
    stack = start_stack(request, store, "--config", str(config), "--prefork", "2", "--maxfork", "2")
    cookie = requests.get(stack.url + "/count", timeout=10).cookies["fcgi_session"]
    holder = {}
    thread = threading.Thread(target=lambda: holder.update(r=requests.get(
        stack.url + "/session-hold?s=2", cookies={"fcgi_session": cookie}, timeout=30)))
    thread.start()
    time.sleep(0.5)  # the holder has the session
    started = time.monotonic()
    waiting = requests.get(stack.url + "/count", cookies={"fcgi_session": cookie}, timeout=30)
    assert waiting.status_code == 503 and 0.4 < time.monotonic() - started < 1.8
    stack.backend.wait_for_log("stayed locked")
    thread.join()
    assert holder["r"].status_code == 200
    assert requests.get(stack.url + "/count", cookies={"fcgi_session": cookie}, timeout=10).json()["n"] == 2


# ---- expiry ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("store", STORES)
def test_idle_and_absolute_lifetimes(request, store):
    stack = start_stack(request, store, "--session-idle", "1", "--session-lifetime", "3")
    url = stack.url + "/account"
    browser = requests.Session()
    for expected in (1, 2):
        assert visits(browser.get(url, timeout=10).text) == expected
    time.sleep(1.3)  # unused longer than the idle lifetime
    assert visits(browser.get(url, timeout=10).text) == 1
    started = time.monotonic()
    seen = []
    while time.monotonic() - started < 4:  # used every half second: the absolute lifetime ends it
        seen.append(visits(browser.get(url, timeout=10).text))
        time.sleep(0.5)
    assert max(seen) >= 5 and 1 in seen[2:]


def test_the_sessions_command_counts_and_purges(request):
    stack = start_stack(request, "sqlite", "--session-idle", "1")
    for _ in range(3):
        requests.get(stack.url + "/account", timeout=10)
    time.sleep(1.2)
    requests.get(stack.url + "/account", timeout=10)

    def command(*args):
        return subprocess.run([sys.executable, "-m", "fcgi_backend", "sessions", str(stack.site), "--session-idle", "1",
                               *args], capture_output=True, text=True, timeout=30)
    out = command()
    assert out.returncode == 0 and "live:    1" in out.stdout and "expired: 3" in out.stdout
    out = command("--purge")
    assert "purged:  3" in out.stdout
    assert "expired: 0" in command().stdout


# ---- a broken store ----------------------------------------------------------------------------------------

def test_a_corrupt_database_file_is_a_503_naming_it_and_pages_go_on(request):
    stack = start_stack(request, "sqlite")
    database = stack.site / "SQLiteDBs" / "sessions.sqlite3"
    requests.get(stack.url + "/account", timeout=10)
    stack.backend.proc.send_signal(__import__("signal").SIGHUP)  # new workers: new connections to the file
    stack.backend.wait_for_log("reloaded: generation 2")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{database}{suffix}"):
            os.unlink(f"{database}{suffix}")
    database.write_bytes(b"this is not a database " * 100)
    r = requests.get(stack.url + "/account", timeout=20)
    assert r.status_code == 503 and "sessions.sqlite3" not in r.text
    stack.backend.wait_for_log(f"SQLite database {database}")
    assert requests.get(stack.url + "/hello/still", timeout=10).status_code == 200  # no session: fine


def test_a_locked_database_is_a_503(request):
    stack = start_stack(request, "sqlite")
    database = stack.site / "SQLiteDBs" / "sessions.sqlite3"
    requests.get(stack.url + "/account", timeout=10)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock (an sqlite3 shell, a backup)
    try:
        r = requests.get(stack.url + "/account", timeout=30)
        assert r.status_code == 503
        stack.backend.wait_for_log("database is locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert requests.get(stack.url + "/account", timeout=10).status_code == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_while_saving_is_a_500_and_the_stored_session_stays(request):
    stack = start_stack(request, "sqlite")
    folder = stack.site / "SQLiteDBs"
    for name in os.listdir(folder):  # the databases, and the example's folder of stored uploads
        shutil.rmtree(folder / name) if (folder / name).is_dir() else os.unlink(folder / name)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(folder)]))
    browser = requests.Session()
    assert requests.get(stack.url + "/account", timeout=10).status_code == 200  # the database is made
    browser.get(stack.url + "/account", timeout=10)
    before = visits(browser.get(stack.url + "/account", timeout=10).text)
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to write at close
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    r = browser.get(stack.url + "/session-big-value", timeout=10)
    assert r.status_code == 500
    stack.backend.wait_for_log("database or disk is full")
    filler.unlink()
    assert visits(browser.get(stack.url + "/account", timeout=10).text) == before + 1  # as it was, plus this visit


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not installed")
def test_a_postgresql_server_down_at_start_then_gone_then_back(request):
    """Down at start: the log says so and the server serves; sessions answer 503 while it is down
    and work again, with the same workers, once it is back."""
    folder = make_reachable_dir("fcgi-pg-down-")
    server = Postgres(folder)
    request.addfinalizer(lambda: (server.stop(), shutil.rmtree(folder, ignore_errors=True)))
    stack = start_stack(request, "sqlite", "--sessions", server.url, "--prefork", "2", "--maxfork", "2")
    stack.backend.wait_for_log("requests that use their session will answer 503 until it can be used")
    assert requests.get(stack.url + "/account", timeout=20).status_code == 503
    assert requests.get(stack.url + "/hello/anyway", timeout=10).status_code == 200
    workers = set(requests.get(stack.url + "/pid", timeout=10).text for _ in range(6))
    server.start()
    browser = requests.Session()
    assert [visits(browser.get(stack.url + "/account", timeout=20).text) for _ in range(2)] == [1, 2]
    server.stop()
    r = browser.get(stack.url + "/account", timeout=20)
    assert r.status_code == 503, stack.backend.log_text()[-3000:]
    server.start()
    assert visits(browser.get(stack.url + "/account", timeout=20).text) == 3  # the same session, kept
    assert set(requests.get(stack.url + "/pid", timeout=10).text for _ in range(6)) <= workers | {""}
