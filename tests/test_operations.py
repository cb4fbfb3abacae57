"""Running it as a service: its user, pidfile, slow log, access log, config file, `check` and
`apache-conf`, each the way an operator meets it."""

import logging
import os
import pwd
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from apache_harness import Apache, Backend, free_port, running_as_root, user_exists, wait_for
from conftest import backend_command, build_test_site
from fcgi_client import FastCGIClient, cgi_params
from fcgi_backend import logs

needs_root_and_www_data = pytest.mark.skipif(not running_as_root() or not user_exists("www-data"),
                                             reason="needs root, and the user www-data")


def fcgi_backend(*args, timeout=30):
    return subprocess.run(backend_command(*args), capture_output=True, text=True, timeout=timeout)


def ids_of(pid: int) -> tuple[list[int], list[int]]:
    """(real, effective, saved, fs) uids and gids of a process."""
    status = open(f"/proc/{pid}/status").read()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    gids = re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()
    return list(map(int, uids)), list(map(int, gids))


def worker_pid(backend) -> int:
    with FastCGIClient(backend.socket_path) as client:
        reply = client.request(cgi_params("GET", "/pid"))
    assert reply.status == 200
    return int(reply.stdout.split(b"\r\n\r\n", 1)[1])


# ---- the user ---------------------------------------------------------------------------------

@needs_root_and_www_data
def test_workers_and_handlers_run_as_the_user_and_its_files_become_theirs(site, workdir):
    log_dir = workdir / "logs"
    log_dir.mkdir()
    pidfile = workdir / "run" / "backend.pid"
    (workdir / "run").mkdir()
    spool = workdir / "spool"
    spool.mkdir()
    backend = Backend(site, workdir / "run", ["--user", "www-data", "--pidfile", pidfile, "--prefork", "2",
                                              "--access-log", log_dir / "access.log", "--slowlog", log_dir / "slow.log", "--slowlog-timeout", "5",
                                              "--upload-dir", spool])
    backend.start()
    www = pwd.getpwnam("www-data")
    try:
        uids, gids = ids_of(worker_pid(backend))
        assert uids == [www.pw_uid] * 4 and gids == [www.pw_gid] * 4  # no way back to root
        supervisor_uids, _ = ids_of(backend.proc.pid)
        assert supervisor_uids[1] == www.pw_uid and supervisor_uids[2] == 0  # root kept only to clean up
        assert pidfile.read_text() == f"{backend.proc.pid}\n"
        for path in (site / "SQLiteDBs", spool, log_dir / "access.log", log_dir / "slow.log"):
            assert os.stat(path).st_uid == www.pw_uid, path
        assert os.stat(backend.socket_path).st_gid == www.pw_gid  # the group Apache runs in may connect
        assert "running as user www-data" in backend.log_text()
        # what a request stores is the user's: a session's database
        with FastCGIClient(backend.socket_path) as client:
            assert client.request(cgi_params("GET", "/count")).status == 200
        assert os.stat(site / "SQLiteDBs" / "sessions.sqlite3").st_uid == www.pw_uid
    finally:
        assert backend.stop() == 0
    assert not backend.socket_path.exists() and not pidfile.exists()  # removed with root's help


@needs_root_and_www_data
def test_root_without_a_user_is_refused_and_told_how():
    out = subprocess.run([sys.executable, "-m", "fcgi_backend", "run", "/nonexistent-is-not-reached"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2
    assert "started as root without --user" in out.stderr and "--allow-root" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--user", "no-such-user-here"], "user 'no-such-user-here' does not exist"),
    (["--group", "no-such-group-here", "--user", "root"], "group 'no-such-group-here' does not exist"),
    (["--pidfile", "/no/such/folder/x.pid"], "pidfile /no/such/folder/x.pid: its folder /no/such/folder does not exist"),
    (["--log-file", "/no/such/folder/x.log"], "log_file /no/such/folder/x.log: its folder /no/such/folder does not exist"),
    (["--slowlog-timeout", "5", "--request-timeout", "2"], "slowlog_timeout (5s) must be below request_timeout"),
    (["--slowlog-timeout", "1", "--slowlog", "/tmp"], "slowlog_file /tmp is a folder; name a file in it"),
    (["--access-log", "/tmp"], "access_log /tmp is a folder; name a file in it"),
    (["--slowlog", "/tmp/slow.log"], "slowlog_file without slowlog_timeout: nothing would be written"),
    (["--pidfile", "/proc/fcgi-backend.pid"], "pidfile /proc/fcgi-backend.pid cannot be written: No such file"),
    (["--access-log-format", "%h %Z"], "%Z is not a directive"),
])
def test_bad_service_settings_are_refused_at_start(site, args, message):
    out = fcgi_backend("run", site, *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len([line for line in out.stderr.splitlines() if " ERROR " in line or "error:" in line]) == 1
    assert "Traceback" not in out.stderr  # one line says it
    assert not (site / "fcgi_backend.sock").exists()


# ---- slow log ---------------------------------------------------------------------------------

def test_a_slow_request_gets_its_python_stack_in_the_slowlog_and_still_finishes(site, workdir):
    slowlog = workdir / "slow.log"
    backend = Backend(site, workdir / "run", ["--prefork", "1", "--slowlog-timeout", "0.3",
                                              "--slowlog", slowlog]).start()
    try:
        with FastCGIClient(backend.socket_path) as client:
            reply = client.request(cgi_params("GET", "/sleep?s=1"))
        assert reply.status == 200  # it ran on
        wait_for(lambda: "in sleep" in slowlog.read_text(), 5, "the slow log's stack")
        text = slowlog.read_text()
        assert re.search(r"slow request: worker \d+, GET /sleep\?s=1, running for 0\.\ds", text), text
        assert re.search(r'File ".*/handlers/testing\.py", line \d+ in sleep', text)  # file:line function
        assert 'fcgi_backend/app.py", line' in text  # all frames, down to the server's
        assert text.count("slow request:") == 1  # once per request
    finally:
        backend.stop()


def test_a_connection_whose_request_has_not_started_is_not_its_last_request_running_on(site, workdir):
    """A worker that accepted a connection and waits for its records is busy, but its last request
    is over: the slow log must not report that one as running all the while since."""
    slowlog = workdir / "slow.log"
    backend = Backend(site, workdir / "run", ["--prefork", "1", "--maxfork", "1", "--slowlog-timeout", "0.3",
                                              "--slowlog", slowlog]).start()
    try:
        with FastCGIClient(backend.socket_path) as client:
            assert client.request(cgi_params("GET", "/hello/earlier")).status == 200
        time.sleep(0.5)
        with FastCGIClient(backend.socket_path) as client:
            time.sleep(1.5)  # connected, nothing sent yet: the supervisor looks meanwhile
            assert client.request(cgi_params("GET", "/hello/later")).status == 200
        assert "slow request" not in (slowlog.read_text() if slowlog.exists() else "")
    finally:
        backend.stop()


# ---- access log -------------------------------------------------------------------------------

COMBINED = re.compile(r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                      r'"GET /echo\?who=ada&n=1 HTTP/1\.1" 200 \d+ "http://example\.test/from" "probe/1\.0" \d+$')


def test_the_access_log_writes_apache_combined_lines_to_its_file_and_reopens_on_usr1(site, workdir):
    access = workdir / "access.log"
    backend = Backend(site, workdir / "run", ["--access-log", access]).start()
    apache = Apache(site, workdir / "run").start()
    try:
        headers = {"User-Agent": "probe/1.0", "Referer": "http://example.test/from"}
        assert requests.get(apache.url + "/echo?who=ada&n=1", headers=headers, timeout=10).status_code == 200
        wait_for(lambda: access.exists() and access.read_text().strip(), 5, "an access line")
        line = access.read_text().strip().splitlines()[-1]
        assert COMBINED.match(line), line
        assert "who=ada" not in backend.log_text()  # its own file, not the server's log
        requests.get(apache.url + "/nothing-here", timeout=10)
        wait_for(lambda: '"GET /nothing-here HTTP/1.1" 404 ' in access.read_text(), 5, "the 404's line")
        # logrotate moves the file, then signals USR1
        access.rename(workdir / "access.log.1")
        backend.proc.send_signal(signal.SIGUSR1)
        wait_for(access.exists, 5, "the reopened access log")
        time.sleep(0.3)  # the workers reopen theirs as the signal reaches them
        requests.get(apache.url + "/echo?after=rotate", timeout=10)
        wait_for(lambda: "/echo?after=rotate" in access.read_text(), 5, "the line in the new file")
        assert "/echo?after=rotate" not in (workdir / "access.log.1").read_text()
    finally:
        apache.stop()
        backend.stop()


def test_no_access_log_by_default(site, workdir):
    backend = Backend(site, workdir / "run").start()
    try:
        with FastCGIClient(backend.socket_path) as client:
            assert client.request(cgi_params("GET", "/echo?quiet=1")).status == 200
        time.sleep(0.3)
        assert "quiet=1" not in backend.log_text()
    finally:
        backend.stop()


# ---- the config file --------------------------------------------------------------------------

def test_every_table_of_the_config_file_applies_and_flags_override_it(site, workdir):
    uploads = workdir / "spool"
    uploads.mkdir()
    config = workdir / "backend.toml"
    config.write_text(f"""
[server]
prefork = 1
status_path = "/fcgi-status"
request_timeout = 20
access_log = "-"
access_log_format = "toml-format %m %U %>s"

[listen]
socket = "{site / 'fcgi_backend.sock'}"
socket_mode = "0660"

[limits]
max_body = "2K"
upload_dir = "{uploads}"

[sessions]
cookie_name = "tomlsid"
""")
    backend = Backend(site, workdir / "run", ["--config", config]).start()
    apache = Apache(site, workdir / "run").start()
    try:
        assert oct(os.stat(site / "fcgi_backend.sock").st_mode & 0o777) == "0o660"
        assert requests.post(apache.url + "/echo", data={"a": "x" * 4000}, timeout=10).status_code == 413
        counted = requests.get(apache.url + "/count", timeout=10)
        assert "tomlsid" in counted.cookies
        backend.wait_for_log("toml-format GET /count 200")
        assert requests.get(apache.url + "/fcgi-status", timeout=10).json()["prefork"] == 1
    finally:
        apache.stop()
        backend.stop()
    # a flag beats the file
    backend = Backend(site, workdir / "run2", ["--config", config, "--max-body", "16K"]).start()
    apache = Apache(site, workdir / "run2").start()
    try:
        assert requests.post(apache.url + "/echo", data={"a": "x" * 4000}, timeout=10).status_code == 200
    finally:
        apache.stop()
        backend.stop()


@pytest.mark.parametrize("toml, message", [
    ("[limit]\nmax_body = 1", "unknown table [limit]"),
    ("max_body = 1", "'max_body' is outside any table"),
    ("[limits]\nmax_bodies = 1", "unknown setting 'max_bodies' in [limits]"),
    ("[sessions]\ncookie = 'x'", "unknown setting 'cookie' in [sessions]"),
    ("[listen]\nsocket_mode = 'rw'", "socket_mode in [listen]"),
    ("[tls]\ncert_file = 'x.pem'", "[tls] is for serve-http, not run"),
    ("[limits]\nmin_rate = 500", "min_rate in [limits] is for serve-http, not run"),
    ("[listen]\nforwarded_allow_ips = '127.0.0.1'", "forwarded_allow_ips in [listen] is for serve-http, not run"),
])
def test_unknown_or_misplaced_settings_are_refused_by_name(site, workdir, toml, message):
    config = workdir / "bad.toml"
    config.write_text(toml + "\n")
    out = fcgi_backend("run", site, "--config", config)
    assert out.returncode == 2 and message in out.stderr, out.stderr


# ---- fcgi-backend check ---------------------------------------------------------------------

def test_check_names_each_problem_with_line_and_column_and_creates_nothing(workdir):
    site = workdir / "broken"
    (site / "webroot" / "partials").mkdir(parents=True)
    (site / "handlers").mkdir()
    (site / "handlers" / "pages.py").write_text(
        "def init_module(registry):\n"
        "    registry.handler('known', lambda request: {})\n"
        "    registry.route('/report', lambda request: {}, template='reports/monthly.mustache')\n")
    webroot = site / "webroot"
    (webroot / "ok.mustache").write_text("{{% handler:known }}\n<p>{{#items}}{{name}}{{/items}}</p>\n{{> partials/nav}}\n")
    (webroot / "partials" / "nav.mustache").write_text("<nav>{{{html}}}</nav>\n")
    (webroot / "unclosed.mustache").write_text("<ul>\n  {{#items}}\n  <li>{{name}}</li>\n</ul>\n")
    (webroot / "mismatch.mustache").write_text("{{#a}}\n{{#b}}x{{/a}}\n")
    (webroot / "open-tag.mustache").write_text("line one\nline two {{name\n")
    (webroot / "pragma.mustache").write_text("{{% handler:nobody }}\n<p>hi</p>\n")
    (webroot / "partial.mustache").write_text("<body>\n\n   {{> footer}}\n</body>\n")
    out = subprocess.run([sys.executable, "-m", "fcgi_backend", "check", site], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1, out.stdout + out.stderr
    problems = [line[len("problem:  "):] for line in out.stdout.splitlines() if line.startswith("problem:")]
    assert sorted(problems) == sorted([
        "webroot/unclosed.mustache:2:3: section 'items' is never closed ({{/items}} missing)",
        "webroot/mismatch.mustache:2:8: {{/a}} does not close section 'b' (opened at 2:1)",
        "webroot/mismatch.mustache:1:1: section 'a' is never closed ({{/a}} missing)",
        "webroot/open-tag.mustache:2:10: tag '{{name\\n' is never closed (no '}}' follows)",
        "webroot/pragma.mustache:1:1: names handler 'nobody', which no handler module registered",
        "webroot/partial.mustache:3:4: partial 'footer' has no file (webroot/footer.mustache)",
        "route /report: template 'reports/monthly.mustache' has no file in the webroot",
    ]), out.stdout
    assert "7 problems found" in out.stdout
    assert sorted(p.name for p in site.iterdir()) == ["handlers", "webroot"]  # no SQLiteDBs, socket or uploads


def test_check_reports_a_handler_module_that_fails(workdir):
    site = build_test_site(workdir)
    (site / "handlers" / "zz_broken.py").write_text("def init_module(registry):\n    raise KeyError('db_url')\n")
    out = subprocess.run([sys.executable, "-m", "fcgi_backend", "check", site], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1
    assert re.search(r"problem:  handler module 'zz_broken' failed in init_module at zz_broken.py line 2: KeyError: 'db_url'", out.stdout)


# ---- fcgi-backend apache-conf -----------------------------------------------------------------

def test_two_sites_from_apache_conf_share_one_apache_each_serving_its_own(workdir):
    sites, backends, conf = [], [], []
    for name in ("alpha", "beta"):
        site = build_test_site(workdir / name)
        (site / "webroot" / "which.mustache").write_text(f"this is {name}\n")
        port = free_port()
        out = subprocess.run([sys.executable, "-m", "fcgi_backend", "apache-conf", site, "--port", str(port),
                              "--listen"], capture_output=True, text=True, timeout=30, check=True)
        conf.append(out.stdout)
        sites.append((site, port))
        backends.append(Backend(site, workdir / name / "run").start())
    vhosts = workdir / "vhosts.conf"
    vhosts.write_text("\n".join(conf))
    # the harness's own vhost (on its port) serves the first site; the two written ones their own
    apache = Apache(sites[0][0], workdir / "apache", vhost_conf=vhosts).start()
    try:
        for (site, port), name in zip(sites, ("alpha", "beta")):
            r = requests.get(f"http://127.0.0.1:{port}/which", timeout=10)
            assert r.status_code == 200 and r.text == f"this is {name}\n"
            assert requests.get(f"http://127.0.0.1:{port}/style.css", timeout=10).status_code == 200
    finally:
        apache.stop()
        for backend in backends:
            backend.stop()


def test_apache_conf_refuses_a_path_apache_cannot_hold(workdir):
    spaced = workdir / "my site"
    (spaced / "webroot").mkdir(parents=True)
    out = subprocess.run([sys.executable, "-m", "fcgi_backend", "apache-conf", spaced], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "has a space" in out.stderr


def test_apache_conf_warns_of_a_site_folder_that_is_not_there_yet(workdir):
    missing = workdir / "not-yet"
    out = subprocess.run([sys.executable, "-m", "fcgi_backend", "apache-conf", missing, "--port", "8080"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and f'DocumentRoot "{missing}/webroot"' in out.stdout
    assert f"{missing} has no webroot/ (yet)" in out.stderr
    (missing / "webroot").mkdir(parents=True)
    out = subprocess.run([sys.executable, "-m", "fcgi_backend", "apache-conf", missing, "--port", "8080"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "webroot/ (yet)" not in out.stderr


# ---- the site's error pages ---------------------------------------------------------------------

def test_the_sites_error_pages_and_json_errors_for_json_routes(site, workdir):
    errors = site / "webroot" / "errors"
    errors.mkdir()
    (errors / "404.mustache").write_text("<h1>Lost? ({{status}} {{title}})</h1><p>{{detail}}</p>\n")
    (errors / "500.mustache").write_text("<h1>Our fault: {{status}}</h1>{{#debug}}<pre>{{debug}}</pre>{{/debug}}\n")
    (errors / "403.mustache").write_text("{{#a}}x{{/b}}\n")  # a broken one: the plain page instead
    backend = Backend(site, workdir / "run").start()
    apache = Apache(site, workdir / "run").start()
    try:
        r = requests.get(apache.url + "/no/such/<page>", timeout=10)
        assert r.status_code == 404 and r.text.startswith("<h1>Lost? (404 Not Found)</h1>")
        assert "Nothing is at /no/such/&lt;page&gt;." in r.text  # values are escaped as in any view
        r = requests.get(apache.url + "/boom", timeout=10)
        assert r.status_code == 500 and r.text == "<h1>Our fault: 500</h1>\n"  # no traceback without --debug
        r = requests.get(apache.url + "/errors/404", timeout=10)
        assert r.status_code == 404  # an error page is not a page of its own
        # a JSON route (no template) answers its errors in JSON
        r = requests.get(apache.url + "/forbidden", timeout=10)
        assert r.status_code == 403 and r.headers["Content-Type"] == "application/json"
        assert r.json() == {"status": 403, "error": "Forbidden", "detail": "Not for you."}
        r = requests.get(apache.url + "/post-only", timeout=10)
        assert r.status_code == 405 and r.headers["Allow"] == "POST" and r.json()["error"] == "Method Not Allowed"
        # a client that asks only for JSON gets JSON for a missing page too
        r = requests.get(apache.url + "/missing", headers={"Accept": "application/json"}, timeout=10)
        assert r.status_code == 404 and r.json()["status"] == 404
        # a form posted without its CSRF token: 403 as HTML; the site's 403 page is broken, so the plain one
        r = requests.post(apache.url + "/guestbook", data={"name": "x", "message": "y"}, timeout=10)
        assert r.status_code == 403 and "<h1>403 Forbidden</h1>" in r.text
        backend.wait_for_log("error page errors/403.mustache failed; the plain page is sent")
    finally:
        apache.stop()
        backend.stop()


# ---- a supervisor that is killed ----------------------------------------------------------------

@pytest.mark.parametrize("as_user", [False, True], ids=["own-user", "--user www-data"])
def test_workers_end_when_their_supervisor_is_killed(site, workdir, as_user):
    """SIGKILL gives the supervisor no time to stop its workers: they used to go on serving the
    socket unsupervised, forever. (Changing user clears the kernel's parent-death signal: the
    --user case once kept them alive.)"""
    if as_user and not (running_as_root() and user_exists("www-data")):
        pytest.skip("needs root, and the user www-data")
    backend = Backend(site, workdir / "run", ["--prefork", "3", *(["--user", "www-data"] if as_user else [])])
    backend.start()

    def children():
        with open(f"/proc/{backend.proc.pid}/task/{backend.proc.pid}/children") as f:
            return [int(p) for p in f.read().split()]
    wait_for(lambda: len(children()) == 3, 10, "three workers")
    workers = children()
    backend.proc.kill()
    backend.proc.wait()

    def all_gone():
        return not any(os.path.exists(f"/proc/{pid}") and "State:\tZ" not in open(f"/proc/{pid}/status").read()
                       for pid in workers)
    try:
        wait_for(all_gone, 10, "the workers' exit")
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        backend.stop()


def test_a_repeated_warning_is_logged_at_most_once_a_minute_with_the_count_between(caplog):
    now = [100.0]
    warning = logs.Throttled(logging.getLogger("repeated_warning_test"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="repeated_warning_test"):
        for step in range(5):  # at 100, 110, ... 140 s
            warning.log("all %d workers are busy", 4)
            now[0] += 10
        now[0] = 165.0
        warning.log("all %d workers are busy", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "all 4 workers are busy", "all 4 workers are busy (also 4 times in the 65 s before)"]
